"""The bundled workflows' example images: a first and a last frame, drawn by the pack into ComfyUI's input folder.

The image-to-video workflows open with a ``LoadImage`` node per keyframe, and ``LoadImage`` only offers
files of ComfyUI's ``input/`` folder. ComfyUI 0.3.76 ships one ``example.png`` there (0.33.0 none), so
the first-last workflows showed the same picture as first and last frame. The pack draws its own pair
instead: the same small scene at two moments (a red ball rolling from left to right under a rising
sun), so the two keyframes differ visibly and the clip between them has an obvious motion. They are
written once, at start-up, only where no file of that name exists (a user's own file is never
replaced), and a folder that cannot be written is logged, not fatal.

Pillow only (a requirement of the pack); no ComfyUI import outside :func:`install`.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("wan22duo")

FIRST_FRAME = "wan22duo_first_frame.png"
LAST_FRAME = "wan22duo_last_frame.png"
SIZE = (832, 480)


def draw(moment: float):
    """The scene at ``moment`` in [0, 1] (0: first frame, 1: last frame), as a Pillow RGB image."""
    from PIL import Image, ImageDraw

    if not 0.0 <= moment <= 1.0:
        raise ValueError(f"moment must be in [0, 1] (0: first frame, 1: last frame), got {moment}")
    width, height = SIZE
    horizon = int(height * 0.62)
    image = Image.new("RGB", SIZE)
    pixels = ImageDraw.Draw(image)
    for y in range(horizon):  # sky: deeper blue at the top, warmer towards the horizon as the sun rises
        t = y / horizon
        pixels.line([(0, y), (width, y)], fill=(int(70 + 120 * t + 40 * moment * t), int(120 + 80 * t),
                                                 int(200 - 30 * t)))
    sun_x, sun_y = int(width * (0.2 + 0.55 * moment)), int(horizon - 40 - 200 * moment)
    pixels.ellipse([sun_x - 38, sun_y - 38, sun_x + 38, sun_y + 38], fill=(255, 214, 110))
    for y in range(horizon, height):  # grass
        t = (y - horizon) / (height - horizon)
        pixels.line([(0, y), (width, y)], fill=(int(60 + 30 * t), int(140 - 40 * t), int(60 - 20 * t)))
    for x, h in ((90, 70), (690, 95), (560, 55)):  # three trees, fixed: only the ball and the sun move
        pixels.rectangle([x - 6, horizon - 10, x + 6, horizon + 20], fill=(90, 60, 35))
        pixels.ellipse([x - h // 2, horizon - 10 - h, x + h // 2, horizon], fill=(40, 110, 55))
    ball_x, ball_y, r = int(width * (0.15 + 0.7 * moment)), horizon + 70, 42
    pixels.ellipse([ball_x - r + 10, ball_y + r - 8, ball_x + r + 14, ball_y + r + 8], fill=(45, 85, 40))  # shadow
    pixels.ellipse([ball_x - r, ball_y - r, ball_x + r, ball_y + r], fill=(214, 48, 49))
    pixels.ellipse([ball_x - r // 2, ball_y - r // 2 - 8, ball_x - r // 6, ball_y - r // 6 - 8], fill=(240, 140, 140))
    return image


def write_missing(folder: Path) -> list:
    """Writes the first and last frame into ``folder`` where absent; returns the paths written."""
    written = []
    for name, moment in ((FIRST_FRAME, 0.0), (LAST_FRAME, 1.0)):
        path = Path(folder) / name
        if path.exists():
            continue
        draw(moment).save(path, "PNG", optimize=True)
        written.append(path)
    return written


def install() -> list:
    """At pack load in ComfyUI: the two frames into its input folder; [] without ComfyUI or on a write error."""
    try:
        import folder_paths

        folder = Path(folder_paths.get_input_directory())
    except (ImportError, AttributeError):
        return []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return write_missing(folder)
    except OSError as exc:
        log.warning("Wan22Duo: could not write the example images %s and %s into %s (%s); the bundled "
                    "image-to-video workflows then need an image picked by hand", FIRST_FRAME, LAST_FRAME,
                    folder, exc)
        return []
