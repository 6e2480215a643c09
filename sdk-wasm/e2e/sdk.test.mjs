// End-to-end delivery tests of the browser SDK (js/dist) against the REAL collector
// on PostgreSQL, in headless Chromium through playwright-core. Nothing is mocked:
// offline is Chromium's own network emulation, a database outage is PostgreSQL stopped.
//
// Run (after `cargo xtask build-sdk`, `cargo build -p hourofci-collector -p testkit`):
//   node --test sdk-wasm/e2e/
// Variables (DESIGN.md, "Test drivers"): HOURCI_COLLECTOR_BIN, HOURCI_PGCLUSTER_BIN,
// HOURCI_SDK_DIST, CHROMIUM, CI (true: a missing prerequisite fails instead of skipping).
// Fallbacks: target/debug/..., js/dist, /usr/bin/chromium.

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { launchBrowser, waitFor, compareAnswers } from "../../e2e/lib/harness.mjs";
import { sharedStack, fillStorage } from "./shared-stack.mjs";

// Every queued event is its own localStorage entry: `hourofci-log:ev:<order>:<id>`.
const EVENT_PREFIX = "hourofci-log:ev:";
/** The values of the stored event entries, oldest first, in one string. */
const storedEvents = (page) =>
  page.evaluate((prefix) => Object.keys(localStorage).filter((k) => k.startsWith(prefix)).sort().map((k) => localStorage.getItem(k)).join("\n"), EVENT_PREFIX);

const stackFor = sharedStack("sdk_e2e");

/** A fresh browser profile with one page that has loaded and initialised the SDK from the collector. */
async function browserWithSdk(t, env, options = {}, { initScript } = {}) {
  const { context, close } = await launchBrowser(env.prereq);
  t.after(close);
  if (initScript) await context.addInitScript(initScript);
  const page = await openSdkPage(context, env, options);
  return { context, page };
}

async function openSdkPage(context, env, options = {}) {
  const page = await context.newPage();
  await page.goto(`${env.stack.sdkPages.url}/index.html`);
  await page.evaluate(
    async ({ collector, options }) => {
      const h = await import(`${collector}/sdk/hourofci-log.js`);
      window.statuses = [];
      h.onStatus((e) => window.statuses.push(e));
      await h.init({ endpoint: collector, retryBaseMs: 200, retryCapMs: 2000, ...options });
      window.sdk = h;
    },
    { collector: env.stack.collector.url, options },
  );
  return page;
}

const log = (page, lesson, question, answer) =>
  page.evaluate(([l, q, a]) => window.sdk.logAnswer(l, "beginner", q, a), [lesson, question, answer]);
const pending = (page) => page.evaluate(() => window.sdk.pending());
const statuses = (page) => page.evaluate(() => window.statuses);

/** Rows whose answer starts with `prefix`, once there are at least `n`. */
async function rowsWithPrefix(env, prefix, n, describe) {
  const where = `answer LIKE '${prefix.replace(/'/g, "''")}%'`;
  return waitFor(
    async () => {
      const r = await env.stack.rows("loggingtable", where);
      return r.length >= n && r;
    },
    { timeoutMs: 60_000, describe: async () => `${describe}: ${compareAnswers(await env.stack.rows("loggingtable", where), [])}` },
  );
}

/** Every POST that reached the collector (failed offline attempts excluded), with the event ids it carries. */
function recordPosts(context, collectorUrl) {
  const posts = [];
  context.on("requestfinished", (req) => {
    if (req.method() !== "POST" || !req.url().startsWith(collectorUrl)) return;
    const key = req.headers()["idempotency-key"];
    const body = req.postData();
    const ids = key ? [key] : body ? JSON.parse(body).events.map((e) => e.id) : [];
    posts.push({ url: req.url(), ids });
  });
  return posts;
}

test("answers with any characters arrive byte for byte, with their client time", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { page } = await browserWithSdk(t, env);
  const answers = ["e2e-bytes / ? # % & + \n 😀 naïve \"q\" );", "e2e-bytes 2 %2F..%2F"];
  for (const a of answers) assert.equal(await log(page, "gateway", "1A", a), "sent");
  const rows = await rowsWithPrefix(env, "e2e-bytes", 2, "answers");
  assert.deepEqual(rows.map((r) => r.answer).sort(), [...answers].sort());
  const ua = await page.evaluate(() => navigator.userAgent);
  assert.match(rows[0].user_agent, /^[0-9a-f]{32}$/, "default user agent is an MD5 hex");
  assert.notEqual(rows[0].user_agent, ua);
  assert.ok(rows.every((r) => r.event_id && r.client_time), "event id and client time stored");
});

test("events persist across a reload and are delivered by the next page load", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env);
  // The collector is unreachable for POSTs only, so the page itself can still reload.
  const block = (route) => (route.request().method() === "POST" ? route.abort("internetdisconnected") : route.continue());
  await context.route(`${env.stack.collector.url}/**`, block);
  const answers = ["e2e-reload one", "e2e-reload two"];
  for (const a of answers) assert.equal(await log(page, "gateway", "2B", a), "queued");
  const stored = await storedEvents(page);
  for (const a of answers) assert.ok(stored.includes(a), `${a} stored in localStorage`);
  await page.close();
  await context.unroute(`${env.stack.collector.url}/**`, block);

  const next = await openSdkPage(context, env);
  const rows = await rowsWithPrefix(env, "e2e-reload", 2, "after reload");
  assert.equal(compareAnswers(rows, answers), "");
  await waitFor(async () => (await pending(next)) === 0, { describe: "queue empties after delivery" });
});

test("offline then online delivers everything exactly once", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env);
  const posts = recordPosts(context, env.stack.collector.url);
  await context.setOffline(true);
  const answers = Array.from({ length: 7 }, (_, i) => `e2e-offline ${i} /?#%\n`);
  for (const a of answers) assert.equal(await log(page, "big-data", "3C", a), "queued");
  assert.equal(await pending(page), 7);
  const queued = (await statuses(page)).filter((s) => s.kind === "queued");
  assert.equal(queued.length, 7, "each answer reported as queued");
  assert.equal((await env.stack.rows("loggingtable", "answer LIKE 'e2e-offline%'")).length, 0, "nothing arrived while offline");
  await context.setOffline(false); // the `online` event triggers delivery; no flush() call
  const rows = await rowsWithPrefix(env, "e2e-offline", 7, "after going online");
  assert.equal(compareAnswers(rows, answers), "");
  await waitFor(async () => (await pending(page)) === 0, { describe: "queue empties" });
  assert.deepEqual(await page.evaluate(() => window.sdk.flush()), { sent: 0, pending: 0 });
  assert.equal((await env.stack.rows("loggingtable", "answer LIKE 'e2e-offline%'")).length, 7, "no duplicates later");
  assert.ok(posts.some((p) => p.url.endsWith("/batch")), "a backlog goes through /batch");
});

test("a backlog larger than batchSize goes out through /batch in chunks, oldest first", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env, { batchSize: 40 });
  const posts = recordPosts(context, env.stack.collector.url);
  await context.setOffline(true);
  const answers = Array.from({ length: 95 }, (_, i) => `e2e-backlog ${String(i).padStart(3, "0")}`);
  const deliveries = await page.evaluate((list) => Promise.all(list.map((a) => window.sdk.logAnswer("big-data", "advanced", "8H", a))), answers);
  assert.ok(deliveries.every((d) => d === "queued"));
  await context.setOffline(false);
  const rows = await rowsWithPrefix(env, "e2e-backlog", 95, "backlog");
  assert.equal(compareAnswers(rows, answers), "");
  assert.deepEqual(rows.map((r) => r.answer), answers, "stored in the order answered (oldest first)");
  const batches = posts.filter((p) => p.url.endsWith("/batch"));
  assert.ok(batches.length >= 3, `95 events in chunks of at most 40: ${batches.length} batches`);
  assert.ok(batches.every((b) => b.ids.length <= 40));
});

test("over maxQueue the oldest are dropped, reported, and counted at the collector", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const metric = async () => {
    const text = await (await fetch(`${env.stack.collector.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith("hourofci_client_dropped_events_total"));
    return line ? Number(line.split(/\s+/).pop()) : 0;
  };
  const before = await metric();
  const { context, page } = await browserWithSdk(t, env, { maxQueue: 3 });
  await context.setOffline(true);
  const answers = Array.from({ length: 5 }, (_, i) => `e2e-drop ${i}`);
  for (const a of answers) assert.equal(await log(page, "gateway", "9I", a), "queued");
  assert.equal(await pending(page), 3);
  const dropped = (await statuses(page)).filter((s) => s.kind === "dropped");
  assert.deepEqual(dropped.map((d) => [d.count, d.pending]), [[1, 3], [1, 3]]);
  await context.setOffline(false);
  const rows = await rowsWithPrefix(env, "e2e-drop", 3, "newest three");
  assert.equal(compareAnswers(rows, answers.slice(2)), "", "the newest three are kept");
  await waitFor(async () => (await metric()) >= before + 2, { describe: async () => `dropped metric ${await metric()}, was ${before}` });
});

test("pending events go out with keepalive when the page is closed", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  // Retries a minute apart: after the first failure nothing but pagehide sends again.
  const { context, page } = await browserWithSdk(t, env, { retryBaseMs: 60_000, retryCapMs: 60_000 });
  const block = (route) => (route.request().method() === "POST" ? route.abort("internetdisconnected") : route.continue());
  await context.route(`${env.stack.collector.url}/**`, block);
  assert.equal(await log(page, "gateway", "1B", "e2e-pagehide"), "queued");
  await context.unroute(`${env.stack.collector.url}/**`, block);
  // No flush and no other page: only the pagehide/visibilitychange send can deliver it.
  await page.close({ runBeforeUnload: true });
  const rows = await rowsWithPrefix(env, "e2e-pagehide", 1, "sent on pagehide");
  assert.equal(rows.length, 1);
});

test("a database outage (503) is retried until it recovers", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env);
  const statusesSeen = [];
  context.on("response", (r) => {
    if (r.request().method() === "POST" && r.url().startsWith(env.stack.collector.url)) statusesSeen.push(r.status());
  });
  await env.stack.pg.command("stop");
  let restarted = false;
  t.after(async () => {
    if (!restarted) await env.stack.pg.command("start");
  });
  assert.equal(await log(page, "geospatial-data", "4D", "e2e-outage 1"), "queued");
  assert.ok(statusesSeen.includes(503), `the collector answered 503 while its database was down: ${statusesSeen}`);
  await env.stack.pg.command("start");
  restarted = true;
  const rows = await rowsWithPrefix(env, "e2e-outage", 1, "after the database came back");
  assert.equal(rows.length, 1);
  await waitFor(async () => (await pending(page)) === 0, { describe: "queue empties" });
});

test("an invalid event is rejected, reported through onStatus and never retried", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env);
  const posts = recordPosts(context, env.stack.collector.url);
  assert.equal(await log(page, "nope", "1A", "e2e-invalid"), "rejected");
  const rejected = (await statuses(page)).filter((s) => s.kind === "rejected");
  assert.equal(rejected.length, 1);
  assert.ok(rejected[0].id && rejected[0].reason, `reason given: ${JSON.stringify(rejected[0])}`);
  assert.equal(rejected[0].pending, 0);
  assert.equal(await pending(page), 0);
  assert.deepEqual(await page.evaluate(() => window.sdk.flush()), { sent: 0, pending: 0 });
  // A valid answer afterwards goes out alone: the rejected one is not resent with it.
  assert.equal(await log(page, "gateway", "1A", "e2e-invalid-then-valid"), "sent");
  assert.equal(posts.filter((p) => p.ids.includes(rejected[0].id)).length, 1, "sent once, never retried");
  assert.equal((await env.stack.rows("loggingtable", "answer = 'e2e-invalid'")).length, 0);
});

test("full localStorage: answers are kept in memory and still delivered", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page } = await browserWithSdk(t, env);
  const filled = await page.evaluate(fillStorage);
  assert.ok(filled > 1, "localStorage filled up");
  await context.setOffline(true);
  // Kept only while this page stays open, and the SDK says so (not "queued": not on this device).
  for (const a of ["e2e-full 1", "e2e-full 2"]) assert.equal(await log(page, "gateway", "5E", a), "queued-memory");
  const kinds = (await statuses(page)).map((s) => s.kind);
  assert.ok(kinds.includes("queued-memory") && !kinds.includes("queued"), `statuses: ${kinds}`);
  assert.equal(await pending(page), 2);
  assert.equal(await storedEvents(page), "", "nothing fitted in localStorage");
  await context.setOffline(false);
  const rows = await rowsWithPrefix(env, "e2e-full", 2, "full storage");
  assert.equal(compareAnswers(rows, ["e2e-full 1", "e2e-full 2"]), "");
  assert.equal(await log(page, "gateway", "5E", "e2e-full 3"), "sent");
});

test("missing localStorage (disabled): the SDK still works", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const disable = () =>
    Object.defineProperty(window, "localStorage", {
      get() {
        throw new DOMException("The user denied storage", "SecurityError");
      },
    });
  const { context, page } = await browserWithSdk(t, env, {}, { initScript: disable });
  await assert.rejects(page.evaluate(() => localStorage), /SecurityError|denied/, "storage really is disabled");
  assert.equal(await log(page, "gateway", "6F", "e2e-nostorage 1"), "sent");
  const rows = await rowsWithPrefix(env, "e2e-nostorage", 1, "without localStorage");
  assert.equal(rows.length, 1);
  assert.deepEqual(context.pageErrors, []);
});

for (const locks of ["Web Locks", "localStorage lease"]) {
  test(`two tabs do not double-send (${locks})`, async (t) => {
    const env = await stackFor(t);
    if (!env) return;
    // Without Web Locks the SDK falls back to a lease in localStorage.
    const noLocks = () => Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined });
    const { context, page: tabA } = await browserWithSdk(t, env, {}, locks === "Web Locks" ? {} : { initScript: noLocks });
    const tabB = await openSdkPage(context, env);
    assert.equal(await tabB.evaluate(() => "locks" in navigator && !!navigator.locks), locks === "Web Locks");
    const posts = recordPosts(context, env.stack.collector.url);
    const prefix = `e2e-tabs ${locks}`;
    await context.setOffline(true);
    const answers = [];
    for (let i = 0; i < 4; i++) {
      for (const [name, tab] of [["A", tabA], ["B", tabB]]) {
        const a = `${prefix} ${name}${i}`;
        answers.push(a);
        assert.equal(await log(tab, "spatial-thinking", "7G", a), "queued");
      }
    }
    assert.equal(await pending(tabA), 8, "one queue shared by both tabs");
    await context.setOffline(false); // both tabs see `online` and both try to flush
    const rows = await rowsWithPrefix(env, prefix, 8, "two tabs");
    assert.equal(compareAnswers(rows, answers), "");
    await waitFor(async () => (await pending(tabA)) === 0 && (await pending(tabB)) === 0, { describe: "both tabs see an empty queue" });
    const sends = new Map();
    for (const p of posts) for (const id of p.ids) sends.set(id, (sends.get(id) || 0) + 1);
    const twice = [...sends].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], "no event was sent by both tabs");
    assert.equal(sends.size, 8);
  });
}

// The single-key queue lost answers here: two tabs (two renderer processes) appending
// at the same moment, each rewriting the shared queue from a stale copy.
test("two tabs logging at the same moment: every answer arrives exactly once", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const { context, page: tabA } = await browserWithSdk(t, env);
  const tabB = await openSdkPage(context, env);
  const prefix = "e2e-burst";
  const burst = (tab, name, n) =>
    tab.evaluate(
      ([p, name, n]) => Promise.all(Array.from({ length: n }, (_, i) => window.sdk.logAnswer("spatial-thinking", "beginner", "7G", `${p} ${name}${i}`))),
      [prefix, name, n],
    );
  const answers = [];
  for (const [phase, offline] of [["online", false], ["offline", true]]) {
    await context.setOffline(offline);
    for (let round = 0; round < 3; round++) {
      const n = 8;
      for (const name of ["A", "B"]) for (let i = 0; i < n; i++) answers.push(`${prefix} ${phase}${round}${name}${i}`);
      await Promise.all([burst(tabA, `${phase}${round}A`, n), burst(tabB, `${phase}${round}B`, n)]);
    }
  }
  await context.setOffline(false);
  const rows = await rowsWithPrefix(env, prefix, answers.length, "burst from two tabs");
  await waitFor(async () => (await pending(tabA)) === 0 && (await pending(tabB)) === 0, { describe: "both tabs see an empty queue" });
  const final = await env.stack.rows("loggingtable", `answer LIKE '${prefix}%'`);
  assert.equal(compareAnswers(final, answers), "", "each answer exactly once");
  const lost = [...(await statuses(tabA)), ...(await statuses(tabB))].filter((s) => s.kind === "dropped" || s.kind === "rejected");
  assert.deepEqual(lost, []);
  assert.equal(rows.length, answers.length);
});
