// An old lesson as it runs in a learner's browser: a page on another origin than the
// collector sends the legacy GET with XMLHttpRequest (what jQuery's $.get does) and calls
// alert("Error") when it fails, as the real animations and custom.js do. By default the
// collector answers the legacy routes with `Access-Control-Allow-Origin: *`: no popup.
// Restricted with --legacy-allow-origin to some other site, the same page shows "Error",
// and the row is written anyway (a simple GET is never preflighted): why `*` is the default.

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { requireAll, PgCluster, Collector, freePort, tmpDir, serveStatic, launchBrowser } from "./lib/harness.mjs";

const UA = "3b5d5c3712955042212316173ccf37be";

// The old lessons' pattern, without jQuery (not vendored here): one XHR GET, alert on failure.
const LESSON_PAGE = `<!doctype html><meta charset="utf-8"><title>old lesson</title>
<script>
  const params = new URLSearchParams(location.search);
  const url = params.get("collector") + "/${UA}/gateway/beginner/" + params.get("question") + "/true";
  const xhr = new XMLHttpRequest();
  xhr.open("GET", url);
  xhr.onload = () => { document.body.dataset.done = "loaded " + xhr.status + " " + xhr.responseText; };
  xhr.onerror = () => { document.body.dataset.done = "error"; alert("Error"); };
  xhr.send();
</script><body></body>`;

test("an old lesson's cross-origin GET shows no error popup by default, and is written either way", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "chromium", "playwright"]);
  if (!prereq) return;
  const pg = await PgCluster.start(prereq.pgcluster);
  t.after(() => pg.stop());
  const db = "legacy_cors";
  const adminUrl = await pg.command(`db ${db}`);
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  await pg.command(`role ${db}_writer ${password}`);
  await Collector.migrate(prereq.collector, adminUrl, `${db}_writer`);
  const writerUrl = `postgres://${db}_writer:${password}@127.0.0.1:${pg.port}/${db}`;

  // Hooks run in registration order: the browser goes before the page server, whose
  // close() would otherwise wait for the browser's keep-alive connections.
  const { context, close } = await launchBrowser(prereq);
  t.after(close);
  const dir = tmpDir("legacy-lesson");
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, "lesson.html"), LESSON_PAGE);
  const pages = await serveStatic(dir, await freePort());
  t.after(() => pages.close());
  const sdkDir = tmpDir("legacy-lesson-sdk");
  t.after(() => fs.rmSync(sdkDir, { recursive: true, force: true }));

  // The lesson page on its own origin; resolves to what it saw and the alerts it raised.
  const runLesson = async (collector, question) => {
    const page = await context.newPage();
    const alerts = [];
    page.on("dialog", (d) => {
      alerts.push(d.message());
      d.dismiss().catch(() => {});
    });
    await page.goto(`${pages.url}/lesson.html?collector=${encodeURIComponent(collector.url)}&question=${question}`);
    await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 30_000 });
    const done = await page.evaluate(() => document.body.dataset.done);
    await page.close();
    return { done, alerts };
  };

  // Default: the SDK list names some other site; the legacy routes still answer `*`.
  const open = new Collector({ bin: prereq.collector, port: await freePort(), databaseUrl: writerUrl, allowOrigins: ["https://sdk-only.example"], sdkDir });
  t.after(() => open.stop());
  await open.start();
  const seen = await runLesson(open, "1A");
  assert.deepEqual(seen, { done: "loaded 200 null", alerts: [] }, "the lesson must read the collector's answer and show no popup");
  await open.stop();

  // Restricted to another site: the browser hides the answer, the lesson pops "Error"...
  const closed = new Collector({
    bin: prereq.collector, port: await freePort(), databaseUrl: writerUrl, allowOrigins: [], sdkDir,
    extraArgs: ["--legacy-allow-origin", "https://elsewhere.example"],
  });
  t.after(() => closed.stop());
  await closed.start();
  const hidden = await runLesson(closed, "1B");
  assert.deepEqual(hidden, { done: "error", alerts: ["Error"] });
  await closed.stop();

  // ...yet both answers were stored: CORS never stopped the write, only the reading.
  const rows = await pg.rows(db, "loggingtable");
  assert.deepEqual(rows.map((r) => [r.question, r.answer]), [["1A", "true"], ["1B", "true"]]);
});
