// The collector is SIGKILLed while a learner keeps answering, then restarted on the
// same port: every answer is stored exactly once (the SDK retries, the event id dedupes).

import { test } from "node:test";
import assert from "node:assert/strict";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers } from "./lib/harness.mjs";

const TOTAL = 45;
const ANSWERS = Array.from({ length: TOTAL }, (_, i) => `crash-run answer ${i + 1}`);

test("collector SIGKILLed mid-stream and restarted: every answer exactly once", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_crash" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const page = await openAnimation(context, stack.animationUrl({ lesson: "cyberinfrastructure", level: "gateway" }));

  // Answers keep flowing in the background while the collector dies and comes back.
  let given = 0;
  const answering = (async () => {
    for (const a of ANSWERS) {
      await answerFreeText(page, a);
      given += 1;
    }
  })();

  await waitFor(async () => (await stack.rows("loggingtable")).length >= 10, {
    describe: () => `the first answers never reached the database (collector log:\n${stack.collector.logTail(15)})`,
  });
  await stack.collector.kill();
  const atKill = given;
  // Let the learner answer a good stretch while nothing listens.
  await waitFor(() => given >= Math.min(atKill + 10, TOTAL), { describe: () => `the page stopped taking answers after the kill (gave ${given})` });
  await stack.collector.start();
  await answering;

  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length >= TOTAL && r;
    },
    {
      timeoutMs: 120_000,
      describe: async () => `after the restart: ${compareAnswers(await stack.rows("loggingtable"), ANSWERS)}; SDK pending: ${await page.evaluate(() => window.hourofci.pending())}`,
    },
  );
  assert.equal(compareAnswers(rows, ANSWERS), "", "every answer exactly once across the crash");
  assert.equal(rows.length, TOTAL);
  assert.equal(new Set(rows.map((r) => r.event_id)).size, TOTAL, "each row has its own event id");
  await waitFor(async () => (await page.evaluate(() => window.hourofci.pending())) === 0, {
    describe: async () => `the SDK still holds ${await page.evaluate(() => window.hourofci.pending())} events although all are stored`,
  });
});
