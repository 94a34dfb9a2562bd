"""The template cards' pictures show the trained toy's output where there is a toy (scripts/toy_strips.py).

Each T2V-A14B and I2V-A14B card's picture (``example_workflows/NN <title>.jpg``) holds, at
``workflow_thumbnails.strip_boxes()``, the frames of its committed strip (``workflows/thumbnails/<name>.png``);
the strips match ``strips.json`` and the committed toy weights; one strip per toy is sampled again here and
compared with the committed one. The TI2V-5B cards have no strip (there is no 5B toy).
"""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import template_cards  # noqa: E402
import toy_strips  # noqa: E402
import workflow_thumbnails  # noqa: E402

STRIP_NAMES = [s.name for s in toy_strips.SPECS]
# JPEG at quality 88 of smooth 88 px frames: the mean absolute difference to the pasted frame is about 1.2-1.3
# levels of 255 (measured on every card); the nearest other card's strip differs by 8.7 or more.
JPEG_MEAN_BOUND = 4.0


def _mean_abs(a, b) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def _strip(name: str):
    from PIL import Image

    with Image.open(toy_strips.strip_path(name)) as image:
        return image.convert("RGB")


def test_every_a14b_card_has_a_toy_strip_and_no_ti2v_card_has_one():
    cards = [c.name for c in template_cards.CARDS]
    assert sorted(STRIP_NAMES) == sorted(n for n in cards if not n.startswith("ti2v")), STRIP_NAMES
    for s in toy_strips.SPECS:
        assert s.task == ("i2v" if s.name.startswith("i2v") else "t2v"), s  # I2V cards from the I2V toy


def test_committed_strips_match_strips_json_and_the_committed_toy_weights():
    assert toy_strips.check() == [], "run python scripts/toy_strips.py, then python scripts/build_workflows.py"


@pytest.mark.parametrize("name", STRIP_NAMES)
def test_card_picture_shows_its_toy_strip(name):
    """The strip region of the card's JPEG holds this card's toy frames, and is nearer to them than to any other strip."""
    from PIL import Image

    picture = ROOT / "example_workflows" / f"{template_cards.file_stem(name)}.jpg"
    with Image.open(picture) as image:
        shown = [image.convert("RGB").crop(box) for box in workflow_thumbnails.strip_boxes()]
    own = workflow_thumbnails.strip_frames(_strip(name))
    diff = [_mean_abs(a, b) for a, b in zip(shown, own)]
    assert max(diff) <= JPEG_MEAN_BOUND, f"{picture.name}: strip frames differ from {name}.png by {diff}; " \
                                         "run python scripts/build_workflows.py"
    for other in (n for n in STRIP_NAMES if n != name):
        frames = workflow_thumbnails.strip_frames(_strip(other))
        other_diff = sum(_mean_abs(a, b) for a, b in zip(shown, frames)) / len(frames)
        assert other_diff > sum(diff) / len(diff) + JPEG_MEAN_BOUND, f"{picture.name} looks like {other}'s strip too"


def test_ti2v_card_pictures_show_the_node_map_not_a_strip():
    """Where the strip would be, a TI2V-5B card shows the node map: mostly node colours, no toy frames."""
    from PIL import Image

    for card in (c for c in template_cards.CARDS if c.name.startswith("ti2v")):
        with Image.open(ROOT / "example_workflows" / f"{template_cards.file_stem(card.name)}.jpg") as image:
            shown = [image.convert("RGB").crop(box) for box in workflow_thumbnails.strip_boxes()]
        for name in STRIP_NAMES:
            frames = workflow_thumbnails.strip_frames(_strip(name))
            assert sum(_mean_abs(a, b) for a, b in zip(shown, frames)) / len(frames) > 2 * JPEG_MEAN_BOUND


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", ["i2v_a14b", "t2v_a14b"])
def test_a_strip_sampled_again_matches_the_committed_one(name):
    """One strip per toy sampled again with strips.json's settings equals the committed PNG.

    Bound: float kernels differ between x86 CPUs by about 1e-6 relative; through 20 steps and the decoder
    that moves a few pixels by a level or two after rounding to 8 bits, so the mean difference stays far
    under one level (0 on the machine that rendered them) and no pixel moves by more than 24 levels."""
    import numpy as np
    from packpath import load_pack

    load_pack()
    from wan22duo.toy import run

    s = toy_strips.spec(name)
    entry = json.loads(toy_strips.MANIFEST.read_text(encoding="utf-8"))[name]
    assert (entry["steps"], entry["sampler"], entry["cfg"]) == (toy_strips.STEPS, toy_strips.SAMPLER,
                                                                list(toy_strips.CFG[s.task]))
    image, picks, _ = toy_strips.render(s, run.load(task=s.task))
    assert picks == entry["frames"]
    again = np.asarray(image, dtype=np.int16)
    committed = np.asarray(_strip(name), dtype=np.int16)
    assert again.shape == committed.shape
    diff = np.abs(again - committed)
    assert diff.mean() < 0.5 and diff.max() <= 24, (float(diff.mean()), int(diff.max()))
