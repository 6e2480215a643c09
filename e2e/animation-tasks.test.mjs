// The animation's tasks as a learner does them (click a spot, drag items, type), with
// `test=1`: everything lands in loggingtable_test and nothing in loggingtable.

import { test } from "node:test";
import assert from "node:assert/strict";
import { requireAll, startStack, launchBrowser, openAnimation, answerFreeText, waitFor } from "./lib/harness.mjs";

const parse = (text) => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

test("test=1: clicks, drags and typed answers all go to loggingtable_test only", async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright"]);
  if (!prereq) return;
  const stack = await startStack(prereq, { name: "e2e_tasks" });
  t.after(() => stack.cleanup());
  const { context, close } = await launchBrowser(prereq);
  t.after(close);

  const page = await openAnimation(context, stack.animationUrl({ lesson: "parallel-computation", level: "advanced", test: "1" }));
  const handed = async (n) =>
    page.waitForFunction((k) => Number(document.body.dataset.logged || 0) >= k, n, { timeout: 30_000 });

  // Task 1: a click on the ground, a wrong building, then the right one.
  await page.locator("#campus").click({ position: { x: 10, y: 10 } });
  await page.locator('[data-spot="cafeteria"] rect').click();
  await page.locator('[data-spot="data-center"] rect').click();
  await handed(3);
  assert.match(await page.textContent("#spot-feedback"), /Yes!/);

  // Task 2: two items dragged with the mouse, two placed by click-then-bin.
  await page.locator('[data-item="elevation-grid"]').dragTo(page.locator('[data-bin="raster"]'));
  await page.locator('[data-item="road-lines"]').dragTo(page.locator('[data-bin="vector"]'));
  await page.locator('[data-item="satellite-image"]').click();
  await page.locator('[data-bin="raster"]').click();
  await page.locator('[data-item="city-points"]').click();
  await page.locator('[data-bin="vector"]').click();
  await handed(7);
  await page.click("#sort-check");
  await handed(8);
  assert.match(await page.textContent("#sort-feedback"), /All four sorted correctly/);

  // Task 3: free text.
  await answerFreeText(page, "computers, networks, data and people working together");

  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable_test");
      return r.length >= 9 && r;
    },
    { describe: async () => `expected 9 rows in loggingtable_test, found: ${JSON.stringify((await stack.rows("loggingtable_test")).map((r) => [r.question, r.answer]))}` },
  );
  // In the order the learner acted (arrival order may differ when the SDK batches).
  const byClientTime = (a, b) => (a.client_time < b.client_time ? -1 : a.client_time > b.client_time ? 1 : a.id - b.id);
  const q = (id) => rows.filter((r) => r.question === id).sort(byClientTime);
  for (const r of rows) {
    assert.equal(r.lesson, "parallel-computation");
    assert.equal(r.lesson_level, "advanced");
  }

  const spot = q("1A").map((r) => r.answer);
  assert.equal(spot.length, 3, `task 1 should give 3 rows, gave ${JSON.stringify(spot)}`);
  const ground = parse(spot[0]);
  assert.equal(ground?.action, "click", `the ground click is an interaction stored as JSON, got ${spot[0]}`);
  assert.equal(ground?.on, "ground");
  assert.deepEqual(spot.slice(1), ["false", "true"], "a wrong building answers false, the data center true");

  const sort = q("2A").map((r) => parse(r.answer));
  const drops = sort.filter((d) => d?.action === "drop");
  assert.deepEqual(
    drops.map((d) => `${d.item}->${d.bin}`),
    ["elevation-grid->raster", "road-lines->vector", "satellite-image->raster", "city-points->vector"],
    "each drop is an interaction",
  );
  const final = sort.find((d) => d && !d.action);
  assert.deepEqual(
    final,
    { "elevation-grid": "raster", "satellite-image": "raster", "road-lines": "vector", "city-points": "vector" },
    "the checked sorting is the answer",
  );

  assert.deepEqual(q("3A").map((r) => r.answer), ["computers, networks, data and people working together"]);
  assert.deepEqual(await stack.rows("loggingtable"), [], "test=1 must not write the production table");

  // The same page without test=1 writes the production table only.
  const prod = await openAnimation(context, stack.animationUrl({ lesson: "parallel-computation", level: "advanced" }));
  await answerFreeText(prod, "a production answer");
  const prodRows = await waitFor(async () => {
    const r = await stack.rows("loggingtable");
    return r.length >= 1 && r;
  }, { describe: "the production answer never reached loggingtable" });
  assert.deepEqual(prodRows.map((r) => r.answer), ["a production answer"]);
  assert.equal((await stack.rows("loggingtable_test")).length, 9, "the production answer must not also land in the test table");
  assert.deepEqual(context.pageErrors, [], "the page threw");
});
