// Hour of CI animation: three small tasks, each reported through the hourofci-log SDK.
// The SDK keeps every event in localStorage until the collector has stored it, so the
// learner only ever sees a quiet status line, never an alert.

/** The collectors the lesson author allows (meta hourofci-endpoints); the first is the default. */
function allowedEndpoints() {
  const meta = document.querySelector('meta[name="hourofci-endpoints"]');
  return (meta ? meta.content : "").split(/\s+/).filter(Boolean).map((e) => e.replace(/\/+$/, ""));
}

function readConfig() {
  const params = new URLSearchParams(location.search);
  // A notebook that inlines this page (srcdoc, no query string) sets a JSON block instead;
  // it comes from the notebook's own kernel, not from an address anyone can craft.
  const block = document.getElementById("hourofci-config");
  const fromHost = block ? JSON.parse(block.textContent) : null;
  if (fromHost) {
    return { ...fromHost, endpoint: String(fromHost.endpoint).replace(/\/+$/, ""), test: fromHost.test === true, refused: null };
  }
  const allowed = allowedEndpoints();
  const asked = params.get("endpoint");
  const endpoint = asked === null ? allowed[0] : asked.replace(/\/+$/, "");
  return {
    endpoint,
    lesson: params.get("lesson") || "template",
    level: params.get("level") || "template",
    test: params.get("test") === "1",
    // Never send answers (or load anything) from an address the page was merely given.
    refused: endpoint && allowed.includes(endpoint) ? null : String(endpoint),
  };
}

/** Why this browser cannot keep answers, or null. */
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

/** The SDK the notebook page loaded (srcdoc pages share its origin), or null. */
async function hostSdk() {
  for (let waited = 0; waited < 120_000; waited += 100) {
    const lesson = window.parent !== window ? window.parent.hourofciLesson : null;
    if (lesson && lesson.sdk) return lesson.sdk;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

const config = readConfig();
// The SDK module, as soon as it is imported (before its wasm is ready).
let moduleReady;
const sdkModule = new Promise((resolve) => (moduleReady = resolve));
const statusLine = document.getElementById("status");
let loggedCount = 0;

function showStatus(kind, text) {
  statusLine.dataset.kind = kind;
  statusLine.textContent = text;
}

function describe(event) {
  switch (event.kind) {
    case "sent":
      return event.pending > 0
        ? `Answer recorded. ${event.pending} more waiting to be sent.`
        : "Answer recorded.";
    case "queued":
      return "Saved on this device; it will be sent when you're back online.";
    case "queued-memory":
      return "Not saved on this device (its storage is full or disabled): keep this page open until it is sent.";
    case "rejected":
      return `This answer could not be recorded (${event.reason || "refused by the server"}).`;
    case "dropped":
      return `${event.count} older unsent answers had to be discarded to make room.`;
    default:
      return "";
  }
}

// Loaded once, from this page's own folder. Every log call waits only for the module
// (the SDK stores a call made while its wasm still loads at once, and sends it later).
const sdkReady = (async () => {
  try {
    if (config.refused !== null) {
      throw new Error(`this page may not send answers to ${config.refused}; the lesson allows ${allowedEndpoints().join(", ") || "no collector"}`);
    }
    let sdk;
    if (config.sdk === "host") {
      sdk = await hostSdk();
      if (!sdk) throw new Error("the notebook's answer recorder did not start");
    } else {
      const problem = browserProblem();
      if (problem) throw new Error(problem);
      sdk = await import("./sdk/hourofci-log.js");
      const loading = sdk.init({ endpoint: config.endpoint, test: config.test });
      moduleReady(sdk);
      await loading;
    }
    sdk.onStatus((event) => showStatus(event.kind, describe(event)));
    const waiting = sdk.pending();
    showStatus("ready", waiting > 0 ? `Ready. Sending ${waiting} saved answers…` : "Ready: your answers are recorded.");
    document.body.dataset.logging = "ready";
    return sdk;
  } catch (err) {
    console.warn("hourofci: answer recorder unavailable", err);
    showStatus("unavailable", `Your answers can't be recorded here: ${err && err.message ? err.message : err}. The tasks still work.`);
    document.body.dataset.logging = "unavailable";
    moduleReady(null);
    return null;
  }
})();

async function record(kind, question, value) {
  const send = (sdk) =>
    kind === "answer" ? sdk.logAnswer(config.lesson, config.level, question, value) : sdk.logInteraction(config.lesson, config.level, question, value);
  try {
    // An SDK that stores calls made while its wasm loads takes them at once; one that
    // does not ("call init() first") gets them once it is ready.
    const early = await Promise.race([sdkModule, sdkReady]);
    if (early) {
      await send(early).catch(async (err) => {
        if (!/call init\(\) first/.test(String(err && err.message))) throw err;
        const sdk = await sdkReady;
        if (sdk) await send(sdk);
      });
    }
  } catch (err) {
    // Only wrong arguments reject; say so quietly rather than break the task.
    showStatus("error", `Could not record this answer: ${err && err.message ? err.message : err}`);
  } finally {
    loggedCount += 1;
    // Lets a test (or a curious author) see that every click has been handed to the SDK.
    document.body.dataset.logged = String(loggedCount);
  }
}

// Task 1: click the right building. A click on a building is an answer ("true" when it
// is the right one, like the old animations); a click on empty ground is an interaction.
const CORRECT_SPOT = "data-center";
const spotFeedback = document.getElementById("spot-feedback");
const campus = document.getElementById("campus");

function chooseSpot(spot) {
  const correct = spot === CORRECT_SPOT;
  spotFeedback.textContent = correct
    ? "Yes! The data center houses the supercomputer."
    : "Not quite. Where would racks of computers be kept cool?";
  campus.querySelectorAll(".building").forEach((b) => b.classList.toggle("chosen", b.dataset.spot === spot));
  record("answer", "1A", correct ? "true" : "false");
}

campus.addEventListener("click", (e) => {
  const building = e.target.closest(".building");
  if (building) {
    chooseSpot(building.dataset.spot);
    return;
  }
  const box = campus.getBoundingClientRect();
  record("interaction", "1A", {
    action: "click",
    on: "ground",
    x: Math.round(((e.clientX - box.left) / box.width) * 400),
    y: Math.round(((e.clientY - box.top) / box.height) * 200),
  });
});
campus.addEventListener("keydown", (e) => {
  const building = e.target.closest(".building");
  if (building && (e.key === "Enter" || e.key === " ")) {
    e.preventDefault();
    chooseSpot(building.dataset.spot);
  }
});

// Task 2: drag data sets into bins (pointer events: mouse, pen and touch alike).
// Clicking an item and then a bin does the same for keyboard and switch users.
const EXPECTED_BIN = {
  "elevation-grid": "raster",
  "satellite-image": "raster",
  "road-lines": "vector",
  "city-points": "vector",
};
const sortFeedback = document.getElementById("sort-feedback");
let selectedItem = null;

function placeItem(item, bin) {
  bin.appendChild(item);
  item.classList.remove("selected");
  selectedItem = null;
  record("interaction", "2A", { action: "drop", item: item.dataset.item, bin: bin.dataset.bin });
}

function binAt(x, y, dragged) {
  return (
    document
      .elementsFromPoint(x, y)
      .filter((el) => !dragged.contains(el))
      .map((el) => el.closest("[data-bin]"))
      .find(Boolean) || null
  );
}

document.querySelectorAll(".item").forEach((item) => {
  let drag = null;
  let suppressClick = false;
  item.addEventListener("pointerdown", (e) => {
    drag = { startX: e.clientX, startY: e.clientY, moved: false };
    suppressClick = false;
    item.setPointerCapture(e.pointerId);
  });
  item.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.startX;
    const dy = e.clientY - drag.startY;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true;
    item.classList.add("dragging");
    item.style.transform = `translate(${dx}px, ${dy}px)`;
  });
  item.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const moved = drag.moved;
    drag = null;
    item.classList.remove("dragging");
    item.style.transform = "";
    if (!moved) return; // a plain click: handled by the click listener below
    suppressClick = true; // the browser still fires click after a drag
    const bin = binAt(e.clientX, e.clientY, item);
    if (bin && bin !== item.parentElement) placeItem(item, bin);
  });
  item.addEventListener("click", (e) => {
    e.stopPropagation();
    if (suppressClick) {
      suppressClick = false;
      return;
    }
    if (selectedItem) selectedItem.classList.remove("selected");
    selectedItem = selectedItem === item ? null : item;
    if (selectedItem) item.classList.add("selected");
  });
  item.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      item.click();
    }
  });
});

document.querySelectorAll("[data-bin]").forEach((bin) => {
  const choose = () => {
    if (selectedItem && selectedItem.parentElement !== bin) placeItem(selectedItem, bin);
  };
  bin.addEventListener("click", choose);
  bin.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      choose();
    }
  });
});

document.getElementById("sort-check").addEventListener("click", () => {
  const placement = {};
  for (const item of document.querySelectorAll(".item")) {
    placement[item.dataset.item] = item.parentElement.dataset.bin;
  }
  const right = Object.keys(EXPECTED_BIN).filter((k) => placement[k] === EXPECTED_BIN[k]).length;
  sortFeedback.textContent =
    right === 4 ? "All four sorted correctly!" : `${right} of 4 are in the right place. Try moving the others.`;
  record("answer", "2A", placement);
});

// Task 3: free text, recorded exactly as typed (no trimming: the answer is the learner's).
const freeAnswer = document.getElementById("free-answer");
document.getElementById("free-submit").addEventListener("click", () => {
  const text = freeAnswer.value;
  if (text === "") return;
  freeAnswer.value = "";
  record("answer", "3A", text);
});
