// Shared set-up for the end-to-end tests: a real PostgreSQL cluster (testkit's
// `pgcluster`), the real collector binary, the built SDK, a static server for
// examples/, and headless Chromium through playwright-core. Nothing is mocked.

import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const examplesDir = path.join(repoRoot, "examples");
const inCI = process.env.CI === "true" || process.env.CI === "1";

// ---------------------------------------------------------------- prerequisites

function firstExisting(candidates) {
  return candidates.filter(Boolean).find((p) => fs.existsSync(p)) || null;
}

/** Where each prerequisite is, or null, with the variable that names it. */
export function locate() {
  return {
    collector: {
      path: firstExisting([
        process.env.HOURCI_COLLECTOR_BIN,
        path.join(repoRoot, "target/debug/hourofci-collector"),
      ]),
      how: "HOURCI_COLLECTOR_BIN (or `cargo build -p hourofci-collector`)",
    },
    pgcluster: {
      path: firstExisting([process.env.HOURCI_PGCLUSTER_BIN, path.join(repoRoot, "target/debug/pgcluster")]),
      how: "HOURCI_PGCLUSTER_BIN (or `cargo build -p testkit`)",
    },
    sdk: {
      path: firstExisting(
        [process.env.HOURCI_SDK_DIST, path.join(repoRoot, "js/dist")].filter(
          (d) => d && fs.existsSync(path.join(d, "hourofci-log.js")),
        ),
      ),
      how: "HOURCI_SDK_DIST with hourofci-log.js (or `cargo xtask build-sdk`)",
    },
    chromium: {
      path: firstExisting([process.env.CHROMIUM, "/usr/bin/chromium"]),
      how: "CHROMIUM (Debian package chromium)",
    },
    playwright: {
      path: loadPlaywrightPath(),
      how: "npm package playwright-core (`npm install` at the repo root, or PLAYWRIGHT_CORE_DIR)",
    },
  };
}

function loadPlaywrightPath() {
  const bases = [path.join(repoRoot, "package.json"), process.env.PLAYWRIGHT_CORE_DIR && path.join(process.env.PLAYWRIGHT_CORE_DIR, "package.json")];
  for (const base of bases.filter(Boolean)) {
    try {
      return createRequire(base).resolve("playwright-core");
    } catch {
      /* try the next place */
    }
  }
  return null;
}

/**
 * Declares a test that needs the named prerequisites. When one is missing the test is
 * skipped on a developer machine and FAILS in CI (CI=true), naming what is missing.
 */
export function requireAll(t, names, extra = {}) {
  const found = { ...locate(), ...extra };
  const missing = names.filter((n) => !found[n] || !found[n].path).map((n) => `${n}: set ${found[n].how}`);
  if (missing.length === 0) return Object.fromEntries(names.map((n) => [n, found[n].path]));
  const message = `missing prerequisite(s):\n  ${missing.join("\n  ")}`;
  if (inCI) throw new Error(message);
  t.skip(message);
  return null;
}

// ---------------------------------------------------------------- processes and ports

export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

export function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `hourofci-e2e-${prefix}-`));
}

/** Polls `check` until it returns a truthy value; on the deadline throws `describe()`. */
export async function waitFor(check, { timeoutMs = 60_000, intervalMs = 200, describe = () => "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = typeof describe === "function" ? await describe() : describe;
      throw new Error(`gave up waiting after ${timeoutMs / 1000} s: ${why}${lastError ? ` (last error: ${lastError.message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A child process whose stdout/stderr are kept (last 200 lines) for failure messages. */
function startLogged(name, bin, args, opts = {}) {
  const child = spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"], ...opts });
  const lines = [];
  const keep = (stream) =>
    readline.createInterface({ input: stream }).on("line", (l) => {
      lines.push(l);
      if (lines.length > 200) lines.shift();
      if (process.env.HOURCI_E2E_VERBOSE) console.error(`[${name}] ${l}`);
    });
  keep(child.stderr);
  child.logTail = (n = 40) => lines.slice(-n).join("\n");
  child.keepStdout = () => keep(child.stdout);
  return child;
}

// ---------------------------------------------------------------- PostgreSQL

export class PgCluster {
  static async start(bin) {
    const child = startLogged("pgcluster", bin, []);
    const pg = new PgCluster(child);
    const first = await pg.#nextLine();
    const info = JSON.parse(first);
    if (!info.port) throw new Error(`pgcluster did not start: ${first}\n${child.logTail()}`);
    pg.port = info.port;
    pg.superuserUrl = info.superuser_url;
    pg.binDir = info.bin_dir;
    return pg;
  }

  constructor(child) {
    this.child = child;
    this.waiting = [];
    this.buffered = [];
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      const next = this.waiting.shift();
      if (next) next(line);
      else this.buffered.push(line);
    });
    child.on("exit", () => this.waiting.splice(0).forEach((w) => w(JSON.stringify({ ok: false, error: "pgcluster exited" }))));
  }

  #nextLine() {
    if (this.buffered.length) return Promise.resolve(this.buffered.shift());
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** One command of pgcluster's line protocol; resolves to its result, throws its error. */
  async command(line) {
    if (line.includes("\n")) throw new Error("pgcluster commands are one line");
    const reply = this.#nextLine();
    this.child.stdin.write(line + "\n");
    const answer = JSON.parse(await reply);
    if (!answer.ok) throw new Error(`pgcluster \`${line.slice(0, 80)}\`: ${answer.error}\n${this.child.logTail()}`);
    return answer.result;
  }

  /** Runs a query as the superuser and parses its single JSON value. */
  async json(db, sql) {
    const out = await this.command(`psql ${db} ${sql}`);
    return JSON.parse(out);
  }

  /** Rows of `table` as objects, oldest id first (answers may hold newlines, so via JSON). */
  async rows(db, table, where = "true") {
    return this.json(
      db,
      `SELECT coalesce(json_agg(r ORDER BY r.id), '[]'::json) FROM (SELECT id, event_id, user_agent, lesson, lesson_level, question, answer, to_char(client_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS client_time FROM ${table} WHERE ${where}) r`,
    );
  }

  async stop() {
    this.child.stdin.end();
    if (this.child.exitCode === null) await once(this.child, "exit");
  }
}

// ---------------------------------------------------------------- collector

export class Collector {
  constructor({ bin, port, databaseUrl, allowOrigins, sdkDir, extraArgs = [] }) {
    Object.assign(this, { bin, port, databaseUrl, allowOrigins, sdkDir, extraArgs });
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
  }

  static async migrate(bin, adminUrl, writerRole) {
    const child = startLogged("migrate", bin, ["migrate", "--database-url", adminUrl, "--writer-role", writerRole]);
    child.keepStdout();
    const [code] = await once(child, "exit");
    if (code !== 0) throw new Error(`hourofci-collector migrate exited with ${code}:\n${child.logTail()}`);
  }

  async start() {
    const args = ["serve", "--bind", `127.0.0.1:${this.port}`, "--database-url", this.databaseUrl];
    if (this.sdkDir) args.push("--sdk-dir", this.sdkDir);
    for (const origin of this.allowOrigins) args.push("--allow-origin", origin);
    args.push(...this.extraArgs);
    this.child = startLogged("collector", this.bin, args, { env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" } });
    this.child.keepStdout();
    let gone = false;
    const exited = once(this.child, "exit").then(([code]) => {
      gone = true;
      throw new Error(`collector exited with ${code} while starting:\n${this.child.logTail()}`);
    });
    // `GET /` answers as soon as it listens, even before the database is reachable.
    await Promise.race([
      exited,
      waitFor(async () => gone || (await fetch(`${this.url}/`)).ok, {
        timeoutMs: 30_000,
        describe: () => `collector on ${this.url} never answered GET /:\n${this.child.logTail()}`,
      }),
    ]);
    exited.catch(() => {});
  }

  /** SIGKILL: no graceful shutdown, in-flight requests are cut. */
  async kill() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGKILL");
    await exited;
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGTERM");
    await exited;
  }

  logTail(n) {
    return this.child ? this.child.logTail(n) : "";
  }
}

// ---------------------------------------------------------------- static pages

const MIME = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".json": "application/json", ".wasm": "application/wasm" };

/** Serves `root` on 127.0.0.1:port, the way a lesson host serves the animation. */
export async function serveStatic(root, port) {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = path.join(root, path.normalize(rel));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(404).end("not found");
        return;
      }
      res.writeHead(200, { "content-type": MIME[path.extname(file)] || "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    });
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * A copy of examples/ as a lesson host would deploy it: the SDK in the animation's own
 * folder (animation/sdk/, as `cargo xtask build-sdk --out` writes it) and `endpoints`
 * added to the page's allowed collectors (hourofci-endpoints and CSP connect-src), as
 * the lesson author does for their collector. Returns the copy's path.
 */
export function prepareExamples(sdkDir, endpoints) {
  const dir = tmpDir("examples");
  fs.cpSync(examplesDir, dir, { recursive: true, filter: (src) => !src.startsWith(path.join(examplesDir, "animation/sdk")) });
  allowEndpoints(path.join(dir, "animation"), sdkDir, endpoints);
  return dir;
}

/** Puts the SDK into an animation folder and adds `endpoints` to the page's allowed collectors. */
export function allowEndpoints(animationDir, sdkDir, endpoints) {
  fs.mkdirSync(path.join(animationDir, "sdk"), { recursive: true });
  for (const f of ["hourofci-log.js", "hourofci_sdk.js", "hourofci_sdk_bg.wasm"]) fs.copyFileSync(path.join(sdkDir, f), path.join(animationDir, "sdk", f));
  const page = path.join(animationDir, "index.html");
  const extra = endpoints.join(" ");
  const html = fs
    .readFileSync(page, "utf8")
    .replace(/(<meta name="hourofci-endpoints" content="[^"]*)"/, `$1 ${extra}"`)
    .replace(/(<meta http-equiv="Content-Security-Policy" content="[^"]*connect-src [^;"]*)/, `$1 ${extra}`);
  if (!html.includes(`${extra}"`) || !/connect-src [^;"]* http/.test(html)) throw new Error(`could not add ${extra} to the allowed collectors of ${page}`);
  fs.writeFileSync(page, html);
}

// ---------------------------------------------------------------- browser

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** A persistent Chromium context with a fresh profile (localStorage lives there). */
export async function launchBrowser(prereq) {
  const mod = await import(pathToFileURL(prereq.playwright).href);
  const chromium = mod.chromium ?? mod.default.chromium;
  const profile = tmpDir("chromium");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: prereq.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const errors = [];
  context.on("weberror", (e) => errors.push(String(e.error())));
  context.pageErrors = errors;
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

// ---------------------------------------------------------------- the whole stack

/**
 * PostgreSQL + migrated database + writer role + collector + examples/ server (a copy
 * with the SDK in the animation's folder and this collector on its allowed list).
 * `opts.allowOrigins` adds origins beyond the examples server's; `opts.collectorSdk:
 * false` starts the collector without `--sdk-dir` (no /sdk/ at all).
 */
export async function startStack(prereq, { name, allowOrigins = [], collectorSdk = true }) {
  const cleanups = [];
  const stack = { db: name, cleanup: async () => { for (const c of cleanups.reverse()) await c().catch(() => {}); } };
  try {
    const pg = await PgCluster.start(prereq.pgcluster);
    cleanups.push(() => pg.stop());
    stack.pg = pg;
    const adminUrl = await pg.command(`db ${name}`);
    const writer = `${name}_writer`;
    const password = `pw-${Math.random().toString(36).slice(2)}`;
    await pg.command(`role ${writer} ${password}`);
    await Collector.migrate(prereq.collector, adminUrl, writer);
    stack.writerUrl = `postgres://${writer}:${password}@127.0.0.1:${pg.port}/${name}`;

    const collectorPort = await freePort();
    const examples = prepareExamples(prereq.sdk, [`http://127.0.0.1:${collectorPort}`]);
    cleanups.push(async () => fs.rmSync(examples, { recursive: true, force: true }));
    stack.examplesDir = examples;
    const pagePort = await freePort();
    stack.pages = await serveStatic(examples, pagePort);
    cleanups.push(() => stack.pages.close());

    const collector = new Collector({
      bin: prereq.collector,
      port: collectorPort,
      databaseUrl: stack.writerUrl,
      allowOrigins: [stack.pages.url, ...allowOrigins],
      sdkDir: collectorSdk ? prereq.sdk : null,
    });
    cleanups.push(() => collector.stop());
    await collector.start();
    stack.collector = collector;

    stack.animationUrl = (params = {}) => {
      const q = new URLSearchParams({ endpoint: collector.url, ...params });
      return `${stack.pages.url}/animation/index.html?${q}`;
    };
    stack.rows = (table, where) => pg.rows(name, table, where);
    return stack;
  } catch (e) {
    await stack.cleanup();
    throw e;
  }
}

// ---------------------------------------------------------------- the animation page

/** Opens the animation and waits until its SDK is loaded (fails with the page's own status). */
export async function openAnimation(context, url) {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.logging, null, { timeout: 30_000 });
  const state = await page.evaluate(() => document.body.dataset.logging);
  if (state !== "ready") {
    const status = await page.textContent("#status");
    throw new Error(`the animation page could not load the SDK from its own folder: ${status} ${context.pageErrors.join("; ")}`);
  }
  return page;
}

/** Types one free-text answer and waits until the page has handed it to the SDK. */
export async function answerFreeText(page, text) {
  const before = Number((await page.evaluate(() => document.body.dataset.logged)) || 0);
  await page.fill("#free-answer", text);
  await page.click("#free-submit");
  await page.waitForFunction((n) => Number(document.body.dataset.logged || 0) > n, before, { timeout: 30_000 });
}

/** Explains how the stored answers differ from the expected ones. */
export function compareAnswers(rows, expected) {
  const counts = new Map();
  for (const r of rows) counts.set(r.answer, (counts.get(r.answer) || 0) + 1);
  const missing = expected.filter((a) => !counts.has(a));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([a, n]) => `${JSON.stringify(a)} ×${n}`);
  const unexpected = [...counts.keys()].filter((a) => !expected.includes(a));
  const problems = [];
  if (missing.length) problems.push(`missing ${missing.length}: ${missing.map((a) => JSON.stringify(a)).join(", ")}`);
  if (duplicated.length) problems.push(`duplicated: ${duplicated.join(", ")}`);
  if (unexpected.length) problems.push(`unexpected: ${unexpected.map((a) => JSON.stringify(a)).join(", ")}`);
  return problems.join("; ");
}
