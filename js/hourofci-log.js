// hourofci-log: records what Hour of CI learners answer, and never loses an answer.
//
// ES module entry point. Loads the Rust/WebAssembly SDK relative to this file's own
// URL (so `import("https://<collector>/sdk/hourofci-log.js")` works from any page),
// re-exports its API, and sets `window.hourofci` for classic scripts.
// The API and delivery rules are in docs/DESIGN.md; types in index.d.ts.

import loadWasm, * as sdk from "./hourofci_sdk.js";

let loading = null;
let loaded = false;
// onStatus() may be called before init(); these are registered once the wasm is loaded.
const early = new Set();

function notInitialized() {
  return new Error("hourofci: call init() first");
}

/** Loads the wasm once, then configures (again, if called again). */
export async function init(options) {
  loading ??= loadWasm({ module_or_path: new URL("./hourofci_sdk_bg.wasm", import.meta.url) });
  try {
    await loading;
  } catch (e) {
    loading = null; // e.g. offline while loading: a later init() may succeed
    throw e;
  }
  if (!loaded) {
    loaded = true;
    for (const entry of early) entry.unsubscribe = sdk.onStatus(entry.callback);
  }
  await sdk.init(options);
}

export async function logAnswer(lesson, level, question, answer) {
  if (!loaded) throw notInitialized();
  return sdk.logAnswer(lesson, level, question, answer);
}

export async function logInteraction(lesson, level, question, detail) {
  if (!loaded) throw notInitialized();
  return sdk.logInteraction(lesson, level, question, detail);
}

export async function flush() {
  if (!loaded) throw notInitialized();
  return sdk.flush();
}

export function pending() {
  if (!loaded) throw notInitialized();
  return sdk.pending();
}

export function onStatus(callback) {
  if (typeof callback !== "function") throw new Error("hourofci: onStatus: callback must be a function");
  if (loaded) return sdk.onStatus(callback);
  const entry = { callback, unsubscribe: null };
  early.add(entry);
  return () => {
    early.delete(entry);
    entry.unsubscribe?.();
  };
}

const hourofci = { init, logAnswer, logInteraction, flush, pending, onStatus };
export default hourofci;
if (typeof window !== "undefined") window.hourofci = hourofci;
