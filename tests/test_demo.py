"""The demo runs end to end through the node classes and writes a playable animated WebP.

By default it samples the committed toy model and the video passes the toy score; ``--random`` is the
random-weight plumbing check.
"""
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import demo  # noqa: E402


def test_demo_default_samples_the_toy_and_passes_its_score(tmp_path, capsys):
    written = demo.main(["--out", str(tmp_path)])
    assert written == [tmp_path / "demo_t2v.webp"]
    with Image.open(written[0]) as video:
        assert video.size == (64, 64) and video.n_frames == 17
    printed = capsys.readouterr().out
    assert "toy Wan 2.2 MoE" in printed and "RANDOM" not in printed
    assert "toy quality score 1.00 (PASS)" in printed, printed


def test_random_demo_writes_a_video(tmp_path, capsys):
    written = demo.main(["--random", "--out", str(tmp_path), "--steps", "4", "--gif", "--width", "96",
                         "--frames", "13"])
    assert written == [tmp_path / "demo_t2v.webp", tmp_path / "demo_t2v.gif"]
    for path in written:
        with Image.open(path) as video:
            assert video.size == (96, 64)
            assert video.n_frames == 13
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "noise" in printed
    # 4 steps at shift 12 (official grid): t = 999, 972, 922, 799, so 3 steps are >= 875.
    assert "high-noise steps 1-3, low-noise steps 4-4" in printed
