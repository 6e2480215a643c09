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
  initOptions ??= options;
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
  // The default user agent (MD5 of navigator.userAgent) and the learner id are made here,
  // where calls made before the wasm loads need them too, and nowhere else.
  await sdk.init(options instanceof Object ? { ...options, userAgent: options.userAgent ?? md5(navigator.userAgent), learnerId: learner(options) } : options);
}

// ---- The pseudonymous learner id (docs/DESIGN.md, "SDK JavaScript API") ----
// A random UUID v4 made once per browser profile and kept in localStorage (derived from
// nothing about the person); where storage is refused, one per page. Or the lesson's own
// (`init({learnerId})`, e.g. the lesson kit's salted hash of the JupyterHub user name).
// This is its one home: the wasm records and sends what it is given.
let pageLearner;
function learner({ learnerId }) {
  if (learnerId == null) {
    try {
      pageLearner ??= localStorage.getItem("hourofci-log:learner:v1");
      if (!isLearnerId(pageLearner)) localStorage.setItem("hourofci-log:learner:v1", (pageLearner = uuid()));
    } catch {}
    return (pageLearner = isLearnerId(pageLearner) ? pageLearner : uuid());
  }
  if (isLearnerId(learnerId)) return learnerId;
  throw new Error("hourofci: option `learnerId` must be a non-nil UUID");
}
/** A UUID v4 from getRandomValues (pages on plain http, a lab server, have no randomUUID). */
const uuid = () => "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));
const isLearnerId = (v) => /^(?!0{8}-0{4}-0{4}-0{4}-0{12})[\da-f]{8}(-[\da-f]{4}){3}-[\da-f]{12}$/i.test(v);

export async function logAnswer(lesson, level, question, answer) {
  if (!loaded) return storeEarly(() => sdk.logAnswer(lesson, level, question, answer), lesson, level, question, typeof answer === "string" ? answer : JSON.stringify(answer));
  return sdk.logAnswer(lesson, level, question, answer);
}

export async function logInteraction(lesson, level, question, detail) {
  if (!loaded) return storeEarly(() => sdk.logInteraction(lesson, level, question, detail), lesson, level, question, JSON.stringify(detail));
  return sdk.logInteraction(lesson, level, question, detail);
}

// ---- Lesson kit (issue 10): a call made while the wasm still loads is not lost ----
// It is written to localStorage at once in the SDK's stored format (sdk-wasm/src/queue.rs:
// key hourofci-log:ev:<16-digit order>:<id>, learner id included), which the SDK sends once loaded, or the next
// page load does if this one closes first. Before init() there is no endpoint: reject. What
// cannot be stored so (storage refused, a wrong argument) waits for the SDK instead.
let initOptions = null;
let order = 0;
function storeEarly(later, lesson, level, question, answer) {
  if (!initOptions) throw notInitialized();
  try {
    const learner_id = learner(initOptions);
    if ([lesson, level, question, answer].some((v) => typeof v !== "string")) throw 0;
    const url = new URL(initOptions.endpoint.trim());
    const id = uuid();
    order = Math.max(order + 1, Date.now() * 1000);
    localStorage.setItem(`hourofci-log:ev:${String(order).padStart(16, "0")}:${id}`, JSON.stringify({
      id, user_agent: initOptions.userAgent ?? md5(navigator.userAgent), lesson, level, question, answer,
      client_time: new Date().toISOString(), test: initOptions.test === true, endpoint: url.origin + url.pathname.replace(/\/+$/, ""), learner_id,
    }));
    return "queued";
  } catch {
    return loading.then(later);
  }
}
/** MD5 hex of the UTF-8 bytes of `text` (the default user agent, as the wasm computes it). */
function md5(text) {
  const b = new TextEncoder().encode(text), n = ((b.length + 8) >> 6) + 1, w = new Int32Array(n * 16);
  b.forEach((x, i) => (w[i >> 2] |= x << ((i % 4) * 8)));
  w[b.length >> 2] |= 0x80 << ((b.length % 4) * 8);
  w[n * 16 - 2] = b.length * 8;
  let h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let o = 0; o < w.length; o += 16) {
    let [a, x, c, d] = h;
    for (let i = 0; i < 64; i++) {
      const r = i >> 4;
      const f = r === 0 ? (x & c) | (~x & d) : r === 1 ? (d & x) | (~d & c) : r === 2 ? x ^ c ^ d : c ^ (x | ~d);
      const t = (f + a + ((Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0) + w[o + ([i, 5 * i + 1, 3 * i + 5, 7 * i][r] % 16)]) | 0;
      const s = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21][r * 4 + (i % 4)];
      [a, d, c, x] = [d, c, x, (x + ((t << s) | (t >>> (32 - s)))) | 0];
    }
    h = [h[0] + a, h[1] + x, h[2] + c, h[3] + d].map((v) => v | 0);
  }
  return h.map((v) => [0, 8, 16, 24].map((s) => ((v >>> s) & 255).toString(16).padStart(2, "0")).join("")).join("");
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
