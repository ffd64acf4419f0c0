// Open a page with the live RNN-SPN (rstn/assets/live.js) in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core), feed its models fixed inputs, use the explorer as a reader would (select,
// keys, mouse drag, buttons), and write what happened to a JSON report.
//
//   node live.mjs URL OUT_DIR NAME [INPUTS]
//
// INPUTS: a file of n float32 images (n, 100, 100), little-endian, fed to every live model on the page.
// The report holds facts, not verdicts: tests/browser/test_live_page.py compares them with PyTorch.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { withOfflinePage } from './offline-page.mjs';

const [url, outDir, name, inputsPath] = process.argv.slice(2);
if (!url || !outDir || !name) throw new Error('usage: node live.mjs URL OUT_DIR NAME [INPUTS]');
const CHUNK = 25;  // images per page.evaluate call
const REPEATS = 15;  // timed forward passes of one input, after the inputs (the JIT is warm by then)

const report = { url, models: [] };
await withOfflinePage({ name, outDir, viewport: { width: 1100, height: 1000 }, report }, async (page) => {
  const loadStart = performance.now();
  await page.goto(url, { waitUntil: 'load' });
  report.load_seconds = (performance.now() - loadStart) / 1000;
  await page.waitForFunction(() => (window.rstnLive && window.rstnLive.instances.length > 0) ||
    document.querySelector('#live-model [data-role=missing]'), null, { timeout: 60000 });
  report.containers = await page.locator('.rstn-live-container').count();
  report.missing = await page.locator('[data-role=missing]').allTextContents();
  const count = await page.evaluate(() => (window.rstnLive ? window.rstnLive.instances.length : 0));
  const inputs = inputsPath ? readFileSync(inputsPath) : null;
  const imageBytes = 4 * 100 * 100;

  for (let m = 0; m < count; m++) {
    const model = await page.evaluate((i) => {
      const inst = window.rstnLive.instances[i];
      return { precision: inst.precision, d: inst.d, glimpse: inst.glimpse, container: inst.root.parentElement.id };
    }, m);
    if (inputs) {
      model.outputs = [];
      for (let a = 0; a < inputs.length; a += CHUNK * imageBytes) {
        const chunk = inputs.subarray(a, Math.min(a + CHUNK * imageBytes, inputs.length)).toString('base64');
        model.outputs.push(...await page.evaluate(([i, text]) => window.rstnLive.instances[i].forwardBase64(text), [m, chunk]));
      }
      // the time of one forward pass, warm: the first input again, REPEATS times
      model.forward_ms = await page.evaluate(([i, text, k]) => {
        const inst = window.rstnLive.instances[i];
        return Array.from({ length: k }, () => inst.forwardBase64(text)[0].ms);
      }, [m, inputs.subarray(0, imageBytes).toString('base64'), REPEATS]);
      if (model.outputs.length > 100) model.outputs = model.outputs.map((o) => ({ logits: o.logits }));  // keep it small
    }
    report.models.push(model);
  }

  if (count > 0) {
    const root = page.locator('.rstn-live-container').first();
    await root.scrollIntoViewIfNeeded();
    const snap = () => page.evaluate(() => {
      const inst = window.rstnLive.instances[0];
      return { state: inst.state(), image: inst.image(), shown: inst.shown() };
    });
    const ui = { initial: await snap() };
    // test sequence 4 leaves room to move its digits 2 and 3 down inside the generator's layout
    await root.locator('select[data-action=sequence]').selectOption('4');
    ui.sequence4 = await snap();
    // keys: focus the input, pick digit 2, move it 6 px right (snapshot), 6 px back, then 5 + 2 px down
    const input = root.locator('canvas.rstn-input');
    await input.focus();
    await page.keyboard.press('2');
    for (let k = 0; k < 6; k++) await page.keyboard.press('ArrowRight');
    ui.keys_right = await snap();
    for (let k = 0; k < 6; k++) await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('Shift+ArrowDown');
    for (let k = 0; k < 2; k++) await page.keyboard.press('ArrowDown');
    ui.keys = await snap();
    // the mouse: drag digit 3 by (0, +16) image pixels, in small steps as a hand would
    const [x3, y3] = ui.keys.state.xy[2];
    const from = await page.evaluate(([x, y]) => window.rstnLive.instances[0].clientPoint(x, y), [x3 + 14, y3 + 14]);
    const to = await page.evaluate(([x, y]) => window.rstnLive.instances[0].clientPoint(x, y), [x3 + 14, y3 + 30]);
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    await page.mouse.move(to.x, to.y, { steps: 6 });
    await page.mouse.up();
    ui.drag = await snap();
    await root.locator('input[data-action=clutter]').click();
    ui.clutter_off = await snap();
    // pick place 1, then a 1 and a 7 from the strip: they go to places 1 and 2
    const stripOf = async (label) =>
      Number(await root.locator(`.rstn-strip-digit[aria-label^="put a ${label} "]`).first().getAttribute('data-digit'));
    await root.locator('button[data-slot="0"]').click();
    ui.strip_ids = [await stripOf(1), await stripOf(7)];
    await root.locator(`button[data-digit="${ui.strip_ids[0]}"]`).click();
    await root.locator(`button[data-digit="${ui.strip_ids[1]}"]`).click();
    ui.strip = await snap();
    await root.locator('button[data-action=layout]').click();
    ui.layout = await snap();
    await root.locator('button[data-action=new-clutter]').click();
    ui.new_clutter = await snap();
    await root.locator('button[data-action=random]').click();
    ui.random = await snap();
    await input.focus();
    await page.keyboard.press('t');
    ui.next_sequence = await snap();
    await root.locator('select[data-action=sequence]').selectOption('0');
    ui.reset = await snap();
    ui.summary = await root.locator('[data-role=summary]').textContent();
    ui.timing = await root.locator('[data-role=timing]').textContent();
    ui.times = await page.evaluate(() => window.rstnLive.instances[0].times());
    report.ui = ui;
    await root.screenshot({ path: join(outDir, `live-${name}.png`) });
  } else if (report.containers > 0) {
    await page.locator('.rstn-live-container').first().screenshot({ path: join(outDir, `live-${name}.png`) });
  }
  await page.screenshot({ path: join(outDir, `page-${name}.png`), fullPage: true });
});
console.log(`${name}: ${report.models.length} live model(s), ${report.console_errors.length} console errors, ` +
  `${report.seconds.toFixed(1)} s in the browser`);
