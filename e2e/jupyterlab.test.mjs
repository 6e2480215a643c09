// The example lesson notebook in a real JupyterLab (from the project's venv), in headless
// Chromium: run all cells, use the Submit widget and the animation, and find every answer
// in PostgreSQL, sent from the browser through the SDK.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
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

// One PostgreSQL, collector and Jupyter server for both front ends; each front end opens
// its own copy of the lesson, kept in a different folder layout so that each copy's rows
// carry their own lesson and level (and both path conventions are exercised).
const COPIES = {
  lab: { dir: "lab/template-lessons/template", lesson: "template", level: "template" },
  nb7: { dir: "nb7/spatial-thinking/beginner", lesson: "spatial-thinking", level: "beginner" },
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
    const root = tmpDir("jupyter-root");
    cleanups.push(async () => fs.rmSync(root, { recursive: true, force: true }));
    for (const copy of Object.values(COPIES)) {
      fs.cpSync(path.join(examplesDir, "notebook/template-lessons/template"), path.join(root, copy.dir), { recursive: true });
    }
    fs.cpSync(path.join(examplesDir, "animation"), path.join(root, "animation"), { recursive: true });

    const jupyterPort = await freePort();
    const stack = await startStack(prereq, { name: "e2e_jupyter", allowOrigins: [`http://127.0.0.1:${jupyterPort}`] });
    cleanups.push(() => stack.cleanup());
    const lab = await startJupyterLab(prereq.jupyter, { root, port: jupyterPort, env: { HOURCI_LOG_ENDPOINT: stack.collector.url } });
    cleanups.push(() => lab.stop());
    const browser = await launchBrowser(prereq);
    cleanups.push(() => browser.close());
    return { stack, lab, context: browser.context };
  })();
  return shared;
}

async function runExampleLesson(t, prereq, { frontEnd, urlPath, copy }) {
  const { stack, lab, context } = await setUp(prereq);
  const page = await context.newPage();
  t.after(() => page.close());
  if (process.env.HOURCI_E2E_VERBOSE) page.on("console", (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  await page.setViewportSize({ width: 1280, height: 2400 });
  await page.goto(`${lab.url}${urlPath}${copy.dir}/lesson.ipynb`);
  const shot = async (name) => {
    if (process.env.HOURCI_E2E_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.HOURCI_E2E_SCREENSHOTS, `${frontEnd}-${name}.png`) });
  };

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

  const failed = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']");
  const submit = page.locator(".hourofci-submit-button");
  await submit.nth(1).waitFor({ timeout: 120_000 }).catch(async () => {
    await shot("no-submit");
    const errors = await failed.allTextContents();
    throw new Error(`${frontEnd}: the Submit widget never rendered after Run All.\nCell errors: ${errors.join("\n") || "(none)"}\nJupyter log:\n${lab.tail(20)}`);
  });

  // The status line of start(): the SDK is loaded as soon as the widget renders.
  await waitFor(async () => (await page.locator(".hourofci-status").first().getAttribute("data-state")) === "ready", {
    describe: async () => `${frontEnd}: the lesson status line says: ${await page.locator(".hourofci-status").first().textContent()}; collector log:\n${stack.collector.logTail(10)}`,
  });

  // The first Submit reads the RadioButtons above it; the second has its own text box.
  await page.getByRole("radio", { name: "A supercomputer" }).check();
  const submitted = async (index) => {
    const status = page.locator(".hourofci-submit-status").nth(index);
    await waitFor(async () => (await status.textContent()) !== "", { describe: `${frontEnd}: Submit widget ${index + 1} never reported what happened` });
    const text = await status.textContent();
    assert.equal(text, "Submitted.", `${frontEnd}: Submit widget ${index + 1} should say the answer was recorded, it says: ${text}`);
  };
  await submit.nth(0).click();
  await submitted(0);
  await page.locator(".hourofci-submit textarea").fill(FREE_TEXT);
  await submit.nth(1).click();
  await submitted(1);

  // The animation is inlined in an iframe; answer its first task there.
  const animation = page.frameLocator(".hourofci-animation iframe");
  await animation.locator('body[data-logging="ready"]').waitFor({ timeout: 60_000 }).catch(async () => {
    await shot("no-animation");
    throw new Error(`${frontEnd}: the animation in the notebook never loaded the SDK; its status line says: ${await animation.locator("#status").textContent({ timeout: 1000 }).catch(() => "(no iframe)")}`);
  });
  await animation.locator('[data-spot="data-center"] rect').click();

  const expected = [
    ["4A", "answered from a JavaScript cell", "the JavaScript cell"],
    ["5A", "A supercomputer", "the Submit widget"],
    ["7A", FREE_TEXT, "the Submit widget's own text box"],
    ["6A", "run", "running the cell tagged 6A"],
    ["1A", "true", "the animation in the iframe"],
  ];
  const ours = `lesson = '${copy.lesson}' AND lesson_level = '${copy.level}'`;
  const missingFrom = (rows) => expected.filter(([q, a]) => !rows.some((r) => r.question === q && r.answer === a));
  const rows = await waitFor(
    async () => {
      const r = await stack.rows("loggingtable", ours);
      return missingFrom(r).length === 0 && r;
    },
    {
      timeoutMs: 60_000,
      describe: async () => {
        const all = await stack.rows("loggingtable");
        return `${frontEnd}: missing rows for ${copy.lesson}/${copy.level}: ${missingFrom(all.filter((x) => x.lesson === copy.lesson && x.lesson_level === copy.level)).map(([q, a, from]) => `${q}=${JSON.stringify(a)} (from ${from})`).join(", ")}; all rows: ${JSON.stringify(all.map((x) => [x.lesson, x.lesson_level, x.question, x.answer]))}`;
      },
    },
  );
  for (const [q, a, from] of expected) {
    const matching = rows.filter((r) => r.question === q && r.answer === a);
    assert.equal(matching.length, 1, `${frontEnd}: ${from} should write exactly one row, wrote ${matching.length}`);
  }
  assert.equal(rows.length, expected.length, `${frontEnd}: unexpected extra rows ${JSON.stringify(rows.map((r) => [r.question, r.answer]))}`);
  assert.equal((await stack.rows("loggingtable_test")).length, 0, "nothing may go to the test table");
}

const needs = ["collector", "pgcluster", "sdk", "chromium", "playwright", "jupyter"];

test("JupyterLab 4: run all cells of the example lesson, submit, use the animation: every answer in PostgreSQL", async (t) => {
  const prereq = requireAll(t, needs, { jupyter: jupyterBin() });
  if (!prereq) return;
  await runExampleLesson(t, prereq, { frontEnd: "jupyterlab", urlPath: "/lab/tree/", copy: COPIES.lab });
});

test("Notebook 7: the same lesson, lesson and level from a <lesson>/<level>/ folder", async (t) => {
  const prereq = requireAll(t, needs, { jupyter: jupyterBin() });
  if (!prereq) return;
  await runExampleLesson(t, prereq, { frontEnd: "notebook7", urlPath: "/notebooks/", copy: COPIES.nb7 });
});
