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
