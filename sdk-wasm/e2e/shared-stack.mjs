// One PostgreSQL + collector (and the SDK's test page) for a whole test file: starting
// them dominates the run time. Every test still gets its own fresh browser profile.

import { test } from "node:test";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { requireAll, startStack, serveStatic, freePort } from "../../e2e/lib/harness.mjs";

export const NEEDS = ["collector", "pgcluster", "sdk", "chromium", "playwright"];
export const pageDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "page");

/**
 * Returns `stackFor(t)`: `{prereq, stack}` with the file's shared stack (database `name`,
 * the test page served and allowed as a CORS origin as `stack.sdkPages`), or null when a
 * prerequisite is missing (which fails the test under CI=true). Stopped after the file.
 */
export function sharedStack(name) {
  let shared = null;
  test.after(async () => {
    if (!shared) return;
    const stack = await shared.catch(() => null);
    if (stack) {
      await stack.sdkPages.close();
      await stack.cleanup();
    }
  });
  return async function stackFor(t) {
    const prereq = requireAll(t, NEEDS);
    if (!prereq) return null;
    shared ??= (async () => {
      const pages = await serveStatic(pageDir, await freePort());
      const stack = await startStack(prereq, { name, allowOrigins: [pages.url] });
      stack.sdkPages = pages;
      return stack;
    })();
    return { prereq, stack: await shared };
  };
}

/**
 * Runs in the page: stores `seed` (a `[key, value]` pair, e.g. an older SDK's queue) if
 * given, then fills localStorage until it refuses more. Returns how many large fillers fit.
 */
export const fillStorage = (seed) => {
  if (seed) localStorage.setItem(seed[0], seed[1]);
  const chunk = "x".repeat(256 * 1024);
  let n = 0;
  try {
    for (;;) localStorage.setItem(`filler-${n++}`, chunk);
  } catch {}
  try {
    for (let i = 0; ; i++) localStorage.setItem(`f-${i}`, "y".repeat(64));
  } catch {}
  return n;
};
