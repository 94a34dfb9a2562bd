"""Place the bundled workflows' nodes from their rendered sizes, and pick each workflow's first view.

``build_workflows.py`` describes each node with a column (its ``x``) and an order in that column (its
``y``); :func:`arrange` turns that into positions. Sizes come from what ComfyUI's frontend renders
(``workflows/schema/frontend-node-sizes.json``, measured in a real browser by
``integration/browser.py --measure``): the classic canvas' minimum size and the Nodes 2.0 box, whichever
is larger, so that no node grows into the next one when the frontend lays out its widgets (the expert
loaders' ``attention`` and ``compile`` rows were covered that way). Nodes 2.0 scales a classic
layout by 1.2 on load and its boxes include the title, so its sizes are stored divided back.

Nodes in a column are stacked with a margin that leaves room for the next node's title bar (and its
badges) and, between groups, for the group's padding and title. A group that spans columns starts
at the same height in each. :func:`layout_problems` lists any node, title bar or group title that
still covers another; the build refuses a layout with problems.

:func:`first_view` picks the saved view (``extra.ds``): about 1:1 on the notes, loaders, prompt and
sampler of a 1920 x 1080 window, less the frontend's side bar and top bars (see its doc for why not
the whole graph).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ROOT / "workflows" / "schema" / "frontend-node-sizes.json"

TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: drawn above pos[1]
MARGIN = 30  # free space under a node, above the next node's title bar
COLUMN_GAP = 70  # between columns (each group pads its members by GROUP_PAD)
GROUP_PAD = 20  # a group's box around its members (left, right, bottom)
GROUP_HEAD = 50  # a group's title bar (24 px font x 1.4 = 33.6) and some air, above its first title bar
GROUP_GAP = 40  # between one group's box and the next group's title
NOTE_COLUMN = -1  # column index of the notes (left of everything)
VUE_SCALE = 1.2  # Nodes 2.0 scales a classic layout by this factor on load

# The window the first view is fitted into (CSS px at 1920 x 1080, ComfyUI frontend 1.33): the side
# bar on the left, the tab bar, the "Nodes 2.0" banner and the workflow/run bars on top.
VIEW_W, VIEW_H = 1920, 1080
VIEW_LEFT, VIEW_TOP, VIEW_RIGHT, VIEW_BOTTOM = 70, 140, 30, 30
MAX_SCALE = 1.0
MIN_SCALE = 0.95  # note text 9.5 px
CONTROLS_H = 80  # the canvas controls and minimap toggles along the bottom


def load_sizes(path: Path = SIZES) -> dict:
    """``{key: [width, height]}``: a node type, or ``"<workflow>#<id>"`` for a note (its text decides)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["sizes"]


def rendered_size(workflow: str, node, sizes: dict) -> tuple:
    """The node's size: its described size, grown to what the frontend renders."""
    key = f"{workflow}#{node.id}" if node.type in ("MarkdownNote", "Note") else node.type
    measured = sizes.get(key)
    width, height = node.size
    if measured:
        width, height = max(width, measured[0]), max(height, measured[1])
    return (int(round(width)), int(round(height)))


def _columns(w) -> dict:
    """``{column index: [nodes in order]}``: notes first (index -1), then by described x."""
    xs = sorted({n.pos[0] for n in w.nodes if n.type not in ("MarkdownNote", "Note")})
    index = {x: i for i, x in enumerate(xs)}
    columns: dict = {}
    for node in w.nodes:
        col = NOTE_COLUMN if node.type in ("MarkdownNote", "Note") else index[node.pos[0]]
        columns.setdefault(col, []).append(node)
    for nodes in columns.values():
        nodes.sort(key=lambda n: (n.pos[1], n.id))
    return columns


def arrange(w, sizes: dict) -> None:
    """Set every node's ``pos`` and ``size`` in place (see the module doc)."""
    for node in w.nodes:
        node.size = rendered_size(w.name, node, sizes)
    columns = _columns(w)
    group_of = {nid: title for title, ids in w.groups for nid in ids}
    # x: notes, then the columns left to right, each as wide as its widest node.
    x = 0
    lefts = {}
    for col in sorted(c for c in columns if c != NOTE_COLUMN):
        width = max(n.size[0] for n in columns[col])
        lefts[col] = x
        for node in columns[col]:
            node.size = (width, node.size[1])
        x += width + COLUMN_GAP
    if NOTE_COLUMN in columns:
        width = max(n.size[0] for n in columns[NOTE_COLUMN])
        lefts[NOTE_COLUMN] = -width - COLUMN_GAP
        for node in columns[NOTE_COLUMN]:
            node.size = (width, node.size[1])
    top = GROUP_HEAD + TITLE_H
    starts: dict = {}  # group -> y of its first member in each column (equal across columns)
    ys: dict = {}
    for _ in range(20):
        for col, nodes in columns.items():
            cursor, previous = None, None
            for node in nodes:
                group = group_of.get(node.id)
                if cursor is None:
                    y = top if group is not None or col != NOTE_COLUMN else TITLE_H
                elif group != previous:
                    y = cursor + GROUP_PAD + GROUP_GAP + GROUP_HEAD + TITLE_H
                else:
                    y = cursor + MARGIN + TITLE_H
                first_of_group = group is not None and group != previous
                if first_of_group:
                    y = max(y, starts.get(group, y))
                ys[node.id] = y
                cursor, previous = y + node.size[1], group
        new = {}
        for col, nodes in columns.items():
            seen = set()
            for node in nodes:
                group = group_of.get(node.id)
                if group is not None and group not in seen:
                    seen.add(group)
                    new[group] = max(new.get(group, ys[node.id]), ys[node.id])
        if new == starts:
            break
        starts = new
    else:
        raise ValueError(f"{w.name}: the layout of groups across columns does not settle")
    for col, nodes in columns.items():
        for node in nodes:
            node.pos = (lefts[col], ys[node.id])


def node_box(node) -> list:
    """[x, y, w, h] as the frontend bounds a node: its title bar included."""
    return [node.pos[0], node.pos[1] - TITLE_H, node.size[0], node.size[1] + TITLE_H]


def group_box(w, ids: list) -> list:
    members = [w.node(n) for n in ids if any(m.id == n for m in w.nodes)]
    left = min(n.pos[0] for n in members) - GROUP_PAD
    top = min(n.pos[1] for n in members) - TITLE_H - GROUP_HEAD
    right = max(n.pos[0] + n.size[0] for n in members) + GROUP_PAD
    bottom = max(n.pos[1] + n.size[1] for n in members) + GROUP_PAD
    return [left, top, right - left, bottom - top]


def _overlap(a, b) -> bool:
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])


def layout_problems(w) -> list:
    """Nodes (title bars included) that overlap; group title bars or boxes over nodes not theirs."""
    problems = []
    nodes = sorted(w.nodes, key=lambda n: n.id)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if _overlap(node_box(a), node_box(b)):
                problems.append(f"{w.name}: node {a.id} ({a.type}) overlaps node {b.id} ({b.type})")
    for title, ids in w.groups:
        box = group_box(w, ids)
        bar = [box[0], box[1], box[2], 24 * 1.4]
        for node in nodes:
            if _overlap(bar, node_box(node)):
                problems.append(f"{w.name}: the title of group {title!r} runs under node {node.id} ({node.type})")
            elif node.id not in ids and _overlap(box, node_box(node)):
                problems.append(f"{w.name}: group {title!r} covers node {node.id} ({node.type}), not one of its own")
    return problems


def graph_bounds(w) -> list:
    boxes = [node_box(n) for n in w.nodes] + [group_box(w, ids) for _, ids in w.groups]
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes)
    right = max(b[0] + b[2] for b in boxes)
    bottom = max(b[1] + b[3] for b in boxes)
    return [left, top, right - left, bottom - top]


SAMPLERS = ("Wan22DuoSampler", "Wan22DuoModelSampler")


def first_view(w) -> dict:
    """``{"scale": s, "offset": [x, y]}``: the saved view, 1:1 or a little less, on the graph's left part.

    The frontend draws canvas point p at screen (p + offset) * scale. Its note text is 10 px at 1:1,
    so a view that fits a whole graph of this width (about 0.7) shrinks the notes to 7 px, which
    nobody reads. The view therefore opens on what a user reads and sets first: the notes, the
    loaders, the prompt and the sampler with its plot (the columns up to the sampler's), scaled to
    fit their width but never below :data:`MIN_SCALE`; the output columns to the right and any row
    below the window are reached by panning (the minimap shows them).
    """
    left, top, _, _ = graph_bounds(w)
    samplers = [n for n in w.nodes if n.type in SAMPLERS]
    right = max(n.pos[0] + n.size[0] for n in (samplers or w.nodes)) + GROUP_PAD
    free_w = VIEW_W - VIEW_LEFT - VIEW_RIGHT
    scale = round(max(MIN_SCALE, min(MAX_SCALE, free_w / (right - left))), 3)
    # A title bar in the window's bottom band would sit under the canvas controls (bottom right):
    # open a little lower until every title bar is above the band or below the window.
    titles = [node_box(n)[1] for n in w.nodes] + [group_box(w, ids)[1] for _, ids in w.groups]
    screen_top = VIEW_TOP
    while screen_top < VIEW_TOP + CONTROLS_H and any(
            VIEW_H - CONTROLS_H <= (t - top) * scale + screen_top < VIEW_H for t in titles):
        screen_top += 5
    return {"scale": scale, "offset": [round(VIEW_LEFT / scale - left, 1), round(screen_top / scale - top, 1)]}
