// Two tabs of the same lesson share one localStorage queue: answering in both at once,
// online and offline, loses nothing and stores nothing twice.

import { test } from "node:test";
import assert from "node:assert/strict";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers } from "./lib/harness.mjs";

const answersOf = (tab, phase, n) => Array.from({ length: n }, (_, i) => `tab ${tab} ${phase} ${i + 1}`);

test("two tabs logging at once: no lost and no duplicate rows", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_tabs" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const url = stack.animationUrl({ lesson: "big-data", level: "beginner" });
  const tabA = await openAnimation(context, url);
  const tabB = await openAnimation(context, url);
  // Kept for the failure message: a lost answer may have been rejected or dropped.
  for (const tab of [tabA, tabB]) {
    await tab.evaluate(() => {
      window.e2eStatuses = [];
      window.hourofci.onStatus((e) => window.e2eStatuses.push(e));
    });
  }
  const notSent = async (tab) => JSON.stringify(await tab.evaluate(() => window.e2eStatuses.filter((e) => e.kind === "rejected" || e.kind === "dropped")));
  const answerAll = async (page, list) => {
    for (const a of list) await answerFreeText(page, a);
  };

  const online = [...answersOf("A", "online", 15), ...answersOf("B", "online", 15)];
  await Promise.all([answerAll(tabA, answersOf("A", "online", 15)), answerAll(tabB, answersOf("B", "online", 15))]);

  // Offline both queue into the same storage; back online both tabs try to flush it.
  await context.setOffline(true);
  const offline = [...answersOf("A", "offline", 10), ...answersOf("B", "offline", 10)];
  await Promise.all([answerAll(tabA, answersOf("A", "offline", 10)), answerAll(tabB, answersOf("B", "offline", 10))]);
  await context.setOffline(false);

  const expected = [...online, ...offline];
  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length >= expected.length && r;
    },
    {
      timeoutMs: 120_000,
      describe: async () =>
        `two tabs: ${compareAnswers(await stack.rows("loggingtable"), expected)}; pending A=${await tabA.evaluate(() => window.hourofci.pending())} B=${await tabB.evaluate(() => window.hourofci.pending())}; rejected/dropped A=${await notSent(tabA)} B=${await notSent(tabB)}; collector log:\n${stack.collector.logTail(10)}`,
    },
  );
  assert.equal(compareAnswers(rows, expected), "", "both tabs' answers, each exactly once");
  assert.equal(rows.length, expected.length);
  assert.deepEqual(context.pageErrors, [], "a tab threw");
});
