"""The template browser's picture of each bundled workflow: ``example_workflows/<card file name>.jpg``.

ComfyUI's frontend (1.33) shows a custom node pack's templates as cards and asks for
``/api/workflow_templates/<pack>/<name>.jpg`` beside each ``<name>.json`` (the name is the card's
title, ``template_cards.py``); without it every card
shows a broken image and the console logs a 404 per card. The pack has no trained model to take a
frame from, so the picture is a diagram the build can draw from the workflow itself: "Wan 2.2" and
what the workflow does, a map of its nodes where they sit on the canvas (loaders, prompt, sampler,
output), and the sigma curve of its sampler coloured by expert, split where the official rule
switches (orange: high-noise expert, blue: low-noise; TI2V-5B is one model, all orange).

Drawn with Pillow (a requirement of the pack). JPEG bytes differ between Pillow and libjpeg builds,
so ``build_workflows.py --check`` does not compare them; tests check each picture exists and decodes.
"""
from __future__ import annotations

from pathlib import Path

SIZE = (512, 512)
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


def render(w, description: str, sigmas: list, switch: int, caption: str):
    """The picture of workflow ``w`` (a ``build_workflows.Workflow``, laid out) as a Pillow image.

    ``description``: what the workflow does (its card's, ``template_cards.py``), which the card itself
    cannot show: the frontend's card text is the file name."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((24, 20), "Wan 2.2", font=_font(26, bold=True), fill=HIGH)
    title_font, text_font = _font(30, bold=True), _font(19)
    y = 58
    for line in _wrap(draw, w.title or w.name, title_font, SIZE[0] - 48)[:2]:
        draw.text((24, y), line, font=title_font, fill=TEXT)
        y += 36
    for line in _wrap(draw, description, text_font, SIZE[0] - 48)[:3]:
        draw.text((24, y + 2), line, font=text_font, fill=DIM)
        y += 24
    _map(draw, w, (24, y + 14, SIZE[0] - 24, 360))
    _curve(draw, sigmas, switch, (24, 380, SIZE[0] - 24, 468))
    draw.text((24, 478), caption, font=_font(17), fill=DIM)
    return image


def write(w, path: Path, description: str, sigmas: list, switch: int, caption: str) -> Path:
    """Draws workflow ``w``'s picture to ``path`` (``example_workflows/<card file name>.jpg``)."""
    render(w, description, sigmas, switch, caption).save(path, "JPEG", quality=88, optimize=True)
    return path
