"""Record a learner's answers in an Hour of CI lesson notebook.

Every answer leaves from the learner's browser through the hourofci-log SDK (loaded
from the collector's ``/sdk/``), so it is kept in the browser's storage while offline
and sent later, exactly once. Nothing is sent from the kernel.

    import hourofci_lesson
    lesson = hourofci_lesson.start()              # lesson/level from the notebook's path
    lesson.submit_button("2A", some_ipywidget)    # replaces the old SubmitBtn
    lesson.animation("../animation/index.html")   # an HTML animation in an iframe

Cells tagged with a question id (e.g. ``1C``) log the answer ``run`` each time they run.
See README.md beside this file.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import anywidget
import ipywidgets
import traitlets
from IPython import get_ipython
from IPython.display import HTML, Javascript, display

DEFAULT_ENDPOINT = "https://check.hourofci.org:4000"
LESSONS = {
    "template", "gateway", "big-data", "computational-thinking", "cyberinfrastructure",
    "geospatial-data", "interdisciplinary-communication", "parallel-computation",
    "spatial-modeling-analytics", "spatial-thinking",
}
LEVELS = {"template", "gateway", "beginner", "advanced"}
QUESTION_ID = re.compile(r"[1-9][A-Z]")


def lesson_and_level_from_path(notebook_path: str) -> tuple[str | None, str | None]:
    """Lesson and level from where a notebook lives, or (None, None).

    Two layouts are recognised:
      * ``<level>-lessons/<lesson>/...`` e.g. ``beginner-lessons/geospatial-data/gd-2.ipynb``
      * ``<lesson>/<level>/<notebook>.ipynb`` e.g. ``big-data/advanced/bd-1.ipynb``
    """
    parts = PurePosixPath(str(notebook_path).replace("\\", "/")).parts[:-1]
    for i, part in enumerate(parts[:-1]):
        level = part[: -len("-lessons")] if part.endswith("-lessons") else None
        if level in LEVELS and parts[i + 1] in LESSONS:
            return parts[i + 1], level
    if len(parts) >= 2 and parts[-2] in LESSONS and parts[-1] in LEVELS:
        return parts[-2], parts[-1]
    return None, None


def notebook_path() -> str | None:
    """The running notebook's path as Jupyter Server told the kernel (JupyterLab 4, Notebook 7)."""
    shell = get_ipython()
    session = shell.user_ns.get("__session__") if shell is not None else None
    return session or os.environ.get("JPY_SESSION_NAME")


_SDK_LOADER = r"""
// One SDK module per page (import() caches by URL); one init per settings.
const loading = new Map();
function loadSdk(endpoint, test) {
  const key = `${endpoint} ${test}`;
  if (!loading.has(key)) {
    loading.set(key, (async () => {
      const sdk = await import(`${endpoint}/sdk/hourofci-log.js`);
      await sdk.init({ endpoint, test });
      return sdk;
    })());
  }
  return loading.get(key);
}
function describe(e) {
  if (e.kind === "sent") return "Answer recorded.";
  if (e.kind === "queued") return "Saved on this device; it will be sent when you're back online.";
  if (e.kind === "queued-memory") return "Not saved on this device (its storage is full or disabled): keep this page open until it is sent.";
  if (e.kind === "rejected") return `This answer could not be recorded (${e.reason || "refused"}).`;
  if (e.kind === "dropped") return `${e.count} older unsent answers had to be discarded.`;
  return "";
}
"""

# The lesson's status line. It loads the SDK as soon as the widget exists in the page
# (not on a click: offline the module and wasm could no longer be fetched), publishes the
# lesson's settings for JavaScript cells, and logs "run" events the kernel reports.
_LOGGER_ESM = _SDK_LOADER + r"""
function initialize({ model }) {
  const endpoint = model.get("endpoint");
  const test = model.get("test");
  window.hourofciLesson = { endpoint, test, lesson: model.get("lesson"), level: model.get("level") };
  const ready = loadSdk(endpoint, test).then(
    (sdk) => { model.set("state", "ready"); model.save_changes(); return sdk; },
    (err) => { console.warn("hourofci: SDK unavailable", err); model.set("state", "unavailable"); model.save_changes(); return null; },
  );
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
function render({ model, el }) {
  const line = document.createElement("p");
  line.className = "hourofci-status";
  line.setAttribute("role", "status");
  el.appendChild(line);
  const show = (text) => { line.textContent = text; };
  show(`Lesson ${model.get("lesson")} (${model.get("level")}): connecting to the answer recorder…`);
  let unsubscribe = () => {};
  loadSdk(model.get("endpoint"), model.get("test")).catch(() => null).then((sdk) => {
    line.dataset.state = sdk ? "ready" : "unavailable";
    if (!sdk) return show("Answers can't be recorded right now (the answer server could not be reached).");
    show(`Lesson ${model.get("lesson")} (${model.get("level")}): your answers are recorded.`);
    unsubscribe = sdk.onStatus((e) => show(describe(e)));
  });
  return () => unsubscribe();
}
export default { initialize, render };
"""

_SUBMIT_ESM = _SDK_LOADER + r"""
async function currentAnswer(model, input) {
  if (input) return input.value;
  const ref = model.get("source");            // "IPY_MODEL_<id>" of the widget holding the answer
  const other = await model.widget_manager.get_model(ref.replace(/^IPY_MODEL_/, ""));
  const value = other.get("value");
  if (value !== undefined) return value;
  // Selection widgets (RadioButtons, Dropdown, SelectMultiple...) sync only the chosen
  // index in the browser: record the chosen label(s).
  const labels = other.get("_options_labels") || [];
  const index = other.get("index");
  if (Array.isArray(index)) return index.length ? index.map((i) => labels[i]) : null;
  return index === null || index === undefined ? null : labels[index];
}
function render({ model, el }) {
  const sdkReady = loadSdk(model.get("endpoint"), model.get("test")).catch((err) => {
    console.warn("hourofci: SDK unavailable", err);
    return null;
  });
  const box = document.createElement("div");
  box.className = "hourofci-submit";
  let input = null;
  if (!model.get("source")) {
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
    if (!sdk) {
      status.textContent = "Your answer can't be recorded right now (the answer server could not be reached).";
      return;
    }
    try {
      const delivery = await sdk.logAnswer(model.get("lesson"), model.get("level"), model.get("question"), answer);
      status.textContent = delivery === "sent" ? "Submitted." : describe({ kind: delivery });
      status.dataset.delivery = delivery;
    } catch (err) {
      status.textContent = `Could not record this answer: ${err.message || err}`;
    }
  });
}
export default { render };
"""

_CSS = """
.hourofci-status { font-size: 0.85em; color: #5b6472; margin: 0; }
.hourofci-submit { display: flex; gap: 0.5em; align-items: center; flex-wrap: wrap; }
.hourofci-submit textarea { flex: 1 1 20em; font: inherit; }
.hourofci-submit-status { font-size: 0.85em; color: #5b6472; }
"""


class _LessonWidget(anywidget.AnyWidget):
    endpoint = traitlets.Unicode().tag(sync=True)
    test = traitlets.Bool(False).tag(sync=True)
    lesson = traitlets.Unicode().tag(sync=True)
    level = traitlets.Unicode().tag(sync=True)


class LessonLogger(_LessonWidget):
    """The status line shown by :func:`start`; relays "run" events to the browser."""

    _esm = _LOGGER_ESM
    _css = _CSS
    state = traitlets.Unicode("loading").tag(sync=True)


class SubmitButton(_LessonWidget):
    """A Submit button whose click records the answer from the browser.

    With ``source`` (any ipywidget with a ``value``), the answer is that widget's value
    as the browser sees it; without, the button brings its own text box.
    """

    _esm = _SUBMIT_ESM
    _css = _CSS
    question = traitlets.Unicode().tag(sync=True)
    description = traitlets.Unicode("Submit").tag(sync=True)
    source = traitlets.Instance(ipywidgets.Widget, allow_none=True).tag(sync=True, **ipywidgets.widget_serialization)


class Lesson:
    """Settings for one lesson notebook; see :func:`start`."""

    def __init__(self, lesson=None, level=None, *, endpoint=None, test=None, path=None):
        self.endpoint = (endpoint or os.environ.get("HOURCI_LOG_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.test = test if test is not None else os.environ.get("HOURCI_LOG_TEST") == "1"
        self.path = path or notebook_path()
        from_path = lesson_and_level_from_path(self.path) if self.path else (None, None)
        self.lesson = lesson or from_path[0]
        self.level = level or from_path[1]
        if not self.lesson or not self.level:
            raise ValueError(
                f"hourofci_lesson: cannot tell the lesson and level of {self.path!r}: keep the notebook under "
                "<level>-lessons/<lesson>/ or <lesson>/<level>/, or pass lesson= and level= "
                f"(lessons: {sorted(LESSONS)}; levels: {sorted(LEVELS)})"
            )
        self.logger = None
        self._tags_by_cell_id = None

    def _settings(self):
        return dict(endpoint=self.endpoint, test=self.test, lesson=self.lesson, level=self.level)

    def submit_button(self, question, source=None, description="Submit"):
        """A Submit button for ``question`` (e.g. "2A"); replaces the old SubmitBtn."""
        if not QUESTION_ID.fullmatch(question):
            raise ValueError(f"question must look like 1A..9Z, got {question!r}")
        return SubmitButton(question=question, source=source, description=description, **self._settings())

    def animation(self, src, height=620):
        """Show an HTML animation in an iframe that reports through the SDK.

        ``src`` is either an http(s) URL (the lesson settings are added as query
        parameters), or a file path relative to the notebook. A file is inlined into
        ``<iframe srcdoc>``: Jupyter serves ``/files/`` with ``Content-Security-Policy:
        sandbox``, which would give the page an opaque origin (no localStorage, so no
        offline queue, and CORS origin ``null``).
        """
        settings = self._settings()
        if re.match(r"https?://", src):
            query = {"endpoint": self.endpoint, "lesson": self.lesson, "level": self.level}
            if self.test:
                query["test"] = "1"
            sep = "&" if "?" in src else "?"
            url = src + sep + "&".join(f"{k}={_quote(v)}" for k, v in query.items())
            frame = f'<iframe src="{html.escape(url)}" style="width:100%;height:{int(height)}px;border:0" title="lesson animation"></iframe>'
        else:
            document = _inline_page(Path(src), settings)
            frame = f'<iframe srcdoc="{html.escape(document)}" style="width:100%;height:{int(height)}px;border:0" title="lesson animation"></iframe>'
        # Wrapped so IPython does not suggest IFrame (which cannot inline the page).
        return HTML(f"<div class=\"hourofci-animation\">{frame}</div>")

    # -- "run" events for tagged cells -------------------------------------------------

    def _tags(self, info):
        # JupyterLab 4 and Notebook 7 send the cell's metadata (tags included) with
        # every execute request; other front ends only send the cell id, so fall back
        # to the saved notebook.
        meta = getattr(info, "cell_meta", None) or {}
        if "tags" in meta:
            return meta.get("tags") or []
        cell_id = getattr(info, "cell_id", None)
        if not cell_id or not self.path:
            return []
        if self._tags_by_cell_id is None or cell_id not in self._tags_by_cell_id:
            self._tags_by_cell_id = _tags_from_file(self.path)
        return self._tags_by_cell_id.get(cell_id, [])

    def _after_cell(self, result):
        if self.logger is None:
            return
        questions = [tag for tag in self._tags(result.info) if QUESTION_ID.fullmatch(tag)]
        if not questions:
            return
        # The browser connection that asked for this execution (its kernel client id).
        kernel = getattr(get_ipython(), "kernel", None)
        parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else {}
        client = (parent or {}).get("header", {}).get("session")
        for question in questions:
            self.logger.send({"kind": "run", "question": question, "client": client})


_active: Lesson | None = None


def start(lesson=None, level=None, *, endpoint=None, test=None):
    """Set up answer logging for this notebook and show its status line.

    ``endpoint`` defaults to $HOURCI_LOG_ENDPOINT, else https://check.hourofci.org:4000;
    ``test`` to $HOURCI_LOG_TEST == "1" (log to the test table).
    """
    global _active
    shell = get_ipython()
    if _active is not None and shell is not None:
        shell.events.unregister("post_run_cell", _active._after_cell)
    current = Lesson(lesson, level, endpoint=endpoint, test=test)
    current.logger = LessonLogger(**current._settings())
    if shell is not None:
        shell.events.register("post_run_cell", current._after_cell)
    _active = current
    # Published at once for JavaScript cells: the widget's module loads asynchronously, and
    # with "Run All" the next cell's JavaScript may run before it.
    settings = json.dumps(current._settings()).replace("</", "<\\/")
    display(Javascript(f"window.hourofciLesson = {settings};"))
    display(current.logger)
    return current


def _quote(value):
    return quote(str(value), safe="")


def _tags_from_file(path):
    candidates = [Path(path), Path.cwd() / Path(path).name]
    for candidate in candidates:
        try:
            notebook = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return {c.get("id"): c.get("metadata", {}).get("tags", []) for c in notebook.get("cells", []) if c.get("id")}
    return {}


def _inline_page(page: Path, settings: dict) -> str:
    """The page with its local stylesheets and scripts inlined, and the settings injected."""
    text = page.read_text(encoding="utf-8")
    base = page.parent

    def style(match):
        css = (base / match.group(1)).read_text(encoding="utf-8")
        return "<style>\n" + css.replace("</style", "<\\/style") + "\n</style>"

    def script(match):
        js = (base / match.group(2)).read_text(encoding="utf-8")
        return f'<script{match.group(1)}>\n' + js.replace("</script", "<\\/script") + "\n</script>"

    text = re.sub(r'<link rel="stylesheet" href="(?!https?:)([^"]+)">', style, text)
    text = re.sub(r'<script((?: type="module")?) src="(?!https?:)([^"]+)"></script>', script, text)
    config = json.dumps(settings).replace("</", "<\\/")
    return text.replace("<head>", f"<head>\n<script>window.hourofciAnimationConfig = {config};</script>", 1)
