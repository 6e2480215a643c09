// The lesson animation in a real browser: awkward answers round-trip byte for byte, and
// answers given offline survive closing the page and arrive once the learner is back.

import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers } from "./lib/harness.mjs";

const AWKWARD = [
  "a/b/../c?x=1&y=2#frag",
  "100% sure; %2F stays %2F and %zz too",
  `"double" and 'single' quotes`,
  "first line\nsecond line",
  "emoji 🎉🌍 and ); DROP TABLE loggingtable; --",
];
const OFFLINE = Array.from({ length: 20 }, (_, i) => `offline answer ${i + 1} ✓`);
const EXPECTED = [...AWKWARD, ...OFFLINE];

test("animation: 5 awkward answers online, 20 offline, page closed, reopened online: 25 rows exactly once, in order", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_offline" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const url = stack.animationUrl({ lesson: "spatial-thinking", level: "beginner" });
  let page = await openAnimation(context, url);
  const userAgent = await page.evaluate(() => navigator.userAgent);

  for (const answer of AWKWARD) await answerFreeText(page, answer);

  await context.setOffline(true);
  for (const answer of OFFLINE) await answerFreeText(page, answer);
  const status = await page.locator("#status").getAttribute("data-kind");
  assert.equal(status, "queued", `while offline the status line should say the answer was saved on the device; it says: ${await page.textContent("#status")}`);
  const pendingOffline = await page.evaluate(() => window.hourofci.pending());
  assert.ok(pendingOffline >= OFFLINE.length, `the SDK should hold the ${OFFLINE.length} offline answers, it holds ${pendingOffline}`);
  await page.close();

  const whileOffline = await stack.rows("loggingtable");
  const leaked = whileOffline.filter((r) => OFFLINE.includes(r.answer));
  assert.equal(leaked.length, 0, `answers given offline reached the database before coming back online: ${leaked.map((r) => r.answer)}`);

  await context.setOffline(false);
  page = await openAnimation(context, url);

  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable");
      return r.length >= EXPECTED.length && r;
    },
    {
      timeoutMs: 90_000,
      describe: async () => `expected ${EXPECTED.length} rows in loggingtable; ${compareAnswers(await stack.rows("loggingtable"), EXPECTED)}; SDK pending: ${await page.evaluate(() => window.hourofci.pending())}; collector log:\n${stack.collector.logTail(15)}`,
    },
  );

  assert.equal(compareAnswers(rows, EXPECTED), "", "every answer exactly once, byte for byte");
  assert.equal(rows.length, EXPECTED.length);
  for (const r of rows) {
    assert.equal(r.lesson, "spatial-thinking");
    assert.equal(r.lesson_level, "beginner");
    assert.equal(r.question, "3A");
    assert.match(r.event_id ?? "", /^[0-9a-f-]{36}$/, `row ${JSON.stringify(r.answer)} has no event id`);
  }
  const md5 = crypto.createHash("md5").update(userAgent).digest("hex");
  assert.deepEqual([...new Set(rows.map((r) => r.user_agent))], [md5], "user_agent is the MD5 hex of navigator.userAgent, as the old lessons sent");

  const timeOf = new Map(rows.map((r) => [r.answer, r.client_time]));
  for (let i = 1; i < EXPECTED.length; i++) {
    const [a, b] = [EXPECTED[i - 1], EXPECTED[i]];
    assert.ok(timeOf.get(a) && timeOf.get(a) <= timeOf.get(b), `client_time out of order: ${JSON.stringify(a)} at ${timeOf.get(a)} is after ${JSON.stringify(b)} at ${timeOf.get(b)}`);
  }
  assert.equal((await stack.rows("loggingtable_test")).length, 0, "nothing may go to the test table without test=1");
  assert.deepEqual(context.pageErrors, [], "the page threw");
});
