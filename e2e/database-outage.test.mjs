// PostgreSQL is stopped under a running collector: the collector says 503 (never a
// false success), the SDK keeps the answers, and they all arrive once it is back.

import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers } from "./lib/harness.mjs";

const BEFORE = ["before the outage 1", "before the outage 2", "before the outage 3"];
const DURING = Array.from({ length: 10 }, (_, i) => `during the outage ${i + 1}`);
const ALL = [...BEFORE, ...DURING];

test("database stopped then started: 503 meanwhile, the SDK keeps the answers, all arrive after", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_dbdown" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const page = await openAnimation(context, stack.animationUrl({ lesson: "geospatial-data", level: "advanced" }));
  for (const a of BEFORE) await answerFreeText(page, a);
  await waitFor(async () => (await stack.rows("loggingtable")).length >= BEFORE.length, {
    describe: async () => `answers before the outage: ${compareAnswers(await stack.rows("loggingtable"), BEFORE)}`,
  });

  await stack.pg.command("stop");

  const direct = await fetch(`${stack.collector.url}/e2e-agent/geospatial-data/advanced/1A/direct`, {
    method: "POST",
    headers: { "Idempotency-Key": crypto.randomUUID(), "X-Client-Time": new Date().toISOString() },
  });
  assert.equal(direct.status, 503, `with the database down a POST must get 503, got ${direct.status}: ${await direct.text()}`);
  assert.ok(direct.headers.get("retry-after"), "a 503 carries Retry-After");
  const health = await fetch(`${stack.collector.url}/healthz`);
  assert.equal(health.status, 503, `/healthz with the database down must be 503, got ${health.status}`);

  for (const a of DURING) await answerFreeText(page, a);
  await waitFor(async () => (await page.locator("#status").getAttribute("data-kind")) === "queued", {
    describe: async () => `the learner should see "saved, will be sent later" while the database is down; the status line says: ${await page.textContent("#status")}`,
  });
  const held = await page.evaluate(() => window.hourofci.pending());
  assert.ok(held >= 1, "the SDK holds the answers the collector could not store");

  await stack.pg.command("start");

  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length >= ALL.length && r;
    },
    {
      timeoutMs: 120_000,
      describe: async () => `after the database came back: ${compareAnswers(await stack.rows("loggingtable"), ALL)}; SDK pending: ${await page.evaluate(() => window.hourofci.pending())}; collector log:\n${stack.collector.logTail(15)}`,
    },
  );
  assert.equal(compareAnswers(rows.filter((r) => r.answer !== "direct"), ALL), "", "every answer exactly once");
  assert.equal((await fetch(`${stack.collector.url}/healthz`)).status, 200, "/healthz is ok again");
});
