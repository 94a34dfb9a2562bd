"""The template browser's cards: each bundled workflow's file name (the card's title), order and description.

What ComfyUI's frontends show for a custom node pack's templates (read in their bundles: frontend 1.33.10,
ComfyUI 0.3.76, and 1.49.6, ComfyUI 0.33.0; both the same here):

* ``GET /workflow_templates`` (``app/custom_node_manager.py``) answers ``{pack folder: [file names without
  .json]}`` in ``glob.glob`` order, which is the file system's directory order, not sorted.
* Each name becomes a card ``{name, title: name, description: name}``: the card's title (one line, cut with an
  ellipsis) is the file name verbatim, its description (two lines) the same name with ``-`` and ``_`` turned
  into spaces. The frontends localize titles and descriptions only for ComfyUI's own templates (their
  ``index.json``); a pack has no index, metadata or i18n key for its cards. Its picture is ``<name>.jpg``.
* The default order is the server's ("newest" in 1.33 sorts by a date custom cards do not have, which keeps
  it; "default" in 1.49 keeps it); "Alphabetical (A-Z)" sorts by title.

So the file name is all a card can say. The names here are short human titles that say "Wan 2.2", the
model and what the workflow does, with a two-digit number first, so that the alphabetical order is the
intended one (the basic T2V first) and the number still shows the order where the list is not sorted;
``web/wan22duo_templates.js`` sorts the pack's list by name in the frontend, which makes the default view
follow it too. The longer description goes on the card's picture (``workflow_thumbnails.py``). ASCII,
no characters Windows or a URL path refuse (``: * ? " < > | # %``), and short enough for the card's one
line at 1920 px (the browser test checks the title is not cut).

The workflows' own names (``workflows/api/<name>.json``, ``build_workflows.Workflow.name``) do not change.
"""
from __future__ import annotations

from typing import NamedTuple


class Card(NamedTuple):
    name: str  # the workflow's name (workflows/api/<name>.json)
    title: str  # the card's title, without the order number (the file name is "NN " + title)
    description: str  # what it does, drawn on the card's picture


CARDS = (
    Card("t2v_a14b", "Wan 2.2 T2V-A14B text to video",
         "Both A14B experts in one sampler, switched by the official rule. 40 steps, 1280x720."),
    Card("t2v_a14b_lightning", "Wan 2.2 T2V-A14B Lightning",
         "The lightx2v 4-step LoRA on each expert, 4 steps at cfg 1. Fast drafts."),
    Card("t2v_a14b_lightning_3stage", "Wan 2.2 T2V-A14B 3-stage LoRA",
         "Three stages in one sampler: two base high-noise steps with CFG, then the Lightning experts."),
    Card("t2v_a14b_long_windows", "Wan 2.2 T2V-A14B long video",
         "161 frames in 81-frame context windows overlapping by 32, both experts in one sampler."),
    Card("t2v_a14b_native", "Wan 2.2 T2V-A14B UNETLoader",
         "ComfyUI's UNETLoader and VAE nodes feeding Wan 2.2 Duo's MODEL sampler."),
    Card("t2v_a14b_gguf", "Wan 2.2 T2V-A14B GGUF experts",
         "Q4_K_M GGUF experts through ComfyUI-GGUF's UnetLoaderGGUF and the MODEL sampler."),
    Card("i2v_a14b", "Wan 2.2 I2V-A14B image to video",
         "A start image animated by both I2V experts, switched by the official rule. 1280x720."),
    Card("i2v_a14b_first_last", "Wan 2.2 I2V-A14B first-last frame",
         "A clip from a first and a last frame, both experts in one sampler."),
    Card("i2v_a14b_extend", "Wan 2.2 I2V-A14B extend a clip",
         "A second clip continues from the first one's last frames; the two are joined."),
    Card("i2v_a14b_svi", "Wan 2.2 I2V-A14B SVI continuation",
         "SVI 2.0 Pro LoRAs: clip 2 continues from clip 1's last latent frames, colour-matched, joined."),
    Card("i2v_a14b_native", "Wan 2.2 I2V-A14B UNETLoader",
         "ComfyUI's loaders and WanImageToVideo feeding Wan 2.2 Duo's MODEL sampler."),
    Card("ti2v_5b_t2v", "Wan 2.2 TI2V-5B text to video",
         "The single 5B model, 1280x704 at 24 fps, with the Wan 2.2 VAE."),
    Card("ti2v_5b_i2v", "Wan 2.2 TI2V-5B image to video",
         "The single 5B model animating a start image, 1280x704 at 24 fps."),
    Card("ti2v_5b_first_last", "Wan 2.2 TI2V-5B first-last frame",
         "The 5B model making a clip from a first and a last frame."),
    Card("ti2v_5b_native", "Wan 2.2 TI2V-5B UNETLoader",
         "ComfyUI's UNETLoader and Wan22ImageToVideoLatent with Wan 2.2 Duo's MODEL sampler."),
    Card("i2v_a14b_svi_disk", "Wan 2.2 I2V-A14B long SVI to disk",
         "Three SVI clips decoded straight to disk and saved from there: RAM does not grow with the video."),
)
FORBIDDEN = set(':*?"<>|#%/\\')
# One line of a card: about 256 px of 14 px Inter in frontend 1.33 at 1920 px; "07 Wan 2.2 I2V-A14B first-last frame"
# (36 characters) measures 241 px, "04 Wan 2.2 T2V-A14B ComfyUI loaders" (35) 261 px and was cut. The browser test
# measures the real cards.
MAX_TITLE_CHARS = 36


def file_stem(name: str) -> str:
    """``example_workflows/<file_stem>.json`` (and ``.jpg``) of workflow ``name``: "01 Wan 2.2 ..."."""
    for number, card in enumerate(CARDS, start=1):
        if card.name == name:
            return f"{number:02d} {card.title}"
    known = ", ".join(c.name for c in CARDS)
    raise KeyError(f"workflow {name!r} has no template card in scripts/template_cards.py (CARDS); add one. "
                   f"Known: {known}")


def card(name: str) -> Card:
    file_stem(name)  # the error for an unknown name
    return next(c for c in CARDS if c.name == name)


def problems() -> list:
    """What is wrong with ``CARDS`` (empty when nothing): duplicate names or titles, bad characters, long titles."""
    found = []
    for field in ("name", "title"):
        values = [getattr(c, field) for c in CARDS]
        found += [f"{field} {v!r} used twice" for v in sorted(set(values)) if values.count(v) > 1]
    for c in CARDS:
        stem = file_stem(c.name)
        bad = sorted(set(stem) & FORBIDDEN) + (["non-ASCII"] if not stem.isascii() else [])
        if bad:
            found.append(f"{c.name}: file name {stem!r} has characters a file system or URL refuses: {bad}")
        if len(stem) > MAX_TITLE_CHARS:
            found.append(f"{c.name}: file name {stem!r} is {len(stem)} characters; a card shows about "
                         f"{MAX_TITLE_CHARS} on one line")
        if "Wan 2.2" not in c.title:
            found.append(f"{c.name}: title {c.title!r} does not say Wan 2.2")
    return found
