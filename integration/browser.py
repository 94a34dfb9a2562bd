"""Drive ComfyUI's real frontend in headless Chromium: load a workflow and measure what a user sees.

Used by ``test_browser.py``. The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or
``WAN22DUO_CHROMIUM``) driven by Python Playwright with ``executable_path`` set to it: Playwright's
own browser download is never used (``playwright install`` is not needed and is never run).

Every measurement is taken from the live page after ``app.loadGraphData`` (what opening a
template does): LiteGraph's node and group bounds and widget rows in the classic canvas, the
DOM boxes of the nodes in Nodes 2.0 (Vue) mode, what covers each node's corners on screen
(``document.elementFromPoint``), and every string drawn with ``fillText`` on any canvas (a spy
installed before the page's scripts run), so the tests can check that the switch plot drew its
caption inside its own box.

Run as a script against a running ComfyUI with the pack installed, it measures the node sizes the
workflow layouts are built from (``workflows/schema/frontend-node-sizes.json``)::

    python integration/browser.py --measure http://127.0.0.1:8188
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1920, "height": 1080}
PACK_URL_PART = "wan22duo"  # our files are served under /extensions/ComfyUI-Wan22Duo/ (matched lower-case)
# Playwright's waits (navigation, locators, screenshots; 30 s by default): a shared or slow machine needs more.
TIMEOUT_MS = int(float(os.environ.get("WAN22DUO_BROWSER_TIMEOUT_S", "120")) * 1000)
# The frontend's first-run dialogs (template browser, missing models) would cover the canvas.
BASE_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}

# Records every fillText on any 2D canvas with its position in that canvas's pixels.
FILLTEXT_SPY = """
(() => {
  const original = CanvasRenderingContext2D.prototype.fillText;
  let next = 0;
  window.__wan22duoTexts = [];
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
    try {
      const canvas = this.canvas;
      if (canvas.__wan22duoId === undefined) canvas.__wan22duoId = ++next;
      const p = this.getTransform().transformPoint({ x, y });
      const log = window.__wan22duoTexts;
      log.push({ text: String(text), x: p.x, y: p.y, canvas: canvas.__wan22duoId,
                 width: canvas.width, height: canvas.height, scale: this.getTransform().d });
      if (log.length > 50000) log.splice(0, 25000);
    } catch (err) { /* recording is best effort */ }
    return original.call(this, text, x, y, ...rest);
  };
})();
"""

# What the page shows after a workflow loaded, in canvas units (classic) or CSS pixels (DOM).
MEASURE = """
(wf) => {
  const app = window.app, LG = window.LiteGraph, canvas = app.canvas, ds = canvas.ds;
  const rect = canvas.canvas.getBoundingClientRect();
  const toScreen = (x, y) => [rect.left + (x + ds.offset[0]) * ds.scale, rect.top + (y + ds.offset[1]) * ds.scale];
  const nodes = app.graph._nodes.map((n) => {
    const b = Array.from(n.getBounding());
    const widgets = (n.widgets ?? []).filter((w) => w.y !== undefined && !(w.hidden)).map((w) => ({
      name: w.name, type: w.type, rect: [n.pos[0], n.pos[1] + w.y, n.size[0], (w.computedHeight ?? 24) - 4] }));
    const dom = document.querySelector(`[data-node-id="${n.id}"]`);
    const r = dom?.getBoundingClientRect();
    // Nodes 2.0: the element showing the title (the deepest one holding exactly it), and whether CSS cuts it.
    const titleEl = dom ? Array.from(dom.querySelectorAll("*")).filter((el) => el.textContent.trim() === n.title)
      .filter((el) => !Array.from(el.children).some((c) => c.textContent.trim() === n.title)).pop() : null;
    const domTitle = !dom ? null : !titleEl ? "missing" :
      (titleEl.scrollWidth > titleEl.clientWidth + 1 || titleEl.scrollHeight > titleEl.clientHeight + 1) ? "cut" : "whole";
    return { id: n.id, type: n.type, comfyClass: n.comfyClass ?? n.type, title: n.title, bounding: b, widgets, domTitle,
             dom: r ? [r.left, r.top, r.width, r.height] : null,
             canvases: dom ? Array.from(dom.querySelectorAll("canvas")).map((c) => c.__wan22duoId ?? null) : [],
             caption: n.__wan22duoPlan?.plan?.caption ?? null, planError: n.__wan22duoPlan?.plan?.error ?? null };
  });
  const groups = app.graph._groups.map((g) => ({ title: g.title, bounding: Array.from(g._bounding),
                                                 titleHeight: g.titleHeight }));
  const registered = LG.registered_node_types;
  const missing = wf.nodes.filter((n) => !registered[n.type]).map((n) => `${n.id}:${n.type}`);
  const graphCanvas = canvas.canvas;
  // What the user sees at a screen point: the graph canvas (or a Vue node), or some other element on top.
  const coveredAt = (x, y) => {
    if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) return "off screen";
    const el = document.elementFromPoint(x, y);
    if (!el || el === graphCanvas || el.closest?.("[data-node-id], .dom-widget, .comfy-markdown")) return null;
    const id = el.id ? `#${el.id}` : "";
    const cls = typeof el.className === "string" ? el.className.split(/\\s+/).slice(0, 3).join(".") : "";
    return `${el.tagName.toLowerCase()}${id}${cls ? "." + cls : ""}`;
  };
  // First view: every node's and group's title bar is either in the window and uncovered, or wholly
  // beyond its right or bottom edge (reachable by panning); none sits under the frontend's panels or
  // off the left or top edge. The notes' title bars must be in view, and the first note wholly.
  const view = [];
  const checkPoint = (label, sx, sy, mustSee) => {
    if (sx >= innerWidth || sy >= innerHeight) {
      if (mustSee) view.push(`${label} at (${Math.round(sx)}, ${Math.round(sy)}) is off screen`);
      return;
    }
    const what = coveredAt(sx, sy);
    if (what) view.push(`${label} at (${Math.round(sx)}, ${Math.round(sy)}): ${what}`);
  };
  const notes = nodes.filter((n) => n.type === "MarkdownNote" || n.type === "Note");
  const firstNote = notes.length ? Math.min(...notes.map((n) => n.id)) : null;
  for (const n of nodes) {
    const [x, y, w, h] = n.bounding;
    const note = notes.includes(n);
    const corners = n.id === firstNote ? [[x, y], [x + w, y], [x, y + h], [x + w, y + h]] : [[x, y], [x + w, y]];
    for (const [cx, cy] of corners) {
      const [sx, sy] = toScreen(cx, cy);
      checkPoint(`node ${n.id} (${n.title}) corner`, sx - (cx > x ? 1 : -1), sy - (cy > y ? 1 : -1), note);
    }
  }
  for (const g of groups) {
    const [x, y, w] = g.bounding;
    for (const [cx, cy] of [[x + 1, y + 1], [x + w - 1, y + 1]]) {
      const [sx, sy] = toScreen(cx, cy);
      checkPoint(`group "${g.title}" title corner`, sx, sy, false);
    }
  }
  const noteText = Array.from(document.querySelectorAll(".comfy-markdown, [data-node-id] .comfy-markdown"))
    .flatMap((el) => Array.from(el.querySelectorAll("p, li")))
    .map((p) => p.getBoundingClientRect().height > 0 ? parseFloat(getComputedStyle(p).fontSize) *
         (p.getBoundingClientRect().height / (p.offsetHeight || p.getBoundingClientRect().height)) : null)
    .filter((v) => v !== null);
  return { nodes, groups, missing, view, graphCanvas: graphCanvas.__wan22duoId ?? null, scale: ds.scale, offset: Array.from(ds.offset),
           canvasRect: [rect.left, rect.top, rect.width, rect.height], noteFontPx: noteText,
           vue: !!document.querySelector("[data-node-id]") };
}
"""


# Frontend 1.49 (ComfyUI 0.33.0) checks a loaded workflow and shows "4 errors found. Resolve them before running
# the workflow." in the top right corner while model files are missing, which they always are in the test tree (a
# user who has the files never sees it). It covers whatever lies there, so it is hidden before a view is measured;
# the count is kept (Page.error_toasts). The errors themselves are checked in the Missing Models test.
HIDE_ERROR_TOAST = """
() => {
  const hits = Array.from(document.querySelectorAll("div"))
    .filter((d) => /\\d+ errors? found/.test(d.innerText || "") && d.innerText.length < 200 && d.getBoundingClientRect().width > 0);
  const outer = hits.filter((d) => !hits.some((o) => o !== d && o.contains(d)));
  for (const d of outer) d.style.display = "none";
  return outer.length;
}
"""


def chromium_path() -> str | None:
    path = os.environ.get("WAN22DUO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.path.exists(path) else None


def post_settings(url: str, settings: dict) -> None:
    """Store frontend settings on the server (``POST /settings``), as the settings dialog does."""
    request = urllib.request.Request(url + "/settings", data=json.dumps(settings).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"POST {url}/settings answered {response.status}")


class Page:
    """One browser page on the ComfyUI frontend, with the console and failed requests recorded."""

    def __init__(self, page, url: str):
        self.page = page
        self.url = url
        self.console: list = []  # (type, text, url of the script)
        self.failed: list = []  # (status, url)
        self.loaded: list = []  # urls answered with a status under 400
        self.error_toasts = 0  # "N errors found" notices hidden by the last load (HIDE_ERROR_TOAST)
        page.on("console", lambda m: self.console.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: self.console.append(("pageerror", f"{e}\n{getattr(e, 'stack', '')}", "")))
        page.on("response", lambda r: (self.failed if r.status >= 400 else self.loaded).append(
            (r.status, r.url) if r.status >= 400 else r.url))
        page.on("requestfailed", lambda r: self.failed.append((0, r.url)))

    def open(self) -> None:
        self.page.goto(self.url)
        self.page.wait_for_function("window.app?.graph && window.LiteGraph && window.app.canvas?.ds",
                                    timeout=max(180_000, TIMEOUT_MS))
        self.page.wait_for_timeout(1500)

    def pack_errors(self) -> list:
        """Errors and warnings from our files (or naming the pack), and every uncaught page error."""
        return [f"{kind}: {text} ({where})" for kind, text, where in self.console
                if kind == "pageerror" or (kind in ("error", "warning") and
                                           (PACK_URL_PART in where.lower() or "[wan22duo]" in text.lower()))]

    def load(self, workflow: dict, settle_ms: int = 2500, hide_error_toast: bool = True) -> dict:
        """Load ``workflow`` as opening a template does; measure it (``hide_error_toast``: see HIDE_ERROR_TOAST)."""
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(settle_ms)
        self.error_toasts = self.page.evaluate(HIDE_ERROR_TOAST) if hide_error_toast else 0
        self.redraw()
        return self.measure(workflow)

    def redraw(self) -> None:
        self.page.evaluate("() => { window.__wan22duoTexts.length = 0; app.canvas.setDirty(true, true); "
                           "app.canvas.draw(true, true); for (const n of app.graph._nodes) "
                           "for (const w of n.widgets ?? []) w.triggerDraw?.(); }")
        self.page.wait_for_timeout(500)

    def focus(self, node_id: int) -> None:
        """Scroll the canvas (1:1) so node ``node_id`` sits near the top left, and redraw.

        LiteGraph skips nodes outside the window, and draws widgets without text below 0.6x, so a
        node's drawing is only checked once it is in view at full quality.
        """
        self.page.evaluate("""(id) => { const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
            ds.scale = 1; ds.offset[0] = 400 - n.pos[0]; ds.offset[1] = 200 - n.pos[1]; }""", node_id)
        self.redraw()

    def measure(self, workflow: dict) -> dict:
        return self.page.evaluate(MEASURE, workflow)

    def texts(self) -> list:
        return self.page.evaluate("() => window.__wan22duoTexts.slice()")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path


@contextmanager
def browser_page(url: str, settings: dict, executable: str):
    """A fresh Chromium (own profile folder) on ``url`` with ``settings`` stored first; yields a Page."""
    from playwright.sync_api import sync_playwright

    post_settings(url, {**BASE_SETTINGS, **settings})
    profile = tempfile.mkdtemp(prefix="wan22duo-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=list(CHROMIUM_ARGS),
                viewport=VIEWPORT, device_scale_factor=1)
            try:
                context.set_default_timeout(TIMEOUT_MS)
                context.set_default_navigation_timeout(TIMEOUT_MS)
                context.add_init_script(FILLTEXT_SPY)
                page = Page(context.pages[0] if context.pages else context.new_page(), url)
                page.open()
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------- geometry checks (plain Python)


def intersects(a, b, margin: float = 0.0) -> bool:
    """Whether rectangles [x, y, w, h] overlap by more than ``margin`` on both axes."""
    return (min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]) > margin and
            min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]) > margin)


def covered_widgets(measured: dict) -> list:
    """Classic canvas: widget rows, node boxes and group title bars that another node or title covers."""
    problems = []
    nodes = measured["nodes"]
    for node in nodes:
        for other in nodes:
            if other is node:
                continue
            for widget in node["widgets"]:
                if intersects(widget["rect"], other["bounding"]):
                    problems.append(f"widget {widget['name']!r} of node {node['id']} ({node['title']}) is covered by "
                                    f"node {other['id']} ({other['title']})")
            if node["id"] < other["id"] and intersects(node["bounding"], other["bounding"]):
                problems.append(f"node {node['id']} ({node['title']}) and node {other['id']} ({other['title']}) "
                                "overlap (title bars and badges included)")
    for group in measured["groups"]:
        x, y, w, _ = group["bounding"]
        bar = [x, y, w, group["titleHeight"]]
        for node in nodes:
            if intersects(bar, node["bounding"]):
                problems.append(f"group title {group['title']!r} runs under node {node['id']} ({node['title']})")
    return problems


def overlapping_dom_nodes(measured: dict) -> list:
    """Nodes 2.0: node boxes (DOM, screen pixels) that overlap, and group title bars under a node."""
    problems = []
    boxes = [(n, n["dom"]) for n in measured["nodes"] if n["dom"]]
    for i, (a, ra) in enumerate(boxes):
        for b, rb in boxes[i + 1:]:
            if intersects(ra, rb, margin=1.0):
                problems.append(f"node {a['id']} ({a['title']}) and node {b['id']} ({b['title']}) overlap on screen")
    scale, (ox, oy) = measured["scale"], measured["offset"]
    left, top = measured["canvasRect"][:2]
    for group in measured["groups"]:
        x, y, w, _ = group["bounding"]
        bar = [left + (x + ox) * scale, top + (y + oy) * scale, w * scale, group["titleHeight"] * scale]
        for node, rect in boxes:
            if intersects(bar, rect, margin=1.0):
                problems.append(f"group title {group['title']!r} runs under node {node['id']} ({node['title']})")
    return problems


# ---------------------------------------------------------------- rendered sizes for scripts/workflow_layout.py

NATURAL = """
() => {
  const ds = app.canvas.ds;
  return app.graph._nodes.map((n) => {
    const dom = document.querySelector(`[data-node-id="${n.id}"]`);
    const r = dom?.getBoundingClientRect();
    return { id: n.id, type: n.type, classic: n.computeSize ? Array.from(n.computeSize()) : null,
             width: n.size[0], dom: r ? [r.width / ds.scale, r.height / ds.scale] : null };
  });
}
"""


def natural_sizes(url: str, executable: str, workflows: dict) -> dict:
    """``{key: [w, h]}`` (see scripts/workflow_layout.py): each node's smallest size in either mode.

    Each workflow is loaded with every node 20 units high, so the frontend grows each one to what
    its widgets need: ``computeSize()`` in the classic canvas, the DOM box's height in Nodes 2.0
    (divided by the factor that mode scales a classic layout by, less the title bar it includes; its
    width is the classic width scaled, so it says nothing). The factor is the DOM box's width over the
    node's: 1.2 in frontend 1.33 (ComfyUI 0.3.76), 1 in 1.49 (0.33.0), where a node whose model file is
    missing also grows an "Error" bar at its foot (a user opening a template without the files sees it).
    """
    sizes: dict = {}

    def keep(key, size):
        old = sizes.get(key, [0, 0])
        sizes[key] = [max(old[0], round(size[0])), max(old[1], round(size[1]))]

    for vue in (False, True):
        with browser_page(url, {"Comfy.VueNodes.Enabled": vue}, executable) as page:
            for name, workflow in sorted(workflows.items()):
                shrunk = json.loads(json.dumps(workflow))
                for node in shrunk["nodes"]:
                    node["size"] = [node["size"][0], 20]
                page.load(shrunk, settle_ms=2000)
                for node in page.page.evaluate(NATURAL):
                    key = f"{name}#{node['id']}" if node["type"] in ("MarkdownNote", "Note") else node["type"]
                    if vue and node["dom"]:
                        factor = node["dom"][0] / node["width"] if node["width"] else 1.2
                        keep(key, [0, node["dom"][1] / factor - 30])  # its width is the classic one x factor
                    elif not vue and node["classic"]:
                        keep(key, node["classic"])
    return sizes


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Measure the bundled workflows' node sizes in a running ComfyUI")
    parser.add_argument("--measure", metavar="URL", required=True, help="the ComfyUI server, e.g. http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "workflows" / "schema"
                        / "frontend-node-sizes.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the larger of each size already in --out and the one measured now (measure on "
                             "ComfyUI 0.3.76, then --merge on 0.33.0: frontend 1.49 grows a node whose model file "
                             "is missing by an 'Error' bar in Nodes 2.0)")
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        raise SystemExit("no Chromium binary (apt-get install chromium, or set WAN22DUO_CHROMIUM)")
    folder = Path(__file__).resolve().parent.parent / "example_workflows"
    sys.path.insert(0, str(folder.parent / "scripts"))
    from template_cards import CARDS, file_stem  # the files are named by their cards; sizes go by workflow name

    workflows = {c.name: json.loads((folder / f"{file_stem(c.name)}.json").read_text(encoding="utf-8")) for c in CARDS}
    version = json.loads(urllib.request.urlopen(args.measure + "/system_stats", timeout=10).read())["system"]
    try:
        from importlib.metadata import version as package_version

        frontend = package_version("comfyui_frontend_package")
    except Exception:  # measured against a server whose Python is not this one
        frontend = None
    sizes = natural_sizes(args.measure, executable, workflows)
    measured_on = [{"comfyui": version.get("comfyui_version"), "frontend_package": frontend}]
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text(encoding="utf-8"))
        for key, size in old["sizes"].items():
            new = sizes.get(key, [0, 0])
            sizes[key] = [max(size[0], new[0]), max(size[1], new[1])]
        measured_on = old.get("measured_on") or [{"comfyui": old.get("comfyui"),
                                                  "frontend_package": old.get("frontend_package")}]
        measured_on = [m for m in measured_on if m["comfyui"] != version.get("comfyui_version")] + [
            {"comfyui": version.get("comfyui_version"), "frontend_package": frontend}]
    data = {"about": "Smallest node sizes (canvas units) the ComfyUI frontend renders, classic or Nodes 2.0, "
                     "measured by integration/browser.py --measure; read by scripts/workflow_layout.py.",
            "comfyui": version.get("comfyui_version"), "frontend_package": frontend,
            **({"measured_on": measured_on} if len(measured_on) > 1 else {}),
            "sizes": dict(sorted(sizes.items()))}
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(sizes)} sizes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
