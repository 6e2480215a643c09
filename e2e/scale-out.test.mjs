// The SDK in Chromium logs a steady stream through HAProxy to two collectors, which
// write through PgBouncer (transaction pooling) to PostgreSQL; all from the files in
// examples/scale-out/. Meanwhile one collector is SIGKILLed and restarted, PgBouncer is
// restarted, PostgreSQL is restarted, and both collectors get a rolling SIGTERM restart.
// Afterwards every answer is in the table exactly once and the SDK holds nothing.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import {
  requireAll, repoRoot, PgCluster, Collector, serveStatic, prepareExamples, freePort, tmpDir,
  launchBrowser, openAnimation, answerFreeText, waitFor, compareAnswers,
} from "./lib/harness.mjs";

const balancersBin = [process.env.HOURCI_BALANCERS_BIN, path.join(repoRoot, "target/debug/balancers")].filter(Boolean).find((p) => fs.existsSync(p)) || null;

/** testkit's `balancers` (PgBouncer and HAProxy); same line protocol as pgcluster. */
function startBalancers(bin) {
  const child = spawn(bin, [], { stdio: ["pipe", "pipe", "pipe"] });
  const lines = [];
  readline.createInterface({ input: child.stderr }).on("line", (l) => lines.push(l));
  child.logTail = (n = 40) => lines.slice(-n).join("\n");
  return new PgCluster(child);
}

test("SDK through HAProxy, two collectors, PgBouncer: kill, restarts and a rolling deploy lose and double nothing", { timeout: 300_000 }, async (t) => {
  const prereq = requireAll(t, ["collector", "pgcluster", "sdk", "chromium", "playwright", "balancers"], {
    balancers: { path: balancersBin, how: "HOURCI_BALANCERS_BIN (or `cargo build -p testkit`), Debian packages haproxy and pgbouncer" },
  });
  if (!prereq) return;
  const cleanups = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  const pg = await PgCluster.start(prereq.pgcluster);
  cleanups.push(() => pg.stop());
  const name = "e2e_scale";
  const adminUrl = await pg.command(`db ${name}`);
  const writer = `${name}_writer`;
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  await pg.command(`role ${writer} ${password}`);
  await Collector.migrate(prereq.collector, adminUrl, writer);
  // PgBouncer's auth_file: the writer's SCRAM secret, as examples/scale-out/pgbouncer.ini says.
  const secret = await pg.command(`psql postgres SELECT rolpassword FROM pg_authid WHERE rolname = '${writer}'`);
  const dir = tmpDir("scale");
  cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, "userlist.txt"), `"${writer}" "${secret}"\n`);
  fs.chmodSync(dir, 0o755);

  const balancers = startBalancers(prereq.balancers);
  cleanups.push(() => balancers.stop());
  const bouncerPort = await balancers.command(`pgbouncer ${pg.port} ${path.join(dir, "userlist.txt")}`);

  // The lesson pages are served once HAProxy's address is known: the animation sends only to
  // collectors on its author's list, so the copy of examples/ lists HAProxy (prepareExamples).
  const pagesPort = await freePort();
  const pagesUrl = `http://127.0.0.1:${pagesPort}`;
  const collectors = [];
  for (let i = 0; i < 2; i++) {
    const c = new Collector({
      bin: prereq.collector,
      port: await freePort(),
      databaseUrl: `postgres://${writer}:${password}@127.0.0.1:${bouncerPort}/${name}`,
      allowOrigins: [pagesUrl],
      sdkDir: prereq.sdk,
      extraArgs: ["--database-pool-mode", "transaction", "--shutdown-drain-ms", "3000", "--trusted-proxy", "127.0.0.1"],
    });
    cleanups.push(() => c.kill());
    await c.start();
    collectors.push(c);
  }
  const endpoint = `http://127.0.0.1:${await balancers.command(`haproxy ${collectors.map((c) => c.port).join(" ")}`)}`;
  const examples = prepareExamples(prereq.sdk, [endpoint]);
  cleanups.push(async () => fs.rmSync(examples, { recursive: true, force: true }));
  const pages = await serveStatic(examples, pagesPort);
  cleanups.push(() => pages.close());
  const healthy = (url) => waitFor(async () => (await fetch(`${url}/healthz`)).ok, { timeoutMs: 60_000, describe: `${url}/healthz never answered 200` });
  await healthy(endpoint);

  const { context, close } = await launchBrowser(prereq);
  cleanups.push(close);
  const q = new URLSearchParams({ endpoint, lesson: "geospatial-data", level: "advanced" });
  const page = await openAnimation(context, `${pages.url}/animation/index.html?${q}`);
  const answers = [];
  const answer = async (k) => {
    for (let i = 0; i < k; i++) {
      const a = `scale-out answer ${answers.length + 1}`;
      answers.push(a);
      await answerFreeText(page, a);
    }
  };

  await answer(3);
  await collectors[0].kill();
  await answer(3);
  await collectors[0].start();
  await healthy(collectors[0].url);
  await answer(3);
  await balancers.command("pgbouncer-restart");
  await answer(3);
  await pg.command("restart");
  await answer(3);
  for (const c of collectors) {
    const stopped = c.stop(); // SIGTERM: /healthz 503, drain 3 s, then exit
    await answer(2);
    await stopped;
    await c.start();
    await healthy(c.url);
    await new Promise((r) => setTimeout(r, 1500)); // HAProxy's rise 2 x 500 ms
    await answer(2);
  }

  await waitFor(async () => (await page.evaluate(() => window.hourofci.pending())) === 0, {
    timeoutMs: 120_000,
    describe: async () => `the SDK still holds ${await page.evaluate(() => window.hourofci.pending())} answers; stored: ${compareAnswers(await pg.rows(name, "loggingtable"), answers)}`,
  });
  const rows = await pg.rows(name, "loggingtable");
  assert.equal(compareAnswers(rows, answers), "", "every answer exactly once, nothing else");
  assert.equal(new Set(rows.map((r) => r.event_id)).size, rows.length, "no event id twice");
  assert.deepEqual(context.pageErrors, [], "no error in the page");
});
