"""The template browser's picture of each bundled workflow: ``example_workflows/<card file name>.jpg``.

ComfyUI's frontend (1.33) shows a custom node pack's templates as cards and asks for
``/api/workflow_templates/<pack>/<name>.jpg`` beside each ``<name>.json`` (the name is the card's
title, ``template_cards.py``); without it every card shows a broken image and the console logs a 404
per card. The picture says "Wan 2.2" and what the workflow does, and ends with the sigma curve of its
sampler coloured by expert, split where the official rule switches (orange: high-noise expert, blue:
low-noise; TI2V-5B is one model, all orange).

In the middle, the T2V-A14B and I2V-A14B cards show a strip of five frames of the trained toy model's
output (``scripts/toy_strips.py``: the T2V toy for T2V cards, the I2V toy for I2V cards, committed as
``workflows/thumbnails/<name>.png``), labelled as the toy's, never as Wan 2.2's, with its caption. The
TI2V-5B cards, for which there is no toy, show a map of the workflow's nodes where they sit on the
canvas (loaders, prompt, sampler, output) instead. Composing committed strips keeps the build fast and
deterministic: nothing is sampled here.

Drawn with Pillow (a requirement of the pack). JPEG bytes differ between Pillow and libjpeg builds,
so ``build_workflows.py --check`` does not compare them; tests check each picture exists and decodes,
and that each strip region holds its committed toy strip.
"""
from __future__ import annotations

from pathlib import Path

SIZE = (512, 512)
# The toy strip: FRAMES frames of FRAME_PX, GAP apart, from STRIP_LEFT, STRIP_TOP (strip_boxes).
STRIP_LEFT, STRIP_TOP, FRAME_PX, GAP, FRAMES = 24, 228, 88, 6, 5
TOY_LABEL = "Output of the pack's toy model, not Wan 2.2"
BACKGROUND = (27, 29, 34)
HIGH = (240, 164, 58)  # the plot's colours (web/wan22duo_plot_draw.js)
LOW = (90, 169, 230)
TEXT = (235, 235, 235)
DIM = (150, 155, 165)
KIND_COLORS = {
    "loader": (92, 74, 138), "prompt": (47, 90, 51), "negative": (90, 47, 47), "sampler": (138, 98, 32),
    "output": (45, 79, 110), "image": (58, 104, 104), "note": (107, 90, 46), "other": (70, 74, 82),
}
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "Arial.ttf")
BOLD_FONT_FILES = ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "Arial Bold.ttf")


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for name in BOLD_FONT_FILES if bold else FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def node_kind(node) -> str:
    kind = node.type
    if kind in ("MarkdownNote", "Note"):
        return "note"
    if kind in ("Wan22DuoSampler", "Wan22DuoModelSampler"):
        return "sampler"
    if kind == "LoadImage":
        return "image"
    if kind == "CLIPTextEncode":
        return "negative" if (node.title or "").lower().startswith("negative") else "prompt"
    if "Loader" in kind or kind in ("UnetLoaderGGUF",):
        return "loader"
    if kind in ("SaveVideo", "CreateVideo", "VAEDecode", "Wan22DuoVAEDecode", "Wan22DuoJoinClips"):
        return "output"
    return "other"


def _wrap(draw, text: str, font, width: int) -> list:
    lines, current = [], ""
    for word in text.split():
        joined = f"{current} {word}".strip()
        if draw.textlength(joined, font=font) <= width or not current:
            current = joined
        else:
            lines.append(current)
            current = word
    return lines + ([current] if current else [])


def _map(draw, w, box: tuple) -> None:
    """The nodes as boxes, scaled into ``box`` (left, top, right, bottom), title bars included."""
    from workflow_layout import graph_bounds, node_box

    left, top, width, height = graph_bounds(w)
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / width, (y1 - y0) / height)
    ox = x0 + ((x1 - x0) - width * scale) / 2
    oy = y0 + ((y1 - y0) - height * scale) / 2
    for node in w.nodes:
        bx, by, bw, bh = node_box(node)
        rect = [ox + (bx - left) * scale, oy + (by - top) * scale,
                ox + (bx - left + bw) * scale, oy + (by - top + bh) * scale]
        color = KIND_COLORS[node_kind(node)]
        draw.rectangle(rect, fill=color, outline=tuple(min(255, c + 60) for c in color))


def _curve(draw, sigmas: list, switch: int, box: tuple) -> None:
    """The sampler's sigmas over its steps, high-noise steps orange, low-noise blue."""
    x0, y0, x1, y1 = box
    steps = len(sigmas) - 1
    points = [(x0 + (x1 - x0) * i / steps, y1 - (y1 - y0) * max(0.0, min(1.0, s))) for i, s in enumerate(sigmas)]
    draw.rectangle([x0, y0, x1, y1], outline=(70, 74, 82))
    if 0 < switch < steps:
        draw.line([(points[switch][0], y0), (points[switch][0], y1)], fill=DIM, width=1)
    draw.line(points[:switch + 1], fill=HIGH, width=4)
    if switch < steps:
        draw.line(points[switch:], fill=LOW, width=4)


def strip_boxes() -> list:
    """(left, top, right, bottom) of each toy frame on the picture, left to right."""
    step = FRAME_PX + GAP
    return [(STRIP_LEFT + i * step, STRIP_TOP, STRIP_LEFT + i * step + FRAME_PX, STRIP_TOP + FRAME_PX)
            for i in range(FRAMES)]


def strip_frames(strip) -> list:
    """The frames of a committed toy strip (a Pillow image FRAMES frames wide), each scaled to FRAME_PX."""
    from PIL import Image

    width = strip.width // FRAMES
    return [strip.crop((i * width, 0, (i + 1) * width, strip.height)).convert("RGB")
            .resize((FRAME_PX, FRAME_PX), Image.Resampling.LANCZOS) for i in range(FRAMES)]


def _toy_strip(image, draw, strip, caption: str, toy_run: str) -> None:
    """The toy's frames at strip_boxes(), its label above, its caption and run (``toy_run``) below."""
    draw.text((STRIP_LEFT, STRIP_TOP - 25), TOY_LABEL, font=_fitting(draw, TOY_LABEL, 17, True), fill=TEXT)
    for frame, box in zip(strip_frames(strip), strip_boxes()):
        image.paste(frame, box[:2])
    line = f"\u201c{caption}\u201d ({toy_run})"
    draw.text((STRIP_LEFT, STRIP_TOP + FRAME_PX + 8), line, font=_fitting(draw, line, 16), fill=DIM)


def _fitting(draw, text: str, size: int, bold: bool = False):
    """The font of at most ``size`` px that fits ``text`` between the picture's margins."""
    font = _font(size, bold)
    while draw.textlength(text, font=font) > SIZE[0] - 2 * STRIP_LEFT and size > 10:
        size -= 1
        font = _font(size, bold)
    return font


def render(w, description: str, sigmas: list, switch: int, caption: str, toy=None):
    """The picture of workflow ``w`` (a ``build_workflows.Workflow``, laid out) as a Pillow image.

    ``description``: what the workflow does (its card's, ``template_cards.py``), which the card itself
    cannot show: the frontend's card text is the file name. ``toy``: (strip image, its caption, its run
    in a few words, "toy I2V, 20 steps") from ``toy_strips.py``, or None for the node map."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    brand = _font(26, bold=True)  # top right: frontend 1.49 lays a "Node graph" badge over the top left corner
    draw.text((SIZE[0] - 24 - draw.textlength("Wan 2.2", font=brand), 20), "Wan 2.2", font=brand, fill=HIGH)
    title_font, text_font = _font(30, bold=True), _font(19)
    y = 58
    for line in _wrap(draw, w.title or w.name, title_font, SIZE[0] - 48)[:2]:
        draw.text((24, y), line, font=title_font, fill=TEXT)
        y += 36
    lines = _wrap(draw, description, text_font, SIZE[0] - 48)
    if toy is not None:  # the description must end above the toy's label
        while y + 2 + 24 * len(lines[:3]) > STRIP_TOP - 30 and text_font.size > 14:
            text_font = _font(text_font.size - 1)
            lines = _wrap(draw, description, text_font, SIZE[0] - 48)
    for line in lines[:3]:
        draw.text((24, y + 2), line, font=text_font, fill=DIM)
        y += text_font.size + 5
    if toy is None:
        _map(draw, w, (24, y + 14, SIZE[0] - 24, 360))
    else:
        _toy_strip(image, draw, *toy)
    _curve(draw, sigmas, switch, (24, 380, SIZE[0] - 24, 468))
    draw.text((24, 478), caption, font=_font(17), fill=DIM)
    return image


def write(w, path: Path, description: str, sigmas: list, switch: int, caption: str, toy=None) -> Path:
    """Draws workflow ``w``'s picture to ``path`` (``example_workflows/<card file name>.jpg``)."""
    render(w, description, sigmas, switch, caption, toy).save(path, "JPEG", quality=88, optimize=True)
    return path
