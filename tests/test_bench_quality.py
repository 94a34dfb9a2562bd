"""bench/quality.py runs end to end on untrained toy files (the plumbing, not the numbers: no trained toy yet)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402


def test_the_quality_table_is_measured_and_written(tmp_path, monkeypatch):
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    build.save(dit.new_model(seed=1), "t2v_high", "untrained", tmp_path)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", tmp_path)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", tmp_path)
    monkeypatch.setattr(quality, "REFERENCE", {"steps": 2})
    monkeypatch.setattr(quality, "CONFIGS", [("UniPC 2 steps", {"steps": 2}, "fp32"),
                                             ("bf16 compute, 2 steps", {"steps": 2}, "bf16"),
                                             ("experts swapped, 2 steps", {"steps": 2}, "swapped")])
    out = tmp_path / "results.md"
    out.write_text("# kept\n\n## Measurements\n\nold table\n")
    quality.main(["--clips", "1", "--weights", str(tmp_path), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# kept\n\n## Measurements\n") and "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "configuration" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["UniPC 50 steps (the reference)", "UniPC 2 steps",
                                                     "bf16 compute, 2 steps", "experts swapped, 2 steps"]
    assert rows[0].split(" | ")[7] == "0.0"  # the reference run is its own reference: pixel RMS 0
