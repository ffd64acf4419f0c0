// Open a page with rstn explorers in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), use them as a reader would, and write what happened to a JSON report.
//
//   node explore.mjs URL OUT_DIR NAME
//
// The report holds facts, not verdicts: tests/browser/test_explore_page.py asserts on it and compares
// the browser's samples with rstn.sampler.transform in Python. Screenshots go to OUT_DIR too.
import { join } from 'node:path';

import { withOfflinePage } from './offline-page.mjs';

const [url, outDir, name] = process.argv.slice(2);
if (!url || !outDir || !name) throw new Error('usage: node explore.mjs URL OUT_DIR NAME');

// theta (t11, t12, t13, t21, t22, t23) and d of the samples compared with Python
const SAMPLER_CASES = {
  identity: [[1, 0, 0, 0, 1, 0], 1],
  zoom: [[0.5, 0, 0, 0, 0.5, 0], 1],
  rotation: [[Math.cos(0.5), -Math.sin(0.5), 0.1, Math.sin(0.5), Math.cos(0.5), -0.2], 2],
  translation: [[1, 0, 0.3, 0, 1, -0.25], 1],
  attention_d3: [[0.4, 0, -0.3, 0, 0.4, 0.2], 3],
};

const report = { url };
await withOfflinePage({ name, outDir, viewport: { width: 1100, height: 900 }, report }, async (page) => {
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.rstnExplorer && window.rstnExplorer.instances.length > 0, null, { timeout: 15000 });
  await page.waitForLoadState('networkidle');
  // the live model (rstn/assets/live.js) registers with window.rstnLive; tests/browser/test_live_page.py drives it
  report.explorers_in_page = await page.locator('.rstn-explorer:not(.rstn-live)').count();
  report.explorers_mounted = await page.evaluate(() => window.rstnExplorer.instances.map((i) => i.kind));
  report.live = await page.evaluate(() => {
    const missing = document.querySelector('#live-model [data-role=missing]');
    return { containers: document.querySelectorAll('#live-model').length, missing: missing ? missing.textContent : null,
      mounted: window.rstnLive ? window.rstnLive.instances.length : 0 };
  });

  // ---- the affine explorer, used through its controls
  const affine = page.locator('.rstn-explorer.rstn-affine').first();
  await affine.scrollIntoViewIfNeeded();
  const output = affine.locator('canvas[data-role=output]');
  const grey = () => output.evaluate((c) => window.rstnExplorer.canvasGray(c));
  const inputLevels = await page.evaluate(() =>
    Array.from(window.rstnExplorer.instances.find((i) => i.kind === 'affine').image.data, (v) => Math.round(255 * v)));
  const mismatches = (a, b) => (a.length === b.length ? a.filter((v, i) => v !== b[i]).length : Math.max(a.length, b.length));

  // at load, before any control is touched: the attention form's sliders must show theta
  const affineState = () => page.evaluate(() => {
    const inst = window.rstnExplorer.instances.find((i) => i.kind === 'affine');
    const note = inst.root.querySelector('[data-role=attention-note]');
    return { theta: inst.theta(), attention_shown: inst.attentionShown(), note: note ? note.textContent : null };
  });
  report.attention_form = { at_load: await affineState() };
  await affine.locator('button[data-preset=zoom]').click();
  report.attention_form.zoom = await affineState();
  await affine.locator('button[data-preset=rotate]').click();
  report.attention_form.rotate = await affineState();
  // the one normalised -> pixel conversion, for Python to compare with rstn.attention.normalised_to_pixels
  report.normalised_to_pixels = await page.evaluate(() =>
    [[-1, -1, 100, 100], [1, 1, 100, 100], [0, 0.5, 33, 100], [1.5, -2, 60, 100]].map(([x, y, h, w]) =>
      ({ point: [x, y], height: h, width: w, pixels: window.rstnExplorer.normalisedToPixels(x, y, h, w) })));

  await affine.locator('button[data-d="1"]').click();
  await affine.locator('button[data-preset=identity]').click();
  const before = await grey();
  // click on the theta13 slider's track, as a reader would: the thumb jumps there and the input fires
  const theta13 = affine.getByLabel('θ13');
  const box = await theta13.boundingBox();
  await page.mouse.click(box.x + 0.8 * box.width, box.y + box.height / 2);
  const after = await grey();
  report.slider = {
    value: Number(await theta13.inputValue()),
    theta: await page.evaluate(() => window.rstnExplorer.instances.find((i) => i.kind === 'affine').theta()),
    changed_pixels: mismatches(before, after),
  };

  await affine.locator('button[data-preset=identity]').click();
  const identity = await grey();
  report.identity = { pixels: identity.length, input_pixels: inputLevels.length,
    mismatches_with_input: mismatches(identity, inputLevels) };

  // what the reader sees is what the sampler computes: the canvas after a preset vs sample()
  await affine.locator('button[data-preset=rotate]').click();
  await affine.locator('button[data-d="2"]').click();
  const shown = await grey();
  report.canvas_vs_sample = await page.evaluate((shownLevels) => {
    const inst = window.rstnExplorer.instances.find((i) => i.kind === 'affine');
    const s = window.rstnExplorer.sample(inst.theta(), inst.d());
    const levels = s.data.map((v) => Math.round(255 * Math.min(1, Math.max(0, v))));
    return { height: s.height, width: s.width, mismatches: levels.filter((v, i) => v !== shownLevels[i]).length };
  }, shown);
  await affine.screenshot({ path: join(outDir, `affine-${name}.png`) });

  // ---- the browser's sampler on fixed theta, for Python to compare with rstn.sampler.transform
  report.image = { height: 0, width: 0, levels: inputLevels };
  report.samples = await page.evaluate((cases) => {
    const out = {};
    for (const [caseName, [theta, d]] of Object.entries(cases)) out[caseName] = { theta, d, ...window.rstnExplorer.sample(theta, d) };
    return out;
  }, SAMPLER_CASES);
  Object.assign(report.image, await page.evaluate(() => {
    const im = window.rstnExplorer.instances.find((i) => i.kind === 'affine').image;
    return { height: im.height, width: im.width };
  }));

  // ---- the attention explorer: its crops come from the saved theta through the same sampler
  const attention = page.locator('.rstn-explorer.rstn-attention').first();
  if (await attention.count()) {
    await attention.scrollIntoViewIfNeeded();
    const cropLevels = () => attention.locator('canvas.rstn-crop').evaluateAll((cs) => cs.map((c) => window.rstnExplorer.canvasGray(c)));
    const first = await cropLevels();
    report.attention = await page.evaluate(() => {
      const inst = window.rstnExplorer.instances.find((i) => i.kind === 'attention');
      const crops = {};
      for (const row of inst.rows) crops[row] = Array.from({ length: inst.steps(row) }, (_, t) => inst.crop(row, 0, t));
      return { rows: inst.rows, shown_row: inst.shownRow(), count: inst.count, image0: inst.imageLevels(0), crops };
    });
    // the canvases shown for the row on show and the first image are those crops
    const firstRow = report.attention.crops[report.attention.shown_row];
    report.attention.shown_vs_crop_mismatches = first.reduce((sum, levels, t) =>
      sum + mismatches(levels, firstRow[t].data.map((v) => Math.round(255 * Math.min(1, Math.max(0, v))))), 0);
    report.attention.shown_crops = first.length;
    await attention.locator('button', { hasText: '▶' }).click();
    report.attention.next_image_changes_crops = mismatches(first.flat(), (await cropLevels()).flat()) > 0;
    // where each row draws its step numbers on the image shown
    const stepLabels = () => page.evaluate(() =>
      window.rstnExplorer.instances.find((i) => i.kind === 'attention').stepLabels());
    report.attention.step_labels = {};
    for (let i = 0; i < report.attention.rows.length; i++) {
      await attention.locator('select').selectOption({ index: i });
      report.attention.step_labels[report.attention.rows[i]] = await stepLabels();
      if (i === 1) report.attention.other_row_crops = (await cropLevels()).length;
    }
    await attention.screenshot({ path: join(outDir, `attention-${name}.png`) });
  }
  await page.screenshot({ path: join(outDir, `page-${name}.png`), fullPage: true });
});
console.log(`${name}: ${report.requests.length} requests, ${report.console_errors.length} console errors, ` +
  `${report.seconds.toFixed(1)} s in the browser`);
