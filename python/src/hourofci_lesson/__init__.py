"""Record a learner's answers in an Hour of CI lesson notebook.

Every answer leaves from the learner's browser through the hourofci-log SDK, which
ships inside this package and reaches the page through the kernel (never from the
collector), so answers are kept in the browser's storage while the collector cannot be
reached and sent later, exactly once. Nothing is sent from the kernel.

    import hourofci_lesson
    lesson = hourofci_lesson.start()              # lesson/level from the notebook's path
    lesson.submit_button("2A", some_ipywidget)    # a Submit button for question 2A
    lesson.animation("../animation/index.html")   # an HTML animation in an iframe

    from hourofci_lesson import SubmitBtn         # old notebooks: only the import changes
    SubmitBtn(user_agent, "gateway", "beginner", "2A", widget, out_func=out)

Cells tagged with a question id (e.g. ``1C``) log the answer ``run`` each time they run.
See the README of the package and examples/notebook/ in the hourofci-log repository.
"""

from __future__ import annotations

import base64
import hashlib
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


_HERE = Path(__file__).resolve().parent
SDK_DIR = _HERE / "sdk"
"""The built browser SDK (js/dist of hourofci-log) shipped in this package."""

_WIDGET_ESM = (_HERE / "widget.js").read_text(encoding="utf-8")

_CSS = """
.hourofci-status { font-size: 0.85em; color: #5b6472; margin: 0; }
.hourofci-submit { display: flex; gap: 0.5em; align-items: center; flex-wrap: wrap; }
.hourofci-submit textarea { flex: 1 1 20em; font: inherit; }
.hourofci-submit-status { font-size: 0.85em; color: #5b6472; }
"""


class SdkAssets(anywidget.AnyWidget):
    """The browser SDK, sent once per kernel to the page: the wasm as a binary buffer
    (no base64) and its two ES modules as text. Never displayed; the lesson widgets
    refer to it and import the SDK from it (see widget.js and docs/DESIGN.md)."""

    _esm = "export default {};"
    wasm = traitlets.Bytes().tag(sync=True)
    glue = traitlets.Unicode().tag(sync=True)
    shim = traitlets.Unicode().tag(sync=True)


_assets: SdkAssets | None = None


def sdk_assets(fresh: bool = False) -> SdkAssets:
    """The kernel's SdkAssets widget; ``fresh``: a new one (each :func:`start` sends the
    SDK again, so a page opened later on a running kernel need not find an old model)."""
    global _assets
    if _assets is None or fresh:
        missing = [f for f in ("hourofci-log.js", "hourofci_sdk.js", "hourofci_sdk_bg.wasm") if not (SDK_DIR / f).is_file()]
        if missing:
            raise RuntimeError(f"hourofci_lesson: the browser SDK is missing from {SDK_DIR} ({', '.join(missing)}); reinstall the package")
        _assets = SdkAssets(
            wasm=(SDK_DIR / "hourofci_sdk_bg.wasm").read_bytes(),
            glue=(SDK_DIR / "hourofci_sdk.js").read_text(encoding="utf-8"),
            shim=(SDK_DIR / "hourofci-log.js").read_text(encoding="utf-8"),
        )
    return _assets


class _LessonWidget(anywidget.AnyWidget):
    _esm = _WIDGET_ESM
    _css = _CSS
    kind = traitlets.Unicode().tag(sync=True)
    endpoint = traitlets.Unicode().tag(sync=True)
    test = traitlets.Bool(False).tag(sync=True)
    lesson = traitlets.Unicode().tag(sync=True)
    level = traitlets.Unicode().tag(sync=True)
    user_agent = traitlets.Unicode("").tag(sync=True)
    # The hub user's salted hash (learner_id_from_hub), or "" for the browser's own id.
    learner_id = traitlets.Unicode("").tag(sync=True)
    sdk = traitlets.Instance(SdkAssets).tag(sync=True, **ipywidgets.widget_serialization)

    def __init__(self, **kwargs):
        if kwargs.get("sdk") is None:
            kwargs["sdk"] = sdk_assets()
        super().__init__(**kwargs)


class LessonLogger(_LessonWidget):
    """The status line shown by :func:`start`; relays "run" events to the browser."""

    kind = traitlets.Unicode("status").tag(sync=True)
    state = traitlets.Unicode("loading").tag(sync=True)


class SubmitButton(_LessonWidget):
    """A Submit button whose click records the answer from the browser.

    With ``source`` (any ipywidget with a ``value``), the answer is that widget's value
    as the browser sees it; without, the button brings its own text box.
    """

    kind = traitlets.Unicode("submit").tag(sync=True)
    question = traitlets.Unicode().tag(sync=True)
    description = traitlets.Unicode("Submit").tag(sync=True)
    sources = traitlets.List(traitlets.Instance(ipywidgets.Widget)).tag(sync=True, **ipywidgets.widget_serialization)
    # SubmitBtn: the answer is Python's str() of the value(s), as the original logged it.
    python_str = traitlets.Bool(False).tag(sync=True)
    source_is_list = traitlets.Bool(False).tag(sync=True)
    fixed_answer = traitlets.Unicode(None, allow_none=True).tag(sync=True)

    def __init__(self, source=None, **kwargs):
        if source is not None:
            kwargs["sources"] = [source]
        super().__init__(**kwargs)
        self._on_submitted = None
        self.on_msg(self._handle_msg)

    def _handle_msg(self, _widget, content, _buffers):
        if isinstance(content, dict) and content.get("kind") == "submitted" and self._on_submitted:
            self._on_submitted(content.get("delivery"))


class Lesson:
    """Settings for one lesson notebook; see :func:`start`."""

    def __init__(self, lesson=None, level=None, *, endpoint=None, test=None, path=None):
        self.endpoint = (endpoint or os.environ.get("HOURCI_LOG_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.test = test if test is not None else os.environ.get("HOURCI_LOG_TEST") == "1"
        self.path = path or notebook_path()
        from_path = lesson_and_level_from_path(self.path) if self.path else (None, None)
        self.lesson = lesson or from_path[0]
        self.level = level or from_path[1]
        self.learner_id = learner_id_from_hub() or ""
        if not self.lesson or not self.level:
            raise ValueError(
                f"hourofci_lesson: cannot tell the lesson and level of {self.path!r}: keep the notebook under "
                "<level>-lessons/<lesson>/ or <lesson>/<level>/, or pass lesson= and level= "
                f"(lessons: {sorted(LESSONS)}; levels: {sorted(LEVELS)})"
            )
        self.logger = None
        self._tags_by_cell_id = None

    def _settings(self):
        return dict(endpoint=self.endpoint, test=self.test, lesson=self.lesson, level=self.level, learner_id=self.learner_id)

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
    ``test`` to $HOURCI_LOG_TEST == "1" (log to the test table). In a JupyterHub that sets
    $HOURCI_LEARNER_SALT, answers carry :func:`learner_id_from_hub` as their learner id;
    otherwise the SDK's random id of the browser profile.
    """
    global _active
    shell = get_ipython()
    if _active is not None and shell is not None:
        shell.events.unregister("post_run_cell", _active._after_cell)
    current = Lesson(lesson, level, endpoint=endpoint, test=test)
    current.logger = LessonLogger(sdk=sdk_assets(fresh=True), **current._settings())
    if shell is not None:
        shell.events.register("post_run_cell", current._after_cell)
    _active = current
    # Published at once for JavaScript cells: the widget's module loads asynchronously, and
    # with "Run All" the next cell's JavaScript may run before it.
    # `sdk` is a promise of the SDK that the status widget resolves once it is loaded.
    settings = json.dumps(current._settings()).replace("</", "<\\/")
    display(Javascript(
        f"const l = (window.hourofciLesson ??= {{}}); Object.assign(l, {settings});"
        " if (!l.sdk) l.sdk = new Promise((r) => { l.resolveSdk = r; });"
    ))
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


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _inline_page(page: Path, settings: dict) -> str:
    """The page with its local stylesheets and scripts inlined, for ``<iframe srcdoc>``.

    The settings go in as a JSON data block (``#hourofci-config``, with ``"sdk": "host"``:
    the page uses the SDK the notebook's status widget loaded, through ``parent``, since
    a srcdoc page shares the notebook's origin). The page's Content-Security-Policy is
    kept, with ``'self'`` sources replaced by the hashes of what was inlined.
    """
    text = page.read_text(encoding="utf-8")
    base = page.parent
    scripts, styles = [], []

    def style(match):
        css = "\n" + (base / match.group(1)).read_text(encoding="utf-8").replace("</style", "<\\/style") + "\n"
        styles.append(css)
        return f"<style>{css}</style>"

    def script(match):
        js = "\n" + (base / match.group(2)).read_text(encoding="utf-8").replace("</script", "<\\/script") + "\n"
        scripts.append(js)
        return f"<script{match.group(1)}>{js}</script>"

    text = re.sub(r'<link rel="stylesheet" href="(?!https?:)([^"]+)">', style, text)
    text = re.sub(r'<script((?: type="module")?) src="(?!https?:)([^"]+)"></script>', script, text)
    config = json.dumps({**settings, "sdk": "host"}).replace("</", "<\\/")
    text = re.sub(r'<script type="application/json" id="hourofci-config">.*?</script>\s*', "", text, flags=re.S)
    text = text.replace("<head>", f'<head>\n<script type="application/json" id="hourofci-config">{config}</script>', 1)

    def policy(match):
        directives = []
        for directive in match.group(2).split(";"):
            name, *sources = directive.split()
            if name == "script-src":
                sources = [s for s in sources if s != "'self'"] + [_csp_hash(js) for js in scripts]
            elif name == "style-src":
                sources = [s for s in sources if s != "'self'"] + [_csp_hash(css) for css in styles]
            directives.append(" ".join([name, *sources]))
        return match.group(1) + html.escape("; ".join(directives)) + match.group(3)

    return re.sub(r'(<meta http-equiv="Content-Security-Policy" content=")([^"]*)(">)', policy, text)


# ------------------------------------------------------------------ the original helper's name


def learner_id_from_hub(user: str | None = None, salt: str | None = None) -> str | None:
    """The pseudonymous learner id of a JupyterHub user, or None (then the browser's own).

    ``user`` defaults to $JUPYTERHUB_USER and ``salt`` to $HOURCI_LEARNER_SALT (a secret the
    hub sets for every user's server). Without both, None: a bare hash of a user name could
    be reversed by hashing a list of names. The id is SHA-256 of ``salt``, a NUL and
    ``user``, its first 16 bytes formatted as a UUID with the version-4 and RFC 4122
    variant bits set (so never the nil UUID): the same learner on every notebook and
    browser of the hub, and nothing about the person in it.
    """
    user = os.environ.get("JUPYTERHUB_USER") if user is None else user
    salt = os.environ.get("HOURCI_LEARNER_SALT") if salt is None else salt
    if not user or not salt:
        return None
    b = bytearray(hashlib.sha256(salt.encode("utf-8") + b"\0" + user.encode("utf-8")).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def SubmitBtn(*args, out_func=None, text="Submit", test=False, endpoint=None):  # noqa: N802 (the original's name)
    """The original ``hourofci.py`` helper, recording through the browser SDK.

    ``SubmitBtn(user_agent, lesson, lesson_level, question, widget, out_func=out,
    text="Submit", test=False)`` shows a button; a click records, from the browser,
    what the original sent from the kernel: ``widget`` itself when it is a string,
    ``str(widget.value)`` for one widget, ``str([w.value for w in widget])`` for a list
    of widgets. ``user_agent`` (the browser's user-agent string) is stored as its MD5
    hex digest, as before; when empty, the SDK uses the MD5 of the browser's own.
    ``out_func`` (an ``ipywidgets.Output`` or a function of one string) gets the
    confirmation; ``test=True`` records into ``loggingtable_test``. The learner id is
    :func:`learner_id_from_hub` when the hub sets a salt, else the browser's own.

    The later form ``SubmitBtn(widget, out_func=out, ...)`` recorded nothing in the
    original (its request was commented out); here too it only confirms.
    The collector is $HOURCI_LOG_ENDPOINT or https://check.hourofci.org:4000 unless
    ``endpoint=`` is given (or :func:`start` was called with one).
    """
    if len(args) == 5:
        user_agent, lesson, level, question, widget = args
        record = True
    elif len(args) == 1:
        user_agent, lesson, level, question, widget = "", "template", "template", "1A", args[0]
        record = False
    else:
        raise TypeError(
            "SubmitBtn(user_agent, lesson, lesson_level, question, widget, out_func=..., text=..., test=...) "
            f"takes 5 positional arguments (or just the widget), got {len(args)}"
        )
    if endpoint is None:
        endpoint = _active.endpoint if _active is not None else os.environ.get("HOURCI_LOG_ENDPOINT") or DEFAULT_ENDPOINT
    options = dict(
        endpoint=str(endpoint).rstrip("/"),
        test=bool(test),
        lesson=str(lesson),
        level=str(level),
        question=str(question),
        description=str(text),
        user_agent=_md5_hex(str(user_agent)) if user_agent else "",
        learner_id=learner_id_from_hub() or "",
        python_str=True,
    )
    if isinstance(widget, str):
        options["fixed_answer"] = widget
    elif isinstance(widget, (list, tuple)):
        options["sources"] = list(widget)
        options["source_is_list"] = True
    else:
        options["sources"] = [widget]
    if not record:
        button = ipywidgets.Button(description=str(text))
        button.on_click(lambda _b: _confirm(out_func, "Submit Successfully!"))
        display(button)
        return None
    button = SubmitButton(**options)
    button._on_submitted = lambda delivery: _confirm(
        out_func,
        "Submit Successfully!" if delivery == "sent" else "Saved on this device; it will be sent when you're back online.",
    )
    display(button)
    return None


def _confirm(out_func, message):
    if out_func is None:
        return
    if isinstance(out_func, ipywidgets.Output):
        with out_func:
            print(message)
    elif callable(out_func):
        out_func(message)
