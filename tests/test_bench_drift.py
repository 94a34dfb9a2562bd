"""bench/drift.py runs end to end on untrained toy I2V files (the plumbing, not the numbers), and its RAM
statement counts the tensors the nodes really return."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import drift  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    folder = tmp_path_factory.mktemp("toy")
    build.save(dit.new_model("i2v_a14b", seed=1), "i2v_high", "untrained", folder)
    build.save(dit.new_model("i2v_a14b", seed=2), "i2v_low", "untrained", folder)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", folder)
    return folder


def test_the_drift_tables_are_measured_and_written(toy_files, tmp_path):
    out = tmp_path / "results.md"
    out.write_text("# kept\n\n## Measurements\n\nold table\n")
    drift.main(["--seeds", "1", "--extensions", "2", "--steps", "2", "--weights", str(toy_files), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# kept\n\n## Measurements\n") and "old table" not in text
    for name in drift.METHODS:  # the chained routes and the context-window video cut into the same segments
        assert text.count(f"| {name} |") == 3, name  # one row in each of the three tables
    assert text.count("| method | clip 0 | ext 1 | ext 2 |\n") == 3
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    background = [r.strip("| ").split(" | ") for r in rows[1:1 + len(drift.METHODS)]]  # the first table's rows
    assert len({r[1] for r in background}) == 1  # clip 0 is shared by every method
    assert all(len(r) == 4 and all(float(c) >= 0 for c in r[1:]) for r in background)  # distances


def test_colour_match_to_the_anchor_pulls_the_background_back(toy_files):
    """With the match fitted on the anchor, every extension's background mean is the anchor's (up to the median)."""
    results = drift.evaluate(1, 2, 2, toy_files, methods={
        "plain": drift.METHODS["latent (SVI layout)"],
        "matched": drift.METHODS["latent (SVI layout) + colour match (anchor)"]}, log=lambda s: None)
    plain, matched = results["plain"], results["matched"]
    assert len(plain) == len(matched) == 2
    assert sum(r["background"] for r in matched) < sum(r["background"] for r in plain)


def test_ram_statement_counts_the_tensors_the_nodes_return(tmp_path):
    from wan22duo.engine.testing.tiny_vae import write_tiny_vae
    from wan22duo.nodes.keyframes import Wan22DuoJoinClips
    from wan22duo.nodes.loaders import Wan22DuoVAELoader
    from wan22duo.nodes.vae import Wan22DuoVAEDecode

    vae = Wan22DuoVAELoader().load(str(write_tiny_vae(tmp_path / "wan_2.1_vae.safetensors", "2.1")), "fp32",
                                   "cpu")["result"][0]
    ram = drift.long_video_ram(clips=3, frames=9, width=48, height=32, overlap=5)
    clips = [Wan22DuoVAEDecode().decode(vae, {"samples": torch.randn(1, 16, 3, 4, 6)}, 0, 64)[0] for _ in range(3)]
    assert clips[0].nbytes == ram["clip"] and sum(c.nbytes for c in clips) == ram["decoded"]
    joined, joins = clips[0], 0
    for clip in clips[1:]:
        (joined,) = Wan22DuoJoinClips().join(joined, clip, 5)
        joins += joined.nbytes
    assert joins == ram["joins"] and joined.nbytes == ram["final"] and joined.shape[0] == ram["final_frames"] == 17
    assert ram["uncached_peak"] == (13 + 9 + 9 + 17) * 48 * 32 * 3 * 4  # the 2nd join's input, clip 3, match, result
    full = drift.long_video_ram()
    assert full["final_frames"] == 81 + 9 * 76
    assert abs(full["cached_total"] / 1024 ** 3 - 25.62) < 0.01  # the number bench/results_drift.md states
