// The pseudonymous learner id, end to end: the real SDK (js/dist) in headless Chromium,
// the real collector, PostgreSQL. Every event carries its learner id from the moment it is
// stored (so a reload keeps it), on the single route as `X-Learner-Id` and in `/batch` as
// `learner_id`; it lands in the `learner_id` column (docs/DESIGN.md, "SDK JavaScript API").
//
// Run like sdk.test.mjs: `node --test sdk-wasm/e2e/` (same variables and fallbacks).

import { test } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, waitFor } from "../../e2e/lib/harness.mjs";
import { sharedStack } from "./shared-stack.mjs";

const LEARNER_KEY = "hourofci-log:learner:v1";
const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const stackFor = sharedStack("sdk_learner");

/** A fresh browser profile (its own localStorage), with every POST to the collector recorded. */
async function profile(t, env) {
  const { context, close } = await launchBrowser(env.prereq);
  t.after(close);
  const posts = [];
  context.on("requestfinished", (req) => {
    if (req.method() !== "POST" || !req.url().startsWith(env.stack.collector.url)) return;
    posts.push({ url: req.url(), header: req.headers()["x-learner-id"], body: req.postData() });
  });
  return { context, posts };
}

/** A page of `context` that loaded the SDK from the collector and ran `init(options)`; `waitForInit`: false leaves it loading. */
async function sdkPage(context, env, options = {}, { waitForInit = true } = {}) {
  const page = await context.newPage();
  await page.goto(`${env.stack.sdkPages.url}/index.html`);
  await page.evaluate(
    async ({ collector, options, waitForInit }) => {
      const h = await import(`${collector}/sdk/hourofci-log.js`);
      window.sdk = h;
      window.initDone = h.init({ endpoint: collector, retryBaseMs: 200, retryCapMs: 2000, ...options });
      if (waitForInit) await window.initDone;
    },
    { collector: env.stack.collector.url, options, waitForInit },
  );
  return page;
}

const log = (page, question, answer) => page.evaluate(([q, a]) => window.sdk.logAnswer("gateway", "beginner", q, a), [question, answer]);
const browserLearner = (page) => page.evaluate((k) => localStorage.getItem(k), LEARNER_KEY);

/** `{answer: learner_id}` of the rows whose answer starts with `prefix`, once there are `n`. */
async function learners(env, prefix, n) {
  const sql = `SELECT coalesce(json_object_agg(answer, learner_id), '{}') FROM loggingtable WHERE answer LIKE '${prefix}%'`;
  return waitFor(
    async () => {
      const rows = await env.stack.pg.json(env.stack.db, sql);
      return Object.keys(rows).length >= n && rows;
    },
    { timeoutMs: 60_000, describe: async () => `rows ${prefix}*: ${JSON.stringify(await env.stack.pg.json(env.stack.db, sql))}` },
  );
}

test("one browser profile is one learner, across answers and a reload; another profile is another", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const a = await profile(t, env);
  const page = await sdkPage(a.context, env);
  const id = await browserLearner(page);
  assert.match(id ?? "", V4, "a random UUID v4 kept in localStorage");
  assert.equal(await log(page, "1A", "lid-profile-1"), "sent");
  assert.equal(await log(page, "1B", "lid-profile-2"), "sent");
  // Offline, the third answer waits in localStorage and goes out from the next page load.
  await a.context.setOffline(true);
  assert.equal(await log(page, "1C", "lid-profile-3"), "queued");
  await page.close();
  await a.context.setOffline(false);
  const reloaded = await sdkPage(a.context, env);
  assert.equal(await browserLearner(reloaded), id, "kept across page loads");
  assert.equal(await log(reloaded, "1D", "lid-profile-4"), "sent");

  const b = await profile(t, env);
  const other = await sdkPage(b.context, env);
  assert.equal(await log(other, "1A", "lid-profile-other"), "sent");
  const otherId = await browserLearner(other);
  assert.match(otherId ?? "", V4);
  assert.notEqual(otherId, id, "another browser profile, another learner");

  const rows = await learners(env, "lid-profile", 5);
  assert.deepEqual(rows, {
    "lid-profile-1": id,
    "lid-profile-2": id,
    "lid-profile-3": id,
    "lid-profile-4": id,
    "lid-profile-other": otherId,
  });
  assert.ok(a.posts.every((p) => p.header === id || JSON.parse(p.body || "{}").events?.every((e) => e.learner_id === id)), JSON.stringify(a.posts));
});

test("a learnerId given to init is stored, through the single route and through /batch", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const given = "7D444840-9DC0-41D1-A8A4-1A2B3C4D5E6F";
  const { context, posts } = await profile(t, env);
  const page = await sdkPage(context, env, { learnerId: given });
  assert.equal(await log(page, "2A", "lid-given-single"), "sent");
  await context.setOffline(true);
  for (const n of [1, 2, 3]) assert.equal(await log(page, "2B", `lid-given-batch-${n}`), "queued");
  await context.setOffline(false);
  const flushed = await page.evaluate(() => window.sdk.flush());
  assert.equal(flushed.pending, 0);

  const rows = await learners(env, "lid-given", 4);
  assert.deepEqual(Object.values(rows), Array(4).fill(given.toLowerCase()), JSON.stringify(rows));
  const single = posts.find((p) => !p.url.endsWith("/batch"));
  assert.equal(single?.header, given, "X-Learner-Id on the single route");
  const batch = posts.find((p) => p.url.endsWith("/batch"));
  assert.ok(batch, `a /batch was sent: ${JSON.stringify(posts)}`);
  assert.equal(batch.header, undefined);
  assert.deepEqual(JSON.parse(batch.body).events.map((e) => e.learner_id), [given, given, given], "learner_id in each batch event");
  assert.equal(await browserLearner(page), null, "a lesson's own id makes no browser id");
});

test("init rejects a learnerId that is not a non-nil UUID, naming the option", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context } = await profile(t, env);
  const page = await sdkPage(context, env);
  for (const bad of ["00000000-0000-0000-0000-000000000000", "alice", "7d4448409dc041d1a8a41a2b3c4d5e6f", "{7d444840-9dc0-41d1-a8a4-1a2b3c4d5e6f}", " 7d444840-9dc0-41d1-a8a4-1a2b3c4d5e6f", 42]) {
    const error = await page.evaluate(
      (learnerId) => window.sdk.init({ endpoint: "http://127.0.0.1:9", learnerId }).then(() => "accepted", (e) => String(e.message)),
      bad,
    );
    assert.match(error, /option `learnerId` must be a non-nil UUID/, `${JSON.stringify(bad)}: ${error}`);
  }
});

test("answers given while the wasm loads are stored with the learner id; older SDKs' events go without one", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context } = await profile(t, env);
  // An event stored by an SDK before learner ids (the same stored form, no learner_id).
  const old = { id: "5b0f3a52-2c43-4c43-8f53-7d0c1e8a1f00", user_agent: "0123456789abcdef0123456789abcdef", lesson: "gateway", level: "beginner", question: "3A", answer: "lid-early-older-sdk", client_time: "2026-12-01T10:00:00.000Z", test: false, endpoint: env.stack.collector.url };
  const first = await context.newPage();
  await first.goto(`${env.stack.sdkPages.url}/index.html`);
  await first.evaluate((e) => localStorage.setItem(`hourofci-log:ev:0000000000000001:${e.id}`, JSON.stringify(e)), old);
  // The wasm never arrives on this page: both answers are written by the shim's pre-init store.
  await first.route("**/sdk/hourofci_sdk_bg.wasm", () => {});
  await first.evaluate(async (collector) => {
    const h = await import(`${collector}/sdk/hourofci-log.js`);
    h.init({ endpoint: collector }).catch(() => {});
    window.early = [await h.logAnswer("gateway", "beginner", "3B", "lid-early-1"), await h.logInteraction("gateway", "beginner", "3C", { step: 2 })];
  }, env.stack.collector.url);
  assert.deepEqual(await first.evaluate(() => window.early), ["queued", "queued"]);
  const id = await browserLearner(first);
  assert.match(id ?? "", V4);
  const stored = await first.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("hourofci-log:ev:")).sort().map((k) => JSON.parse(localStorage.getItem(k))));
  assert.deepEqual(stored.map((e) => e.learner_id), [undefined, id, id], "the shim writes the learner id in the stored form");
  await first.close();

  // The next page load sends all three.
  const next = await sdkPage(context, env);
  await next.evaluate(() => window.sdk.flush());
  const sql = `SELECT coalesce(json_object_agg(question, learner_id), '{}') FROM loggingtable WHERE question IN ('3A','3B','3C') AND lesson = 'gateway' AND (answer LIKE 'lid-early%' OR answer = '{"step":2}')`;
  const rows = await waitFor(
    async () => {
      const r = await env.stack.pg.json(env.stack.db, sql);
      return Object.keys(r).length >= 3 && r;
    },
    { timeoutMs: 60_000, describe: async () => JSON.stringify(await env.stack.pg.json(env.stack.db, sql)) },
  );
  assert.deepEqual(rows, { "3A": null, "3B": id, "3C": id }, "older SDK's event: NULL; early ones: this profile's id");
});
