// Nothing lost before the SDK is ready: an answer given while the SDK's wasm is still
// loading is accepted, written to localStorage at once in the SDK's own stored format,
// and, the page being closed before the wasm ever arrived, sent by the next page load.

import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { requireAll, startStack, launchBrowser, openAnimation, waitFor } from "./lib/harness.mjs";

test("an answer given while the SDK loads, page closed at once: stored in the SDK's format, delivered by the next page load", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_early" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);
  const url = stack.animationUrl({ lesson: "gateway", level: "beginner" });

  // The wasm never arrives on this first visit: the SDK stays "loading".
  const page = await context.newPage();
  await page.route("**/sdk/hourofci_sdk_bg.wasm", () => {});
  await page.goto(url);
  await page.waitForFunction(() => window.hourofci, null, { timeout: 30_000 });
  const answer = "given before the SDK was ready ✓ / ? #";
  await page.fill("#free-answer", answer);
  await page.click("#free-submit");
  await page.waitForFunction(() => Number(document.body.dataset.logged || 0) >= 1, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.logging), undefined, "the SDK was still loading when the answer was given");
  assert.notEqual(await page.locator("#status").getAttribute("data-kind"), "error", `the answer was accepted: ${await page.textContent("#status")}`);

  const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("hourofci-log:ev:")).map((k) => [k, localStorage.getItem(k)]));
  const learner = await page.evaluate(() => localStorage.getItem("hourofci-log:learner:v1"));
  assert.match(learner ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "this browser profile's learner id, made by the shim");
  const userAgent = await page.evaluate(() => navigator.userAgent);
  await page.close();

  assert.equal(stored.length, 1, `one stored entry: ${JSON.stringify(stored)}`);
  const [key, value] = stored[0];
  const event = JSON.parse(value);
  assert.match(key, /^hourofci-log:ev:\d{16}:[0-9a-f-]{36}$/, "the SDK's key: hourofci-log:ev:<16-digit order>:<id>");
  assert.equal(key.slice(-36), event.id, "the key ends with the event id");
  assert.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "a UUID v4");
  assert.deepEqual(
    { ...event, id: "-", client_time: "-" },
    {
      id: "-",
      user_agent: crypto.createHash("md5").update(userAgent).digest("hex"),
      lesson: "gateway",
      level: "beginner",
      question: "3A",
      answer,
      client_time: "-",
      test: false,
      endpoint: stack.collector.url,
      learner_id: learner,
    },
  );
  assert.ok(!Number.isNaN(Date.parse(event.client_time)) && event.client_time.endsWith("Z"), `client_time is RFC 3339 UTC: ${event.client_time}`);
  assert.equal((await stack.rows("loggingtable")).length, 0, "nothing was sent from the closed page");

  // The next visit loads the SDK, which sends what the first left.
  const next = await openAnimation(context, url);
  t.after(() => next.close());
  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length > 0 && r;
    },
    { timeoutMs: 60_000, describe: async () => `no row; collector log:\n${stack.collector.logTail(10)}` },
  );
  assert.equal(rows.length, 1, "exactly once");
  assert.equal(rows[0].answer, answer);
  assert.equal(rows[0].event_id, event.id);
  assert.equal(Date.parse(rows[0].client_time), Date.parse(event.client_time), "the row keeps the time the learner answered");
  assert.equal(await next.evaluate(() => window.hourofci.pending()), 0);
  assert.deepEqual(await stack.pg.json(stack.db, "SELECT json_agg(learner_id) FROM loggingtable"), [learner], "sent with the learner id it was stored with");

  // Once loaded, the SDK records the same user agent (the shim's MD5, its one home).
  await next.fill("#free-answer", "after the SDK was ready");
  await next.click("#free-submit");
  const later = await waitFor(async () => (await stack.rows("loggingtable")).find((r) => r.answer === "after the SDK was ready"), { describe: "the second answer" });
  assert.equal(later.user_agent, event.user_agent, "the same MD5 of navigator.userAgent before and after the wasm loaded");
});
