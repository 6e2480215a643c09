// The SDK's promise under a hostile network (issue 9, "Proof"): an answer, once
// `logAnswer` has it, reaches the collector's table exactly once, whatever stands
// between the browser and the collector. Real Chromium, the real collector on a real
// PostgreSQL, real HTTP on loopback; the "network" is a small proxy (hostile-proxy.mjs)
// that answers like a reverse proxy, a campus gateway, a captive portal or a load
// balancer would, then lets traffic through.
//
// Run (after `cargo xtask build-sdk`, `cargo build -p hourofci-collector -p testkit --bins`):
//   node --test --test-concurrency=1 sdk-wasm/e2e/hostile-network.test.mjs
// with the variables of sdk.test.mjs (HOURCI_COLLECTOR_BIN, HOURCI_PGCLUSTER_BIN,
// HOURCI_SDK_DIST, CHROMIUM, CI).

import { test } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, freePort, waitFor, compareAnswers, Collector } from "../../e2e/lib/harness.mjs";
import { sharedStack, fillStorage } from "./shared-stack.mjs";
import { startProxy, HOSTILE } from "./hostile-proxy.mjs";

const EVENT_PREFIX = "hourofci-log:ev:";
/** Short retries: a hostile phase is seen and left within seconds. */
const FAST_RETRY = { retryBaseMs: 100, retryCapMs: 1000 };

const stackFor = sharedStack("sdk_hostile");

/**
 * A page of the test origin that loaded the SDK from the collector and initialised it with
 * `endpoint`. `prepare: [fn, arg]` runs in the page first (e.g. to set up its localStorage:
 * in the same page, because another renderer's localStorage writes arrive a moment late).
 */
async function openSdkPage(context, env, endpoint, options = {}, prepare = null) {
  const page = await context.newPage();
  await page.goto(`${env.stack.sdkPages.url}/index.html`);
  if (prepare) page.prepared = await page.evaluate(...prepare);
  await page.evaluate(
    async ({ sdkFrom, endpoint, options }) => {
      const h = await import(`${sdkFrom}/sdk/hourofci-log.js`);
      window.statuses = [];
      h.onStatus((e) => window.statuses.push(e));
      await h.init({ endpoint, ...options });
      window.sdk = h;
    },
    { sdkFrom: env.stack.collector.url, endpoint, options: { ...FAST_RETRY, ...options } },
  );
  return page;
}

async function freshBrowser(t, env) {
  const { context, close } = await launchBrowser(env.prereq);
  t.after(close);
  return context;
}

const log = (page, answer) => page.evaluate((a) => window.sdk.logAnswer("gateway", "beginner", "1A", a), answer);
/** Logs all `answers` in one go: they are queued together, so they leave through `/batch`. */
const logTogether = (page, answers) =>
  page.evaluate((list) => Promise.all(list.map((a) => window.sdk.logAnswer("gateway", "beginner", "1A", a))), answers);
const pending = (page) => page.evaluate(() => window.sdk.pending());
const statuses = (page) => page.evaluate(() => window.statuses);
const sqlText = (s) => `'${s.replace(/'/g, "''")}'`;
const rowsOf = (rows, agent) => rows("loggingtable", `user_agent = ${sqlText(agent)}`);
/** A user agent of its own for one test, so its rows are told apart from every other test's. */
const agentFor = (name) => `e2e-${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}-${Math.random().toString(36).slice(2, 8)}`;
const brief = (list) => JSON.stringify(list.map((s) => [s.kind, s.reason || s.count || ""].filter(Boolean)));

/**
 * Waits until the collector holds a row for each of `answers` or the pages have had nothing
 * left to send for several polls in a row (then more waiting cannot help: a lost answer
 * fails soon instead of at the deadline), and returns the rows. `rows` reads one collector's table.
 */
async function settledRows(rows, agent, answers, pages) {
  let emptyPolls = 0;
  await waitFor(
    async () => {
      if ((await rowsOf(rows, agent)).length >= answers.length) return true;
      emptyPolls = (await Promise.all(pages.map(pending))).every((n) => n === 0) ? emptyPolls + 1 : 0;
      return emptyPolls >= 5;
    },
    { timeoutMs: 60_000, describe: async () => `rows so far: ${compareAnswers(await rowsOf(rows, agent), answers)}; pending ${await Promise.all(pages.map(pending))}` },
  );
  // Whatever is still queued goes out now; afterwards nothing is left to duplicate.
  await waitFor(async () => (await Promise.all(pages.map(pending))).every((n) => n === 0), {
    timeoutMs: 60_000,
    describe: async () => `queues never emptied: pending ${await Promise.all(pages.map(pending))}`,
  });
  return rowsOf(rows, agent);
}

// ---------------------------------------------------------------- 1. something in the middle answers for a while

for (const [mode, refusal] of Object.entries(HOSTILE)) {
  test(`a proxy answering ${mode} for a while: every answer logged meanwhile arrives exactly once`, async (t) => {
    const env = await stackFor(t);
    if (!env) return;
    const proxy = await startProxy(env.stack.collector.url);
    t.after(proxy.close);
    const agent = agentFor(`hostile ${refusal.status}`);
    const context = await freshBrowser(t, env);
    const page = await openSdkPage(context, env, proxy.url, { userAgent: agent });

    proxy.hostile = refusal;
    const singles = [`${mode}: single 1`, `${mode}: single 2`];
    const together = Array.from({ length: 5 }, (_, i) => `${mode}: together ${i}`);
    const deliveries = [];
    for (const a of singles) deliveries.push(await log(page, a));
    deliveries.push(...(await logTogether(page, together)));
    const answers = [...singles, ...together];

    // Hostile until the proxy itself has refused a request carrying each of the answers,
    // and one of them a second time (a retry met the same box), unless nothing is left
    // to retry (then the answers are gone, and the check below says so). A 413 makes the
    // SDK send fewer events at a time, oldest first: once it is down to one event per
    // request and that request was refused twice, the younger answers are held back
    // behind it (whether the first batch carried them depends on how the flushes fell),
    // so that is hostile enough too.
    await waitFor(
      async () => {
        const refusedPosts = proxy.log.filter((e) => e.by === "proxy" && e.method === "POST");
        const refused = refusedPosts.flatMap((e) => e.ids);
        const seen = new Set(refused);
        const cutToOne = refusal.status === 413 && refusedPosts.filter((e) => e.ids.length === 1).length >= 2;
        return (seen.size >= answers.length || cutToOne) && (refused.length > seen.size || (await pending(page)) === 0);
      },
      { timeoutMs: 60_000, describe: () => `the proxy never refused all ${answers.length} answers: ${JSON.stringify(proxy.log.map((e) => [e.method, e.status, e.ids.length]))}` },
    );
    const duringHostile = await statuses(page);
    proxy.hostile = null;

    const rows = await settledRows(env.stack.rows, agent, answers, [page]);
    assert.equal(
      compareAnswers(rows, answers),
      "",
      `answers a middle box answered with "${mode}" (not the collector's verdict) must be kept and delivered; statuses while hostile: ${brief(duringHostile)}`,
    );
    assert.deepEqual(deliveries, answers.map(() => "queued"), "while the proxy refuses, logAnswer reports queued (neither sent nor rejected)");
    const untrue = duringHostile.filter((s) => s.kind === "rejected" || s.kind === "sent" || s.kind === "dropped");
    assert.deepEqual(untrue, [], "no sent/rejected/dropped status for an answer only a middle box refused");
    assert.ok(proxy.log.some((e) => e.by === "collector" && e.method === "POST" && e.status < 300), "delivered through the proxy once it let traffic through");
    assert.deepEqual(context.pageErrors, []);
  });
}

test("a proxy whose body limit is smaller than the collector's never blocks delivery (smaller batches)", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const proxy = await startProxy(env.stack.collector.url);
  t.after(proxy.close);
  // One event per /batch fits under the limit, two do not; the limit is never lifted.
  proxy.bodyLimit = 800;
  const agent = agentFor("body limit");
  const context = await freshBrowser(t, env);
  const page = await openSdkPage(context, env, proxy.url, { userAgent: agent });
  // "" and "." can only travel in a /batch body.
  const answers = ["", ".", ...Array.from({ length: 4 }, (_, i) => `body limit ${i} ${"x".repeat(300)}`)];
  await context.setOffline(true);
  const deliveries = await logTogether(page, answers);
  assert.deepEqual(deliveries, answers.map(() => "queued"));
  await context.setOffline(false);
  const rows = await settledRows(env.stack.rows, agent, answers, [page]);
  const all = await statuses(page);
  assert.equal(compareAnswers(rows, answers), "", `statuses: ${brief(all)}`);
  assert.ok(proxy.log.some((e) => e.status === 413 && e.by === "proxy"), "the proxy did refuse a batch over its limit");
  assert.deepEqual(all.filter((s) => s.kind === "rejected" || s.kind === "dropped"), []);
});

test("the collector stored them but its answers were lost on the way back: each answer exactly once", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const proxy = await startProxy(env.stack.collector.url);
  t.after(proxy.close);
  const agent = agentFor("lost replies");
  const context = await freshBrowser(t, env);
  const page = await openSdkPage(context, env, proxy.url, { userAgent: agent });
  proxy.loseReplies = true;
  const answers = ["lost reply single", ...Array.from({ length: 4 }, (_, i) => `lost reply together ${i}`)];
  const deliveries = [await log(page, answers[0]), ...(await logTogether(page, answers.slice(1)))];
  // Until the collector has handled every answer at least once (and its reply was cut).
  await waitFor(async () => new Set(proxy.log.filter((e) => e.lost).flatMap((e) => e.ids)).size >= answers.length, {
    timeoutMs: 60_000,
    describe: () => `not every answer reached the collector: ${JSON.stringify(proxy.log.map((e) => [e.method, e.status, e.ids.length, !!e.lost]))}`,
  });
  assert.equal((await rowsOf(env.stack.rows, agent)).length, answers.length, "the collector stored each one already");
  proxy.loseReplies = false;
  const rows = await settledRows(env.stack.rows, agent, answers, [page]);
  assert.equal(compareAnswers(rows, answers), "", "a resend after a lost reply is a duplicate, not a second row");
  assert.deepEqual(deliveries, answers.map(() => "queued"), "no reply: queued, not sent");
});

// ---------------------------------------------------------------- 2. values the URL path cannot carry

test('answers ".", "..", "", " ", "./a", "a/.." logged one at a time arrive byte for byte', async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const agent = agentFor("dots");
  const context = await freshBrowser(t, env);
  const page = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent });
  const answers = [".", "..", "", " ", "./a", "a/.."];
  const deliveries = [];
  for (const a of answers) deliveries.push(await log(page, a));
  const rows = await settledRows(env.stack.rows, agent, answers, [page]);
  assert.equal(compareAnswers(rows, answers), "", `statuses: ${brief(await statuses(page))}`);
  assert.deepEqual(rows.map((r) => r.answer).sort(), [...answers].sort(), "exactly these values, byte for byte");
  assert.deepEqual(deliveries, answers.map(() => "sent"));
});

// ---------------------------------------------------------------- 3. one origin, two collectors

/** A second database in the same PostgreSQL cluster, with its own collector. */
async function secondCollector(t, env, name) {
  const { pg } = env.stack;
  const adminUrl = await pg.command(`db ${name}`);
  const writer = `${name}_writer`;
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  await pg.command(`role ${writer} ${password}`);
  await Collector.migrate(env.prereq.collector, adminUrl, writer);
  const collector = new Collector({
    bin: env.prereq.collector,
    port: await freePort(),
    databaseUrl: `postgres://${writer}:${password}@127.0.0.1:${pg.port}/${name}`,
    allowOrigins: [env.stack.sdkPages.url],
    sdkDir: env.prereq.sdk,
  });
  t.after(() => collector.stop());
  await collector.start();
  return { collector, rows: (table, where) => pg.rows(name, table, where) };
}

test("two pages of one origin with two collectors: each collector receives only its own events, exactly once", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const other = await secondCollector(t, env, "sdk_hostile_b");
  const agent = agentFor("two collectors");
  const context = await freshBrowser(t, env);
  const pageA = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent });
  const pageB = await openSdkPage(context, env, other.collector.url, { userAgent: agent });
  const mine = { A: [], B: [] };
  // Queued together in the origin's one localStorage, then both pages flush at once.
  await context.setOffline(true);
  for (let i = 0; i < 3; i++) {
    for (const [name, page] of [["A", pageA], ["B", pageB]]) {
      const a = `collector ${name} offline ${i}`;
      mine[name].push(a);
      assert.equal(await log(page, a), "queued");
    }
  }
  await context.setOffline(false);
  // And online: each page sends at once, with the other's events still around.
  for (const [name, page] of [["B", pageB], ["A", pageA]]) {
    const a = `collector ${name} online`;
    mine[name].push(a);
    await log(page, a);
  }
  const total = mine.A.length + mine.B.length;
  await waitFor(
    async () =>
      (await rowsOf(env.stack.rows, agent)).length + (await rowsOf(other.rows, agent)).length >= total ||
      ((await pending(pageA)) === 0 && (await pending(pageB)) === 0),
    { timeoutMs: 60_000, describe: "every answer arrived somewhere, or nothing is left to send" },
  );
  await waitFor(async () => (await pending(pageA)) === 0 && (await pending(pageB)) === 0, { timeoutMs: 60_000, describe: "both queues empty" });
  const [rowsA, rowsB] = [await rowsOf(env.stack.rows, agent), await rowsOf(other.rows, agent)];
  assert.equal(compareAnswers(rowsA, mine.A), "", "collector A holds exactly page A's answers");
  assert.equal(compareAnswers(rowsB, mine.B), "", "collector B holds exactly page B's answers");
});

/** What a collector behind a busy gateway answers: retried by every SDK, never a verdict. */
const UNAVAILABLE = { status: 503, headers: { "content-type": "text/plain" }, body: "Service Unavailable" };

test("a page initialised with a wrong endpoint that answers \"written\" never receives another endpoint's answers", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  // The real collector, behind a gateway that is unavailable for now...
  const gate = await startProxy(env.stack.collector.url);
  t.after(gate.close);
  // ...and a forger: answers every event as a collector that stored it would, stores nothing.
  const wrong = await startProxy(env.stack.collector.url);
  wrong.forge = true;
  t.after(wrong.close);
  const agent = agentFor("wrong endpoint");
  const context = await freshBrowser(t, env);
  const real = await openSdkPage(context, env, gate.url, { userAgent: agent });
  const wrongPage = await openSdkPage(context, env, wrong.url, { userAgent: agent });
  gate.hostile = UNAVAILABLE;
  const answers = ["meant for the real collector 1", "meant for the real collector 2", "meant for the real collector 3"];
  const deliveries = [];
  for (const a of answers) deliveries.push(await log(real, a));
  // The answers wait in the origin's storage while the page of the wrong endpoint flushes.
  await wrongPage.evaluate(() => window.sdk.flush());
  gate.hostile = null;
  await real.evaluate(() => window.sdk.flush());
  const rows = await settledRows(env.stack.rows, agent, answers, [real]);
  const stolen = wrong.log.filter((e) => e.method === "POST" && e.ids.length);
  assert.equal(compareAnswers(rows, answers), "", `answers taken by the wrong endpoint: ${stolen.length} POST(s) carrying ${stolen.flatMap((e) => e.ids).length} event(s)`);
  assert.deepEqual(stolen, [], "the wrong endpoint received none of the real collector's answers");
  assert.deepEqual(deliveries, answers.map(() => "queued"), "while the gateway is unavailable, each answer is queued");
});

test("endpoints are compared normalised: a page of the same collector spelled differently delivers the waiting answers", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const gate = await startProxy(env.stack.collector.url);
  t.after(gate.close);
  const agent = agentFor("same endpoint");
  const context = await freshBrowser(t, env);
  const port = new URL(gate.url).port;
  // Host case and a trailing slash differ: still one collector (issue 9, point 3).
  const first = await openSdkPage(context, env, `http://LocalHost:${port}/`, { userAgent: agent });
  gate.hostile = UNAVAILABLE;
  const answers = ["same endpoint 1", "same endpoint 2"];
  for (const a of answers) assert.equal(await log(first, a), "queued");
  await first.close();
  gate.hostile = null;
  // Only this page is left to send them.
  const second = await openSdkPage(context, env, `http://localhost:${port}`, { userAgent: agent });
  await second.evaluate(() => window.sdk.flush());
  const rows = await settledRows(env.stack.rows, agent, answers, [second]);
  assert.equal(compareAnswers(rows, answers), "");
});

// ---------------------------------------------------------------- answers an older SDK left behind

/** Where SDKs before per-event keys kept the whole queue (a JSON array), and events in that form. */
const LEGACY_QUEUE_KEY = "hourofci-log:queue:v1";
const legacyEvents = (agent, answers) =>
  answers.map((answer) => ({
    id: crypto.randomUUID(),
    user_agent: agent,
    lesson: "gateway",
    level: "beginner",
    question: "1A",
    answer,
    client_time: new Date().toISOString(),
    test: false,
  }));


test("answers an older SDK stored (no endpoint recorded) go to the first endpoint initialised, never to another", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const wrong = await startProxy(env.stack.collector.url);
  wrong.forge = true;
  t.after(wrong.close);
  const agent = agentFor("older sdk");
  const answers = ["left by an older SDK 1", "left by an older SDK 2"];
  const context = await freshBrowser(t, env);
  const seed = ([key, value]) => localStorage.setItem(key, value);
  const real = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent }, [seed, [LEGACY_QUEUE_KEY, JSON.stringify(legacyEvents(agent, answers))]]);
  const rows = await settledRows(env.stack.rows, agent, answers, [real]);
  const wrongPage = await openSdkPage(context, env, wrong.url, { userAgent: agent });
  await wrongPage.evaluate(() => window.sdk.flush());
  assert.equal(compareAnswers(rows, answers), "");
  assert.deepEqual(wrong.log.filter((e) => e.method === "POST"), [], "the second endpoint received nothing");
});

test("an older SDK's queue that does not fit in a full localStorage is kept until it is delivered", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  // The collector's gateway is unavailable during the first visit: nothing can be delivered then.
  const gate = await startProxy(env.stack.collector.url);
  t.after(gate.close);
  gate.hostile = UNAVAILABLE;
  const agent = agentFor("older sdk full");
  const answers = ["older SDK, full storage 1", "older SDK, full storage 2"];
  const context = await freshBrowser(t, env);
  const first = await openSdkPage(context, env, gate.url, { userAgent: agent }, [fillStorage, [LEGACY_QUEUE_KEY, JSON.stringify(legacyEvents(agent, answers))]]);
  assert.ok(first.prepared > 1, "localStorage filled up");
  await first.evaluate(() => window.sdk.flush());
  // Its events could at most be held in this page's memory: the old key must outlive the page.
  assert.ok(await first.evaluate((key) => localStorage.getItem(key) !== null, LEGACY_QUEUE_KEY), `${LEGACY_QUEUE_KEY} deleted while its events were not stored under their own keys`);
  await first.close();
  // The learner frees some space; the gateway is back.
  gate.hostile = null;
  const freeSpace = () => Object.keys(localStorage).filter((k) => k.startsWith("filler-")).forEach((k) => localStorage.removeItem(k));
  const second = await openSdkPage(context, env, gate.url, { userAgent: agent }, [freeSpace, null]);
  const rows = await settledRows(env.stack.rows, agent, answers, [second]);
  assert.equal(compareAnswers(rows, answers), "");
  assert.equal(await second.evaluate((key) => localStorage.getItem(key), LEGACY_QUEUE_KEY), null, "the old key is gone once its events are stored under their own keys");
});

test("an older SDK's queue in a localStorage that stays full is still delivered, exactly once", async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const agent = agentFor("older sdk stays full");
  const answers = ["older SDK, storage stays full 1", "older SDK, storage stays full 2"];
  const context = await freshBrowser(t, env);
  const seed = [LEGACY_QUEUE_KEY, JSON.stringify(legacyEvents(agent, answers))];
  const first = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent }, [fillStorage, seed]);
  assert.ok(first.prepared > 1, "localStorage filled up");
  const rows = await settledRows(env.stack.rows, agent, answers, [first]);
  assert.equal(compareAnswers(rows, answers), "");
  // A later page of the same origin (storage still full) may send them again: never a second row.
  await first.close();
  const again = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent });
  await again.evaluate(() => window.sdk.flush());
  await waitFor(async () => (await pending(again)) === 0, { timeoutMs: 60_000, describe: "the later page's queue empties" });
  assert.equal(compareAnswers(await rowsOf(env.stack.rows, agent), answers), "");
});

// ---------------------------------------------------------------- 4. localStorage full or disabled: honest status

test('full localStorage: the status says "kept only while this page stays open", and the answer still arrives', async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const agent = agentFor("full storage");
  const context = await freshBrowser(t, env);
  const page = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent });
  const filled = await page.evaluate(fillStorage);
  assert.ok(filled > 1, "localStorage filled up");
  await context.setOffline(true);
  const answers = ["full storage 1", "full storage 2"];
  const deliveries = [];
  for (const a of answers) deliveries.push(await log(page, a));
  const stored = await page.evaluate((prefix) => Object.keys(localStorage).filter((k) => k.startsWith(prefix)).length, EVENT_PREFIX);
  assert.equal(stored, 0, "nothing fitted in localStorage");
  const kept = (await statuses(page)).filter((s) => s.kind !== "sent");
  await context.setOffline(false);
  const rows = await settledRows(env.stack.rows, agent, answers, [page]);
  assert.equal(compareAnswers(rows, answers), "");
  assertMemoryOnly(deliveries, kept);
});

test('disabled localStorage: the status says "kept only while this page stays open", and the answer still arrives', async (t) => {
  const env = await stackFor(t);
  if (!env) return;
  const agent = agentFor("no storage");
  const context = await freshBrowser(t, env);
  await context.addInitScript(() =>
    Object.defineProperty(window, "localStorage", {
      get() {
        throw new DOMException("The user denied storage", "SecurityError");
      },
    }),
  );
  const page = await openSdkPage(context, env, env.stack.collector.url, { userAgent: agent });
  await context.setOffline(true);
  const answers = ["no storage 1", "no storage 2"];
  const deliveries = [];
  for (const a of answers) deliveries.push(await log(page, a));
  const kept = (await statuses(page)).filter((s) => s.kind !== "sent");
  await context.setOffline(false);
  const rows = await settledRows(env.stack.rows, agent, answers, [page]);
  assert.equal(compareAnswers(rows, answers), "");
  assertMemoryOnly(deliveries, kept);
});

/**
 * The SDK's report that an answer lives only in this page's memory (index.d.ts:
 * Delivery and StatusEvent kind "queued-memory"; "queued" means "kept on this device").
 */
function assertMemoryOnly(deliveries, kept) {
  assert.deepEqual(deliveries, deliveries.map(() => "queued-memory"), `logAnswer must not claim "queued" (kept on this device); statuses: ${JSON.stringify(kept)}`);
  assert.deepEqual(kept.map((s) => s.kind), deliveries.map(() => "queued-memory"), "onStatus says the same");
}
