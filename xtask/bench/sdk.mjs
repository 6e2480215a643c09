// SDK timings for `cargo xtask bench`, in headless Chromium through playwright-core.
//
// usage: node xtask/bench/sdk.mjs COLLECTOR_URL [CALLS]
// The collector must serve the built SDK under /sdk/ (--sdk-dir js/dist).
// Prints one JSON line: {"calls","queued_p50_ms","queued_p99_ms","queued_max_ms","drain_ms","pending_after"}.
//
// 1. Offline (context.setOffline), CALLS x logAnswer: the time until each promise
//    resolves "queued" (the event is in localStorage, nothing could be sent).
// 2. Online again: the time until the whole backlog has left the queue (the SDK
//    sends it to /test/batch in chunks), measured from the node side, so it includes
//    the round trips of this harness (a slight overestimate).
import { chromium } from 'playwright-core';

const base = process.argv[2];
const calls = Number(process.argv[3] ?? 1000);
if (!base) {
  console.error('usage: node sdk.mjs COLLECTOR_URL [CALLS]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${base}/`);
  await page.evaluate(async (endpoint) => {
    const h = await import(`${endpoint}/sdk/hourofci-log.js`);
    await h.init({ endpoint, test: true });
    window.__bench = { h, dropped: 0, rejected: 0 };
    h.onStatus((e) => {
      if (e.kind === 'dropped') window.__bench.dropped += e.count ?? 1;
      if (e.kind === 'rejected') window.__bench.rejected += 1;
    });
  }, base);

  await context.setOffline(true);
  const times = await page.evaluate(async (n) => {
    const { h } = window.__bench;
    const out = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const delivery = await h.logAnswer('gateway', 'beginner', '1A', `offline answer ${i}`);
      out.push(performance.now() - t0);
      if (delivery !== 'queued') throw new Error(`call ${i}: expected "queued", got ${delivery}`);
    }
    return out;
  }, calls);
  const pendingOffline = await page.evaluate(() => window.__bench.h.pending());
  if (pendingOffline !== calls) throw new Error(`expected ${calls} pending while offline, got ${pendingOffline}`);

  const t0 = performance.now();
  await context.setOffline(false);
  const pendingAfter = await page.evaluate(async () => {
    const { h } = window.__bench;
    const giveUp = performance.now() + 60000;
    while (h.pending() > 0 && performance.now() < giveUp) {
      await h.flush();
      if (h.pending() > 0) await new Promise((r) => setTimeout(r, 2));
    }
    return h.pending();
  });
  const drainMs = performance.now() - t0;
  const { dropped, rejected } = await page.evaluate(() => ({ dropped: window.__bench.dropped, rejected: window.__bench.rejected }));

  times.sort((a, b) => a - b);
  const pct = (q) => times[Math.min(times.length, Math.max(1, Math.ceil(q * times.length))) - 1];
  console.log(JSON.stringify({
    calls,
    queued_p50_ms: pct(0.5),
    queued_p99_ms: pct(0.99),
    queued_max_ms: times[times.length - 1],
    drain_ms: drainMs,
    pending_after: pendingAfter,
    dropped,
    rejected,
  }));
} finally {
  await browser.close();
}
