"""bench/long_video.py runs end to end on untrained toy files (the plumbing, not the numbers)."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import long_video  # noqa: E402
from wan22duo.engine.sampling.context_windows import Window  # noqa: E402


def test_segments_and_seams():
    assert long_video.segments(65) == [(0, 17), (16, 33), (32, 49), (48, 65)]
    assert long_video.segments(33) == [(0, 17), (16, 33)]
    assert long_video.segments(41) == [(0, 17), (16, 33), (24, 41)]
    # 9 latent frames, windows [0, 5) and [3, 8) and [4, 9): window edges inside the video
    pairs = long_video.seam_pairs([Window(0, 5), Window(3, 8, 2), Window(4, 9, 3)], 9)
    assert pairs == {16, 8, 28, 12}
    video = torch.zeros(33, 2, 2, 3)
    video[17:] = 0.5  # one jump, between frames 16 and 17: a seam
    video[5:] += 0.1  # a smaller one at a latent boundary that is no seam (between 4 and 5)
    assert long_video.seam_ratio(video, {16}) > 1.0
    assert long_video.seam_ratio(video, {4}) < long_video.seam_ratio(video, {16})


def test_the_long_video_table_is_measured_and_written(tmp_path, monkeypatch):
    monkeypatch.setattr(long_video, "CONFIGS", long_video.CONFIGS[:2])
    out = tmp_path / "results.md"
    out.write_text("# kept\n\n## Measurements\n\nold table\n")
    rows = long_video.main(["--untrained", "--clips", "1", "--frames", "33", "--steps", "2", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# kept\n\n## Measurements\n") and "old table" not in text and "untrained" in text
    assert [r["config"] for r in rows] == ["no windows (whole video at once)", "uniform, pyramid, anchor, FreeNoise"]
    assert rows[0]["windows"] is None and rows[1]["windows"] == 3  # 9 latent frames in windows of 5, overlap 2
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
