"""The demo runs end to end through the node classes and writes a playable animated WebP."""
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import demo  # noqa: E402


def test_demo_writes_a_video(tmp_path, capsys):
    written = demo.main(["--random-weights", "--out", str(tmp_path), "--steps", "4", "--gif"])
    assert written == [tmp_path / "demo_t2v.webp", tmp_path / "demo_t2v.gif"]
    for path in written:
        with Image.open(path) as video:
            assert video.size == (96, 64)
            assert video.n_frames == 13  # the default 13 frames (4n+1) all made it into the file
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "noise" in printed
    # 4 steps at shift 12 (official grid): t = 999, 972, 922, 799, so 3 steps are >= 875.
    assert "high-noise steps 1-3, low-noise steps 4-4" in printed


def test_out_under_a_regular_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    for out in (blocker, blocker / "videos"):
        with pytest.raises(SystemExit) as info:
            demo.main(["--random-weights", "--out", str(out), "--steps", "1"])
        message = str(info.value)
        assert message == f"error: --out {out}: cannot make this folder ({blocker} is a file, not a folder); " \
                          "give a folder path"
    assert blocker.read_text() == "a file, not a folder"


def test_toy_demo_runs_the_toy_files_through_the_nodes_and_prints_a_score(tmp_path, capsys):
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    # Untrained toy files in another folder: this checks --toy-weights and the path, not the quality
    # (tests/test_toy_weights.py scores the committed toy).
    build.save(dit.new_model(seed=1), "t2v_high", "untrained", tmp_path)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", tmp_path)
    vae = toy_vae.new_vae(base_dim=4)
    with torch.no_grad():  # the untrained init repeats each latent frame 4 times, and WebP merges equal frames
        for p in vae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    build.save(vae, "vae", "untrained", tmp_path)
    written = demo.main(["--toy", "--task", "t2v", "--toy-weights", str(tmp_path), "--out", str(tmp_path),
                         "--steps", "2"])
    assert written == [tmp_path / "demo_t2v.webp"]
    with Image.open(written[0]) as video:
        assert video.size == (64, 64) and video.n_frames == 17
    printed = capsys.readouterr().out
    assert "toy Wan 2.2 MoE" in printed and "high-noise steps 1-2" in printed
    assert "toy quality score " in printed and "colour" in printed
