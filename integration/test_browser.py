"""Every bundled workflow opened in ComfyUI's real frontend, in headless Chromium, as a user sees it.

A ComfyUI server is started from the copied tree (this pack, ComfyUI-GGUF installed); Chromium
(Debian's ``chromium`` package, through Playwright with ``executable_path``; see
:mod:`browser`) opens its page at 1920 x 1080 and loads each ``example_workflows/*.json`` with
``app.loadGraphData``, the call that opening a template makes, once with the classic canvas and
once with Nodes 2.0 (``Comfy.VueNodes.Enabled``). Checks per workflow and mode:

* no uncaught page error and no console error or warning from the pack's files;
* no node type the frontend does not know (a missing custom node);
* nothing covered: in the classic canvas no widget row under another node (title bar and badges
  included), no two nodes overlapping, no group title under a node; in Nodes 2.0 no two node
  boxes overlapping on screen and no group title under a node;
* the first view (classic, the view the workflow saves): the notes' title bars and the first note
  wholly on screen, their text at least 9.5 px high, and every node's and group's title bar either on screen and not under the
  frontend's own panels, or wholly beyond the right or bottom edge (reached by panning);
* the switch plot of every sampler drew its caption, whole (not cut with an ellipsis), inside
  its own box: on the node in the classic canvas, inside the widget's canvas in Nodes 2.0.

* the samplers' titles whole (not cut with an ellipsis) in both modes;
* the template browser on the pack's category: the cards titled with their file names
  (``scripts/template_cards.py``) in the intended order, "01 Wan 2.2 T2V-A14B text to video" first,
  none cut, every thumbnail loaded; and the GGUF workflow's missing-models report (1.33's dialog, 1.49's
  Errors panel) without "Invalid directory" rows.

Screenshots of every view go to ``integration/artifacts/browser/`` (git-ignored; CI keeps it).
Runs on ComfyUI 0.3.76 (frontend 1.33) and 0.33.0 (frontend 1.49) alike.

Needs Python Playwright (``pip install playwright``; its browser download is never used) and a
Chromium binary. Without them the tests skip, unless ``WAN22DUO_REQUIRE_BROWSER=1`` (set by
``.ci/run``), which turns the skip into a failure.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from urllib.parse import unquote

import pytest

import browser
from comfy_server import start_server

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from template_cards import CARDS, file_stem  # noqa: E402  (example_workflows/<card title>.json)

UI_WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
NAME_OF = {file_stem(c.name): c.name for c in CARDS}  # file stem -> workflow name (ids, screenshot names)
# WAN22DUO_BROWSER_ONLY="t2v_a14b_native,ti2v_5b_native": open only these workflows (a quick local check;
# CI opens them all).
ONLY = [n for n in os.environ.get("WAN22DUO_BROWSER_ONLY", "").split(",") if n]
if ONLY:
    UI_WORKFLOWS = [p for p in UI_WORKFLOWS if NAME_OF.get(p.stem, p.stem) in ONLY]
# Screenshots and measurements; WAN22DUO_BROWSER_ARTIFACTS keeps two runs (two ComfyUI versions) apart.
ARTIFACTS = Path(os.environ.get("WAN22DUO_BROWSER_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts" / "browser")
SAMPLERS = ("Wan22DuoSampler", "Wan22DuoModelSampler")
OWN_CANVAS_OVERLAP = 13  # web/wan22duo_plot_draw.js: Nodes 2.0 puts a widget's canvas 13 px over the row above
MIN_NOTE_FONT_PX = 9.5  # the frontend's note text is 10 px at 1:1
MODES = {"classic": {"Comfy.VueNodes.Enabled": False}, "nodes2": {"Comfy.VueNodes.Enabled": True}}


def _require_browser() -> str:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Python Playwright is not installed (pip install playwright)"
    executable = browser.chromium_path()
    if reason is None and executable is None:
        reason = "no Chromium binary (apt-get install chromium, or set WAN22DUO_CHROMIUM)"
    if reason is None:
        return executable
    if os.environ.get("WAN22DUO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser tests are required here (WAN22DUO_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _require_browser()


@pytest.fixture(scope="module")
def web_server(chromium, comfy_tree, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("browser_server") / "comfyui.log"
    running = start_server(comfy_tree.root, log_path, ("Wan22DuoSampler", "UnetLoaderGGUF"))
    yield running
    running.stop()


def _views(chromium, url, mode):
    """Open every bundled workflow in one page; yields (workflow path, measurement, texts, page)."""
    with browser.browser_page(url, MODES[mode], chromium) as page:
        results = {}
        for path in UI_WORKFLOWS:
            name = NAME_OF.get(path.stem, path.stem)
            workflow = json.loads(path.read_text(encoding="utf-8"))
            measured = page.load(workflow)
            page.screenshot(ARTIFACTS / f"{mode}-{name}.png")
            texts = page.texts()
            focused = {}  # classic: each sampler again, scrolled into view at 1:1 (see Page.focus)
            samplers = [n["id"] for n in measured["nodes"] if n["comfyClass"] in SAMPLERS]
            if mode == "classic":
                for node_id in samplers:
                    page.focus(node_id)
                    focused[node_id] = (page.measure(workflow), page.texts())
            elif samplers:  # a picture of the plot in Nodes 2.0, the sampler scrolled into view
                page.focus(samplers[0])
                page.page.wait_for_timeout(500)
                page.screenshot(ARTIFACTS / f"{mode}-plot-{name}.png")
            (ARTIFACTS / f"{mode}-{name}.json").write_text(json.dumps(measured, indent=1))
            results[name] = (measured, texts, page.pack_errors(), focused)
            page.console.clear()
        return results, list(page.failed)


@pytest.fixture(scope="module")
def classic(chromium, web_server):
    return _views(chromium, web_server.url, "classic")


@pytest.fixture(scope="module")
def nodes2(chromium, web_server):
    return _views(chromium, web_server.url, "nodes2")


def _workflow_ids():
    return [NAME_OF.get(p.stem, p.stem) for p in UI_WORKFLOWS]


def test_workflows_are_found():
    assert len(UI_WORKFLOWS) >= (len(ONLY) if ONLY else 12), [p.name for p in UI_WORKFLOWS]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", _workflow_ids())
def test_loads_without_errors_or_missing_nodes(name, mode, request):
    results, _ = request.getfixturevalue(mode)
    measured, _, errors, _ = results[name]
    assert errors == [], f"{name} ({mode}): errors from the pack's files:\n" + "\n".join(errors)
    assert measured["missing"] == [], f"{name} ({mode}): node types the frontend does not know: {measured['missing']}"


@pytest.mark.parametrize("name", _workflow_ids())
def test_classic_nothing_covered(name, classic):
    measured, _, _, _ = classic[0][name]
    problems = browser.covered_widgets(measured)
    assert problems == [], f"{name}: see {ARTIFACTS / f'classic-{name}.png'}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", _workflow_ids())
def test_nodes2_nothing_covered(name, nodes2):
    measured, _, _, _ = nodes2[0][name]
    assert measured["vue"], f"{name}: Nodes 2.0 did not turn on (no [data-node-id] elements)"
    problems = browser.overlapping_dom_nodes(measured)
    assert problems == [], f"{name}: see {ARTIFACTS / f'nodes2-{name}.png'}\n" + "\n".join(problems)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", _workflow_ids())
def test_sampler_titles_whole(name, mode, request):
    """The samplers' titles ("Wan 2.2 Duo Sampler (ComfyUI MODEL inputs)") are shown whole, not cut.

    Classic: the title string is drawn as it is (the canvas cuts a title that does not fit with an
    ellipsis), checked with the sampler scrolled into view at 1:1. Nodes 2.0: the title element's text
    does not overflow its box."""
    results, _ = request.getfixturevalue(mode)
    first, _, _, focused = results[name]
    problems = []
    for node in (n for n in first["nodes"] if n["comfyClass"] in SAMPLERS):
        where = f"node {node['id']} ({node['title']})"
        if mode == "classic":
            measured, texts = focused[node["id"]]
            drawn = [t["text"] for t in texts if t["canvas"] == measured["graphCanvas"]]
            if node["title"] not in drawn:
                near = [t for t in drawn if t[:8] == node["title"][:8]]
                problems.append(f"{where}: title not drawn whole; drawn: {near}")
        elif node["domTitle"] != "whole":
            problems.append(f"{where}: title element {node['domTitle']}")
    assert problems == [], f"{name} ({mode}): see {ARTIFACTS / f'{mode}-{name}.png'}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", _workflow_ids())
def test_first_view_at_1920x1080(name, classic):
    measured, _, _, _ = classic[0][name]
    shot = ARTIFACTS / f"classic-{name}.png"
    assert measured["view"] == [], f"{name} (scale {measured['scale']:.2f}): see {shot}\n" + "\n".join(measured["view"])
    assert measured["noteFontPx"], f"{name}: no note text found on screen"
    smallest = min(measured["noteFontPx"])
    assert smallest >= MIN_NOTE_FONT_PX, f"{name}: note text is {smallest:.1f} px high at scale {measured['scale']:.2f}"


def _plot_problems(name, first, first_texts, focused, mode) -> list:
    problems = []
    samplers = [n for n in first["nodes"] if n["comfyClass"] in SAMPLERS]
    for node in samplers:
        measured, texts = focused.get(node["id"], (first, first_texts))
        node = next(n for n in measured["nodes"] if n["id"] == node["id"])
        main = measured["graphCanvas"]
        scale, (ox, oy) = measured["scale"], measured["offset"]
        where = f"{name} ({mode}) node {node['id']} ({node['title']})"
        caption = node["caption"]
        if not caption:
            problems.append(f"{where}: the plot has no caption (plan error: {node['planError']})")
            continue
        drawn = [t for t in texts if t["text"] == caption]
        if mode == "classic":
            x, y, w, h = node["bounding"]
            plot = next((wd for wd in node["widgets"] if wd["name"] == "wan22duo_switch_plot"), None)
            if plot is None:
                problems.append(f"{where}: no plot widget")
                continue
            top = (plot["rect"][1] + oy) * scale
            bottom = (y + h + oy) * scale
            left, right = (x + ox) * scale, (x + w + ox) * scale
            inside = [t for t in drawn if t["canvas"] == main and top <= t["y"] <= bottom and left <= t["x"] <= right]
        else:
            own = set(c for c in node["canvases"] if c is not None)
            # The frontend lays the widget's canvas 13 px over the row above (WidgetLegacy, mt-[-13px]):
            # a text's top (about 10 px over its baseline) must be below that strip, its baseline in the canvas.
            top = (OWN_CANVAS_OVERLAP + 10) * 1.0
            inside = [t for t in drawn if t["canvas"] in own and top * t["scale"] <= t["y"] <= t["height"]]
            outside = [t for t in texts if t["canvas"] in own and not (top * t["scale"] <= t["y"] <= t["height"])]
            if outside:
                problems.append(f"{where}: text drawn over the row above or past the plot's canvas: "
                                f"{[(t['text'], round(t['y'] / t['scale'], 1)) for t in outside]}")
        if not inside:
            problems.append(f"{where}: caption {caption!r} not drawn whole inside the plot "
                            f"(drawn at {[(round(t['x']), round(t['y']), t['canvas']) for t in drawn]})")
        if not any(t["text"].startswith("shift ") for t in texts if t["canvas"] in ({main} if mode == "classic"
                                                                                   else set(node["canvases"]))):
            problems.append(f"{where}: the plot does not say which shift it used")
    return problems


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", _workflow_ids())
def test_switch_plot_drawn_with_caption(name, mode, request):
    results, _ = request.getfixturevalue(mode)
    measured, texts, _, focused = results[name]
    problems = _plot_problems(name, measured, texts, focused, mode)
    assert problems == [], f"see {ARTIFACTS / f'{mode}-{name}.png'}\n" + "\n".join(problems)


# The pictures on screen: the cards show them as blob: URLs, and only those near the view; ours are the
# only 512 x 512 ones in the pack's category.
SHOWN_PICTURES = ("() => Array.from(document.querySelectorAll('img'))"
                  ".filter(i => i.complete && i.naturalWidth === 512 && i.naturalHeight === 512).length")


# Each card's title as shown: the deepest visible element holding exactly the file name, its place on screen
# and whether CSS cuts it (the card title is one line with an ellipsis).
CARD_TITLES = """(titles) => titles.map((title) => {
  const all = Array.from(document.querySelectorAll("h1, h2, h3, h4, p, span, div"))
    .filter((el) => el.textContent.trim() === title && el.getBoundingClientRect().width > 0)
    .filter((el) => !Array.from(el.children).some((c) => c.textContent.trim() === title));
  const el = all[0];
  if (!el) return { title, found: false };
  const r = el.getBoundingClientRect();
  return { title, found: true, top: r.top, left: r.left,
           cut: el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1 };
})"""
PACK_FOLDER = "ComfyUI-Wan22Duo"  # the folder the suite installs the pack into (conftest.py)


def test_template_browser_shows_the_cards_titled_and_in_order(chromium, web_server):
    """The pack's cards as a user sees them: "01 Wan 2.2 T2V-A14B text to video" first, CARDS order, none cut.

    The server lists the files in the file system's order (ComfyUI globs, unsorted); the frontend titles each
    card with its file name and keeps that order, so web/wan22duo_templates.js sorts the pack's list."""
    import urllib.request

    raw = json.loads(urllib.request.urlopen(web_server.url + "/workflow_templates", timeout=10).read())[PACK_FOLDER]
    expected = [file_stem(c.name) for c in CARDS]
    with browser.browser_page(web_server.url, MODES["classic"], chromium) as page:
        page.page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.page.wait_for_timeout(2000)
        page.page.get_by_text(PACK_FOLDER, exact=True).first.click()
        page.page.wait_for_timeout(3000)
        shown = page.page.evaluate(CARD_TITLES, expected)
    (ARTIFACTS / "template-cards.json").write_text(json.dumps({"server_order": raw, "shown": shown}, indent=1))
    assert sorted(raw) == sorted(expected), f"the server lists {raw}"
    missing = [c["title"] for c in shown if not c["found"]]
    assert missing == [], f"cards not shown: {missing}"
    order = [c["title"] for c in sorted(shown, key=lambda c: (round(c["top"] / 20), c["left"]))]
    assert order == expected, f"cards shown in the order {order} (the server's: {raw})"
    cut = [c["title"] for c in shown if c["cut"]]
    assert cut == [], f"card titles cut on screen: {cut}"


def test_template_browser_shows_the_pack_with_thumbnails(chromium, web_server):
    with browser.browser_page(web_server.url, MODES["classic"], chromium) as page:
        page.page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.page.wait_for_timeout(2000)
        page.page.get_by_text(PACK_FOLDER, exact=True).first.click()
        page.page.wait_for_timeout(3000)
        page.screenshot(ARTIFACTS / "template-browser.png")
        shown_top = page.page.evaluate(SHOWN_PICTURES)
        for _ in range(4):  # the cards below the fold load their pictures when scrolled into view
            page.page.mouse.move(1100, 700)
            page.page.mouse.wheel(0, 1500)
            page.page.wait_for_timeout(1000)
        page.screenshot(ARTIFACTS / "template-browser-scrolled.png")
        shown_bottom = page.page.evaluate(SHOWN_PICTURES)
        pack = "/workflow_templates/ComfyUI-Wan22Duo/"
        failed = [url for status, url in page.failed if pack in url]
        loaded = {url.rsplit("/", 1)[-1] for url in page.loaded if pack in url and url.endswith(".jpg")}
    assert failed == [], f"template files that did not load: {failed}"
    # Every card of the pack asked for its picture and got it.
    expected = {f"{p.stem}.jpg" for p in (REPO / "example_workflows").glob("*.json")}  # every card, ONLY or not
    loaded = {unquote(u) for u in loaded}
    assert loaded == expected, f"thumbnails loaded: {sorted(loaded)}; expected {sorted(expected)}"
    # Rows of 4 cards, two rows in view: the first two rows at the top, the last two once scrolled down.
    n = len(expected)
    assert shown_top >= min(8, n), f"only {shown_top} pictures shown at the top (two rows of 4 in view)"
    last_two_rows = min(n, (n % 4 or 4) + 4)
    assert shown_bottom >= last_two_rows, f"only {shown_bottom} pictures shown at the bottom ({last_two_rows} cards)"


def test_gguf_workflow_missing_models_dialog_has_no_invalid_entries(chromium, web_server):
    """ComfyUI's missing-models report on the GGUF workflow: no "Invalid directory" rows.

    Frontend 1.33 (ComfyUI 0.3.76): the Missing Models dialog checks the loaders' entries against ComfyUI's
    own model lists (never .gguf) and refuses the unet folder, so the GGUF loaders carry none and the dialog
    lists only the safetensors files (VAE, text encoder) with download rows. Frontend 1.49 (0.33.0) lists
    every missing file of any loader in its Errors panel ("View details"); the GGUF experts, absent from the
    test tree, show there as "Unknown" with their node, without a download folder, which is true.
    """
    workflow = json.loads((REPO / "example_workflows" / f"{file_stem('t2v_a14b_gguf')}.json").read_text(encoding="utf-8"))
    with browser.browser_page(web_server.url, {**MODES["classic"], "Comfy.Workflow.ShowMissingModelsWarning": True},
                              chromium) as page:
        page.load(workflow, hide_error_toast=False)  # 1.49 opens its Errors panel from that notice
        page.page.get_by_text("Missing Models").first.wait_for(timeout=20_000)
        dialogs = page.page.locator(".p-dialog")
        panel = dialogs.count() == 0  # 1.49: no dialog; the Errors panel instead
        group = page.page.locator('[data-testid="error-group-missing-model"]')  # 1.49.6's Missing Models group
        if panel:
            page.page.get_by_text("View details").first.click()
            group.first.wait_for(timeout=20_000)
        page.screenshot(ARTIFACTS / "missing-models-t2v_a14b_gguf.png")
        text = (group.first if panel else dialogs.last).inner_text()
    (ARTIFACTS / "missing-models-t2v_a14b_gguf.txt").write_text(text)
    assert "Invalid directory" not in text, text
    assert "wan_2.1_vae.safetensors" in text and "umt5_xxl_fp8_e4m3fn_scaled.safetensors" in text, text
    if not panel:
        assert ".gguf" not in text, text
    else:  # listed as missing (they are), under their nodes, with no folder to download into
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for name, node in (("Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "High-noise expert"),
                           ("Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf", "Low-noise expert")):
            at = lines.index(name)
            assert lines[at + 1:at + 3] == ["Unknown", node], lines[at:at + 4]
