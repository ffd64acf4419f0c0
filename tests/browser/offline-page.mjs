// What the browser checks share: a fresh headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) whose page may reach nothing but this machine, and a JSON report of what the page
// requested and logged, written whatever happens.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Requests that stay on this machine: the page's own server, or data the page already holds. */
export function isLocal(requestUrl) {
  const u = new URL(requestUrl);
  if (['data:', 'blob:', 'about:'].includes(u.protocol)) return true;
  return ['http:', 'https:'].includes(u.protocol) && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
}

/**
 * Call `use(page)` on a fresh offline page, then close the browser and write `report` (with the page's
 * requests, blocked external requests, failed requests and console errors added) to OUT_DIR/report-NAME.json.
 */
export async function withOfflinePage({ name, outDir, viewport, report }, use) {
  const started = performance.now();
  Object.assign(report, { name, requests: [], external_requests: [], failed_requests: [], console_errors: [] });
  const userDataDir = mkdtempSync(join(tmpdir(), 'rstn-chromium-'));  // a fresh profile every run
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
    viewport,
  });
  try {
    context.on('request', (r) => report.requests.push(r.url()));
    // anything not local is recorded and never sent
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (isLocal(u)) return route.continue();
      report.external_requests.push(u);
      return route.abort('blockedbyclient');
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
    page.on('pageerror', (e) => report.console_errors.push('uncaught: ' + e.message));
    page.on('requestfailed', (r) => report.failed_requests.push(r.url() + ' ' + (r.failure() || {}).errorText));
    page.on('response', (r) => { if (r.status() >= 400) report.failed_requests.push(r.url() + ' HTTP ' + r.status()); });
    await use(page);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
    report.seconds = (performance.now() - started) / 1000;
    writeFileSync(join(outDir, `report-${name}.json`), JSON.stringify(report));
  }
}
