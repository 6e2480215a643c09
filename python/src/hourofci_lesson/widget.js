// Front end of every hourofci_lesson widget (the `_esm` of each anywidget).
//
// The SDK comes from the kernel, never from the collector: the one `SdkAssets` widget
// of the kernel carries the wasm as a binary buffer and the two ES modules as text,
// and they are imported from blob: URLs. So the SDK is there whenever the notebook
// itself could be opened, however the collector is doing. Every widget module of the
// page shares one SDK through `globalThis.__hourofciKit` (one delivery engine per page).

const KIT = (globalThis.__hourofciKit ??= { module: null, configs: new Map() });

/** Why answers cannot be kept in this browser, or null. */
function browserProblem() {
  if (typeof WebAssembly !== "object") return "this browser has WebAssembly turned off";
  try {
    localStorage.setItem("hourofci-log:probe", "1");
    localStorage.removeItem("hourofci-log:probe");
  } catch {
    return "this browser does not let the page store data (site storage is blocked)";
  }
  return null;
}

function javascriptUrl(text) {
  return URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
}

function bytesOf(value) {
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return value;
}

/** The SDK module (not yet initialised), from the kernel's SdkAssets widget. */
function sdkModule(model) {
  KIT.module ??= (async () => {
    const ref = String(model.get("sdk") || "").replace(/^IPY_MODEL_/, "");
    const assets = await model.widget_manager.get_model(ref);
    KIT.wasm = await WebAssembly.compile(bytesOf(assets.get("wasm")));
    const glue = javascriptUrl(assets.get("glue"));
    // A blob: URL resolves nothing relative to itself: the shim's import of the glue and
    // its URL of the wasm are pointed at what the kernel sent.
    // Patterns, not exact text: the shim is minified (terser), which may drop spaces.
    const replacements = [
      [/(["'])\.\/hourofci_sdk\.js\1/g, JSON.stringify(glue)],
      [/new URL\(\s*(["'])\.\/hourofci_sdk_bg\.wasm\1\s*,\s*import\.meta\.url\s*\)/g, "globalThis.__hourofciKit.wasm"],
    ];
    let shim = assets.get("shim");
    for (const [from, to] of replacements) {
      if (!from.test(shim)) throw new Error(`the SDK shipped with hourofci_lesson has an unexpected shape (no ${from})`);
      from.lastIndex = 0;
      shim = shim.replace(from, to);
    }
    return import(/* webpackIgnore: true */ javascriptUrl(shim));
  })();
  return KIT.module;
}

/**
 * The SDK, initialised for this widget's settings (one init per settings and page).
 * Rejects, with a sentence a learner can read, when this browser cannot keep answers.
 */
export function loadSdk(model) {
  const endpoint = model.get("endpoint");
  const test = model.get("test");
  const userAgent = model.get("user_agent") || undefined;
  // The hub user's salted hash, else (undefined) the SDK's id of this browser profile.
  const learnerId = model.get("learner_id") || undefined;
  const key = `${endpoint} ${test} ${userAgent || ""} ${learnerId || ""}`;
  if (!KIT.configs.has(key)) {
    const started = performance.now();
    KIT.configs.set(key, (async () => {
      const problem = browserProblem();
      if (problem) throw new Error(problem);
      const sdk = await sdkModule(model);
      await sdk.init({ endpoint, test, userAgent, learnerId });
      KIT.readyMs ??= performance.now() - started;
      return sdk;
    })());
  }
  return KIT.configs.get(key);
}

export function describe(e) {
  if (e.kind === "sent") return "Answer recorded.";
  if (e.kind === "queued") return "Saved on this device; it will be sent when you're back online.";
  if (e.kind === "queued-memory") return "Not saved on this device (its storage is full or disabled): keep this page open until it is sent.";
  if (e.kind === "rejected") return `This answer could not be recorded (${e.reason || "refused"}).`;
  if (e.kind === "dropped") return `${e.count} older unsent answers had to be discarded.`;
  return "";
}

function unavailable(err) {
  return `Answers can't be recorded in this browser: ${err && err.message ? err.message : err}.`;
}

// ------------------------------------------------------------------ the lesson status line

/** start(): publishes the SDK for JavaScript cells and animations, and logs "run" events. */
function initializeStatus({ model }) {
  const lessonGlobal = (window.hourofciLesson ??= {});
  Object.assign(lessonGlobal, { endpoint: model.get("endpoint"), test: model.get("test"), lesson: model.get("lesson"), level: model.get("level") });
  const ready = loadSdk(model).then(
    (sdk) => {
      model.set("state", "ready");
      model.save_changes();
      return sdk;
    },
    (err) => {
      console.warn("hourofci: SDK unavailable", err);
      model.set("state", "unavailable");
      model.save_changes();
      return null;
    },
  );
  // For JavaScript cells (`await window.hourofciLesson.sdk`) and inlined animations.
  lessonGlobal.resolveSdk?.(ready);
  lessonGlobal.sdk = ready;
  const onMessage = async (msg) => {
    if (!msg || msg.kind !== "run") return;
    // Every open view of the notebook gets the message; only the one that ran the cell logs.
    const mine = model.widget_manager?.kernel?.clientId;
    if (msg.client && mine && msg.client !== mine) return;
    const sdk = await ready;
    if (sdk) await sdk.logAnswer(model.get("lesson"), model.get("level"), msg.question, "run");
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}

function renderStatus({ model, el }) {
  const line = document.createElement("p");
  line.className = "hourofci-status";
  line.setAttribute("role", "status");
  el.appendChild(line);
  const show = (text) => {
    line.textContent = text;
  };
  show(`Lesson ${model.get("lesson")} (${model.get("level")}): starting the answer recorder…`);
  let unsubscribe = () => {};
  loadSdk(model).then(
    (sdk) => {
      line.dataset.state = "ready";
      line.dataset.readyMs = String(Math.round(KIT.readyMs ?? 0));
      show(`Lesson ${model.get("lesson")} (${model.get("level")}): your answers are recorded.`);
      unsubscribe = sdk.onStatus((e) => show(describe(e)));
    },
    (err) => {
      line.dataset.state = "unavailable";
      show(unavailable(err));
    },
  );
  return () => unsubscribe();
}

// ------------------------------------------------------------------ Submit buttons

/** Python's repr() of a value the browser holds (for SubmitBtn's str(list) answers). */
function pyRepr(value, isFloat) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return isFloat && Number.isInteger(value) ? `${value}.0` : String(value);
  if (Array.isArray(value)) return `(${value.map((v) => pyRepr(v, isFloat)).join(", ")}${value.length === 1 ? "," : ""})`;
  const s = String(value);
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const code = ch.codePointAt(0);
    if (ch === "\\" || ch === quote) out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + quote;
}

/** Python's str() of one widget's value, as the original SubmitBtn logged it. */
function pyStr(value, isFloat) {
  return typeof value === "string" ? value : pyRepr(value, isFloat);
}

/** The value of the widget `ref` ("IPY_MODEL_<id>") as the browser sees it. */
async function widgetValue(model, ref) {
  const other = await model.widget_manager.get_model(String(ref).replace(/^IPY_MODEL_/, ""));
  const isFloat = /Float/.test(other.get("_model_name") || "");
  const value = other.get("value");
  if (value !== undefined) return { value, isFloat };
  // Selection widgets (RadioButtons, Dropdown, SelectMultiple...) sync only the chosen
  // index in the browser: take the chosen label(s).
  const labels = other.get("_options_labels") || [];
  const index = other.get("index");
  if (Array.isArray(index)) return { value: index.map((i) => labels[i]), isFloat };
  return { value: index === null || index === undefined ? null : labels[index], isFloat };
}

async function currentAnswer(model, input) {
  if (input) return input.value;
  const fixed = model.get("fixed_answer");
  if (fixed !== null && fixed !== undefined) return fixed;
  const refs = model.get("sources") || [];
  if (model.get("python_str")) {
    // SubmitBtn: str(widget.value) for one widget, str([values]) for a list of widgets.
    const values = await Promise.all(refs.map((r) => widgetValue(model, r)));
    if (!model.get("source_is_list")) return values.length ? pyStr(values[0].value, values[0].isFloat) : null;
    return `[${values.map((v) => pyRepr(v.value, v.isFloat)).join(", ")}]`;
  }
  const { value } = await widgetValue(model, refs[0]);
  return value;
}

function renderSubmit({ model, el }) {
  // Started when the button is shown, not on the click: offline, nothing could load then.
  const sdkReady = loadSdk(model).catch((err) => {
    console.warn("hourofci: SDK unavailable", err);
    return err;
  });
  const box = document.createElement("div");
  box.className = "hourofci-submit";
  let input = null;
  if (!(model.get("sources") || []).length && model.get("fixed_answer") == null) {
    input = document.createElement("textarea");
    input.rows = 2;
    input.setAttribute("aria-label", `Answer to question ${model.get("question")}`);
    box.appendChild(input);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = model.get("description");
  button.className = "jupyter-button hourofci-submit-button";
  const status = document.createElement("span");
  status.className = "hourofci-submit-status";
  status.setAttribute("role", "status");
  box.append(button, status);
  el.appendChild(box);
  button.addEventListener("click", async () => {
    const answer = await currentAnswer(model, input);
    if (answer === null || answer === undefined || answer === "") {
      status.textContent = "Choose or type an answer first.";
      return;
    }
    const sdk = await sdkReady;
    if (sdk instanceof Error) {
      status.textContent = unavailable(sdk);
      status.dataset.delivery = "unavailable";
      return;
    }
    try {
      const delivery = await sdk.logAnswer(model.get("lesson"), model.get("level"), model.get("question"), answer);
      status.textContent = delivery === "sent" ? "Submitted." : delivery === "rejected" ? "This answer could not be recorded." : describe({ kind: delivery });
      status.dataset.delivery = delivery;
      // SubmitBtn's out_func prints its confirmation in the kernel (when the kernel can be reached).
      model.send({ kind: "submitted", delivery });
    } catch (err) {
      status.textContent = `Could not record this answer: ${err.message || err}`;
    }
  });
}

// ------------------------------------------------------------------ entry points

function initialize(context) {
  if (context.model.get("kind") === "status") return initializeStatus(context);
  return undefined;
}

function render(context) {
  const kind = context.model.get("kind");
  if (kind === "status") return renderStatus(context);
  if (kind === "submit") return renderSubmit(context);
  return undefined;
}

export default { initialize, render };
