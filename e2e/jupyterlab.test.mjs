// The example lesson notebook in a real JupyterLab 4 and Notebook 7 (the project's venv,
// with the lesson kit installed from its built wheel), in headless Chromium. The collector
// serves no /sdk/ at all, and is NOT running while the learner works: the SDK comes with
// the package through the kernel, keeps every answer in the browser, and once the
// collector is back every answer is in PostgreSQL exactly once, with its client time.
// Last, the wheel installs into a fresh virtual environment and imports.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { requireAll, startStack, launchBrowser, freePort, tmpDir, waitFor, examplesDir, repoRoot } from "./lib/harness.mjs";


function jupyterBin() {
  const candidates = [process.env.HOURCI_JUPYTER_BIN, path.join(repoRoot, ".venv/bin/jupyter")].filter(Boolean);
  return {
    path: candidates.find((p) => fs.existsSync(p)) || null,
    how: "HOURCI_JUPYTER_BIN (or .venv: python3 -m venv .venv && .venv/bin/pip install -r examples/notebook/requirements.txt)",
  };
}

async function startJupyterLab(bin, { root, port, env }) {
  const home = tmpDir("jupyter-home");
  const child = spawn(
    bin,
    [
      "lab",
      "--no-browser",
      "--ip=127.0.0.1",
      `--port=${port}`,
      "--ServerApp.port_retries=0",
      "--IdentityProvider.token=",
      "--ServerApp.password=",
      // CI and this machine run as root; Jupyter refuses that without the flag.
      ...(process.getuid && process.getuid() === 0 ? ["--allow-root"] : []),
      `--ServerApp.root_dir=${root}`,
      "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      // A private home, config and runtime dir: no user settings leak in, nothing is left behind.
      env: { ...process.env, ...env, HOME: home, JUPYTER_CONFIG_DIR: path.join(home, "config"), JUPYTER_RUNTIME_DIR: path.join(home, "runtime"), IPYTHONDIR: path.join(home, "ipython") },
    },
  );
  const log = [];
  for (const s of [child.stdout, child.stderr]) {
    readline.createInterface({ input: s }).on("line", (l) => {
      log.push(l);
      if (log.length > 300) log.shift();
      if (process.env.HOURCI_E2E_VERBOSE) console.error(`[jupyter] ${l}`);
    });
  }
  const tail = (n = 40) => log.slice(-n).join("\n");
  const url = `http://127.0.0.1:${port}`;
  let gone = false;
  const exited = once(child, "exit").then(([code]) => {
    gone = true;
    throw new Error(`JupyterLab exited with ${code} while starting:\n${tail()}`);
  });
  await Promise.race([
    exited,
    waitFor(async () => gone || (await fetch(`${url}/api/status`)).ok, { timeoutMs: 120_000, describe: () => `JupyterLab never answered /api/status:\n${tail()}` }),
  ]);
  exited.catch(() => {});
  const stop = async () => {
    if (child.exitCode === null && !child.signalCode) {
      const gone = once(child, "exit");
      child.kill("SIGTERM");
      await gone;
    }
    fs.rmSync(home, { recursive: true, force: true });
  };
  return { url, tail, stop };
}


const FREE_TEXT = "a/b? #1 100% \"sure\"\nsecond line 🌍";
const QUEUED = "Saved on this device; it will be sent when you're back online.";

// What one run of the lesson records, per copy: question, answer, where it comes from.
const EXPECTED = [
  ["4A", "answered from a JavaScript cell", "the JavaScript cell"],
  ["5A", "A supercomputer", "the Submit widget"],
  ["7A", FREE_TEXT, "the Submit widget's own text box"],
  ["8A", "['Ada', True]", "SubmitBtn, the original helper's name and arguments"],
  ["6A", "run", "running the cell tagged 6A"],
  ["1A", "true", "the animation in the iframe"],
];

// One PostgreSQL, collector and Jupyter server for both front ends; each front end opens
// its own copy of the lesson, kept in a different folder layout so that each copy's rows
// carry their own lesson and level (and both path conventions are exercised).
const COPIES = {
  lab: { dir: "lab/template-lessons/template", lesson: "template", level: "template", urlPath: "/lab/tree/", frontEnd: "jupyterlab" },
  nb7: { dir: "nb7/spatial-thinking/beginner", lesson: "spatial-thinking", level: "beginner", urlPath: "/notebooks/", frontEnd: "notebook7" },
};
let shared = null;
const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function setUp(prereq) {
  if (shared) return shared;
  shared = (async () => {
    // The lesson tree as a hub would hold it; the animation sits three levels above each copy.
    // No hourofci_lesson.py beside the notebooks: the kernel imports the installed package.
    const root = tmpDir("jupyter-root");
    cleanups.push(async () => fs.rmSync(root, { recursive: true, force: true }));
    for (const copy of Object.values(COPIES)) {
      fs.cpSync(path.join(examplesDir, "notebook/template-lessons/template"), path.join(root, copy.dir), { recursive: true });
    }
    fs.cpSync(path.join(examplesDir, "animation"), path.join(root, "animation"), { recursive: true, filter: (src) => !src.startsWith(path.join(examplesDir, "animation", "sdk")) });

    const jupyterPort = await freePort();
    const stack = await startStack(prereq, { name: "e2e_jupyter", allowOrigins: [`http://127.0.0.1:${jupyterPort}`], collectorSdk: false });
    cleanups.push(() => stack.cleanup());
    const sdkRoute = await fetch(`${stack.collector.url}/sdk/hourofci-log.js`);
    assert.notEqual(sdkRoute.status, 200, "this test runs the collector without /sdk/");
    // Down before the learner opens the notebook; started again by the last test.
    await stack.collector.stop();
    const lab = await startJupyterLab(prereq.jupyter, { root, port: jupyterPort, env: { HOURCI_LOG_ENDPOINT: stack.collector.url } });
    cleanups.push(() => lab.stop());
    const browser = await launchBrowser(prereq);
    cleanups.push(() => browser.close());
    return { stack, lab, context: browser.context, openedAt: {} };
  })();
  return shared;
}

/** Opens a copy of the lesson, waits for an idle kernel, runs all cells, waits for the status line. */
async function openAndRunAll(t, { lab, context }, copy) {
  const { frontEnd } = copy;
  const page = await context.newPage();
  t.after(() => page.close().catch(() => {}));
  if (process.env.HOURCI_E2E_VERBOSE) page.on("console", (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  await page.setViewportSize({ width: 1280, height: 2400 });
  const opened = Date.now();
  await page.goto(`${lab.url}${copy.urlPath}${copy.dir}/lesson.ipynb`);
  const shot = async (name) => {
    if (process.env.HOURCI_E2E_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.HOURCI_E2E_SCREENSHOTS, `${frontEnd}-${name}.png`) });
  };
  page.shot = shot;

  // Run All only once the notebook is shown and connected to its kernel: before that,
  // JupyterLab silently skips cells that have no kernel to run on.
  await page
    .waitForFunction(
      () => {
        const name = document.querySelector(".jp-Toolbar-kernelName")?.textContent || "";
        const indicator = document.querySelector(".jp-Notebook-ExecutionIndicator");
        return (
          document.querySelectorAll(".jp-Notebook .jp-Cell").length > 0 &&
          name.trim() !== "" &&
          !/No Kernel|Loading/i.test(name) &&
          indicator?.dataset.status === "idle" &&
          /Idle/.test(indicator.textContent || "")
        );
      },
      null,
      { timeout: 120_000 },
    )
    .catch(async (e) => {
      await shot("not-ready");
      throw new Error(`${frontEnd}: the notebook never showed with an idle kernel (${e.message})\nJupyter log:\n${lab.tail()}`);
    });

  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();

  // The status line of start(): the SDK, from the package through the kernel, is ready.
  const status = page.locator(".hourofci-status").first();
  await waitFor(async () => (await status.getAttribute("data-state")) === "ready", {
    timeoutMs: 120_000,
    describe: async () => {
      await shot("no-status");
      const errors = await page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").allTextContents();
      return `${frontEnd}: the lesson status line says: ${await status.textContent().catch(() => "(none)")}; cell errors: ${errors.join("\n") || "(none)"}; Jupyter log:\n${lab.tail(20)}`;
    },
  });
  const readyAfterMs = Date.now() - opened;
  t.diagnostic(`${frontEnd}: notebook opened -> status line ready (Run All included): ${readyAfterMs} ms; SDK from the kernel to initialised: ${await status.getAttribute("data-ready-ms")} ms`);
  return page;
}

/** Events waiting in this origin's localStorage (the SDK's stored format). */
function storedEvents(page) {
  return page.evaluate(() =>
    Object.keys(localStorage)
      .filter((k) => k.startsWith("hourofci-log:ev:"))
      .map((k) => JSON.parse(localStorage.getItem(k))),
  );
}

/** The learner's session with the collector down: every path answers "saved on this device". */
async function answerWhileCollectorDown(t, prereq, copy) {
  const state = await setUp(prereq);
  const page = await openAndRunAll(t, state, copy);
  const { frontEnd } = copy;

  const submit = page.locator(".hourofci-submit-button");
  await submit.nth(2).waitFor({ timeout: 120_000 }).catch(async () => {
    await page.shot("no-submit");
    throw new Error(`${frontEnd}: the three Submit widgets never rendered after Run All`);
  });
  const saved = async (index) => {
    const status = page.locator(".hourofci-submit-status").nth(index);
    await waitFor(async () => (await status.textContent()) !== "", { describe: `${frontEnd}: Submit widget ${index + 1} never reported what happened` });
    assert.equal(await status.getAttribute("data-delivery"), "queued", `${frontEnd}: Submit widget ${index + 1} should keep the answer on the device, it says: ${await status.textContent()}`);
    assert.equal(await status.textContent(), QUEUED);
  };
  // The first Submit reads the RadioButtons above it; the second has its own text box;
  // the third is SubmitBtn with the original arguments, reading a Text and a Checkbox.
  await page.getByRole("radio", { name: "A supercomputer" }).check();
  await submit.nth(0).click();
  await saved(0);
  await page.locator(".hourofci-submit textarea").fill(FREE_TEXT);
  await submit.nth(1).click();
  await saved(1);
  await submit.nth(2).click();
  await saved(2);
  // SubmitBtn's out_func got the confirmation from the kernel.
  await page.getByText(QUEUED, { exact: true }).first().waitFor({ timeout: 60_000 });

  // The animation, inlined in an iframe, uses the notebook's SDK: answer its first task.
  const animation = page.frameLocator(".hourofci-animation iframe");
  await animation.locator('body[data-logging="ready"]').waitFor({ timeout: 60_000 }).catch(async () => {
    await page.shot("no-animation");
    throw new Error(`${frontEnd}: the animation in the notebook never got the SDK; its status line says: ${await animation.locator("#status").textContent({ timeout: 1000 }).catch(() => "(no iframe)")}`);
  });
  await animation.locator('[data-spot="data-center"] rect').click();

  // Everything is in the browser's storage before the tab closes (the run event comes
  // from the kernel, so it may be last).
  const mine = (events) => events.filter((e) => e.lesson === copy.lesson && e.level === copy.level);
  await waitFor(async () => mine(await storedEvents(page)).length >= EXPECTED.length, {
    timeoutMs: 60_000,
    describe: async () => `${frontEnd}: stored events: ${JSON.stringify(mine(await storedEvents(page)).map((e) => [e.question, e.answer]))}`,
  });
  const stored = mine(await storedEvents(page));
  assert.deepEqual(
    stored.map((e) => [e.question, e.answer]).sort(),
    EXPECTED.map(([q, a]) => [q, a]).sort(),
    `${frontEnd}: one stored event per answer`,
  );
  assert.equal((await state.stack.rows("loggingtable")).length, 0, "nothing can have reached the database: the collector is down");
  await page.close();
}

const needs = ["collector", "pgcluster", "sdk", "chromium", "playwright", "jupyter"];

test("JupyterLab 4, collector down and no /sdk/: run all cells, three Submit buttons, a tagged cell, the animation: all kept in the browser", async (t) => {
  const prereq = requireAll(t, needs, { jupyter: jupyterBin() });
  if (!prereq) return;
  await answerWhileCollectorDown(t, prereq, COPIES.lab);
});

test("Notebook 7, collector still down: the same lesson, lesson and level from a <lesson>/<level>/ folder", async (t) => {
  const prereq = requireAll(t, needs, { jupyter: jupyterBin() });
  if (!prereq) return;
  await answerWhileCollectorDown(t, prereq, COPIES.nb7);
});

test("collector started, notebook opened again: every answer of both sessions in PostgreSQL exactly once, with its client time", async (t) => {
  const prereq = requireAll(t, needs, { jupyter: jupyterBin() });
  if (!prereq) return;
  const state = await setUp(prereq);
  const { stack } = state;
  const restartedAt = new Date();
  await stack.collector.start();
  // Opening the notebook again and running it loads the SDK, which sends what both tabs
  // left. (Running it again also records 4A and 6A again: new answers, new rows.)
  const page = await openAndRunAll(t, state, COPIES.lab);
  const earlier = `client_time < '${restartedAt.toISOString()}'`;
  const missing = (rows, copy) => EXPECTED.filter(([q, a]) => !rows.some((r) => r.lesson === copy.lesson && r.lesson_level === copy.level && r.question === q && r.answer === a));
  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable", earlier);
      return Object.values(COPIES).every((c) => missing(r, c).length === 0) && r;
    },
    {
      timeoutMs: 90_000,
      describe: async () => {
        const all = await stack.rows("loggingtable");
        const gaps = Object.values(COPIES).map((c) => `${c.frontEnd}: ${missing(all, c).map(([q, a, from]) => `${q}=${JSON.stringify(a)} (from ${from})`).join(", ") || "none"}`);
        return `missing rows: ${gaps.join("; ")}; all rows: ${JSON.stringify(all.map((x) => [x.lesson, x.lesson_level, x.question, x.answer, x.client_time]))}; still stored: ${(await storedEvents(page)).length}; collector log:\n${stack.collector.logTail(10)}`;
      },
    },
  );
  for (const copy of Object.values(COPIES)) {
    for (const [q, a, from] of EXPECTED) {
      const matching = rows.filter((r) => r.lesson === copy.lesson && r.lesson_level === copy.level && r.question === q && r.answer === a);
      assert.equal(matching.length, 1, `${copy.frontEnd}: ${from} should write exactly one row, wrote ${matching.length}`);
      assert.ok(matching[0].client_time, `${copy.frontEnd}: ${from}: the row keeps the time the learner answered`);
    }
  }
  assert.equal(rows.length, 2 * EXPECTED.length, `unexpected extra rows ${JSON.stringify(rows.map((r) => [r.lesson, r.question, r.answer]))}`);
  assert.equal((await stack.rows("loggingtable_test")).length, 0, "nothing may go to the test table");
});

test("the built wheel installs into a fresh virtual environment and carries the SDK", { timeout: 600_000 }, async (t) => {
  const dir = process.env.HOURCI_WHEEL_DIR || path.join(repoRoot, "target/wheels");
  const wheel = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => /^hourofci_lesson-.*\.whl$/.test(f)) : null;
  const wheelPath = { path: wheel && path.join(dir, wheel), how: "HOURCI_WHEEL_DIR with hourofci_lesson-*.whl (or `cargo xtask wheel`)" };
  const prereq = requireAll(t, ["sdk", "wheel"], { wheel: wheelPath });
  if (!prereq) return;
  const run = promisify(execFile);
  const venv = tmpDir("wheel-venv");
  t.after(() => fs.rmSync(venv, { recursive: true, force: true }));
  await run("python3", ["-m", "venv", venv]);
  await run(path.join(venv, "bin/pip"), ["install", "-q", "--disable-pip-version-check", prereq.wheel], { timeout: 540_000 });
  const check = `
import hashlib, json, sys, ipywidgets, hourofci_lesson as h
from importlib.metadata import metadata
m = metadata("hourofci-lesson")
shown = []
h.display = shown.append  # what SubmitBtn shows, without a front end
h.SubmitBtn("Mozilla/5.0 (X11)", "gateway", "beginner", "2A", "typed answer", text="Go", test=True)
old = shown[-1]
h.SubmitBtn(ipywidgets.Text(value="x"), out_func=print)
later = shown[-1]
import os
os.environ.update(JUPYTERHUB_USER="alice@example.org", HOURCI_LEARNER_SALT="hub secret")
h.SubmitBtn("", "gateway", "beginner", "2B", "x")
hub_learner = shown[-1].learner_id
del os.environ["HOURCI_LEARNER_SALT"]
h.SubmitBtn("", "gateway", "beginner", "2B", "x")
unsalted_learner = shown[-1].learner_id
print(json.dumps({
  "paths": [h.lesson_and_level_from_path("beginner-lessons/geospatial-data/gd-2.ipynb"), h.lesson_and_level_from_path("big-data/advanced/bd-1.ipynb"), h.lesson_and_level_from_path("elsewhere/x.ipynb")],
  "submit_btn_widget": [type(old).__name__, old.user_agent, old.lesson, old.level, old.question, old.fixed_answer, old.test, old.description, old.python_str],
  "later_form": type(later).__name__,
  "learner_ids": [hub_learner, unsalted_learner],
  "files": {p.name: p.read_bytes().hex() for p in h.SDK_DIR.iterdir()},
  "license": m.get("License-Expression"),
  "requires_python": m.get("Requires-Python"),
  "submit_btn": callable(h.SubmitBtn), "start": callable(h.start),
}))`;
  const { stdout } = await run(path.join(venv, "bin/python"), ["-c", check], { maxBuffer: 64 * 1024 * 1024 });
  const found = JSON.parse(stdout);
  for (const f of ["hourofci-log.js", "hourofci_sdk.js", "hourofci_sdk_bg.wasm"]) {
    assert.equal(found.files[f], fs.readFileSync(path.join(prereq.sdk, f)).toString("hex"), `${f} in the installed package is the built SDK`);
  }
  assert.equal(found.license, "MIT OR Apache-2.0");
  assert.ok(found.requires_python, "Requires-Python is set");
  assert.ok(found.submit_btn && found.start, "start() and SubmitBtn() are importable");
  assert.deepEqual(found.paths, [["geospatial-data", "beginner"], ["big-data", "advanced"], [null, null]], "lesson and level from the notebook's folder");
  assert.deepEqual(
    found.submit_btn_widget,
    ["SubmitButton", crypto.createHash("md5").update("Mozilla/5.0 (X11)").digest("hex"), "gateway", "beginner", "2A", "typed answer", true, "Go", true],
    "SubmitBtn with the original arguments: a browser-side button, the user agent as its MD5, the test table",
  );
  assert.equal(found.later_form, "Button", "the later SubmitBtn(widget, out_func=...) form only confirms, as the original did");
  // In a JupyterHub with a salt: the salted SHA-256 of the hub user, as a UUID (version 4 and
  // variant bits set); without a salt, none (the browser's own id is used).
  const digest = crypto.createHash("sha256").update("hub secret\0alice@example.org").digest().subarray(0, 16);
  digest[6] = (digest[6] & 0x0f) | 0x40;
  digest[8] = (digest[8] & 0x3f) | 0x80;
  const hex = digest.toString("hex");
  const expected = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  assert.deepEqual(found.learner_ids, [expected, ""], "SubmitBtn passes the hub user's salted hash as learnerId, nothing without a salt");
});
