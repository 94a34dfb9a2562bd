"""bench/quality.py runs end to end on untrained toy files (the plumbing, not the numbers).

The T2V rows, the GGUF rows (files written by toy/quantize.py and loaded by Wan22DuoExpertLoader) and the
I2V rows (from each clip's first frame, against their own reference) each come out once, in order, and
the table lands in the markdown file. The ComfyUI sampler rows (``--comfyui``) are run in the integration
suite (integration/test_toy_comfy.py), where ComfyUI is importable."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_files(folder: Path, i2v: bool = False) -> Path:
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    build.save(dit.new_model(seed=1), "t2v_high", "untrained", folder)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", folder)
    if i2v:
        build.save(dit.new_model("i2v_a14b", seed=3), "i2v_high", "untrained", folder)
        build.save(dit.new_model("i2v_a14b", seed=4), "i2v_low", "untrained", folder)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", folder)
    return folder


def table_rows(text: str) -> list[list[str]]:
    return [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "configuration" not in line]


def test_the_quality_table_is_measured_and_written(tmp_path, monkeypatch):
    toy_files(tmp_path)
    monkeypatch.setattr(quality, "REFERENCE", {"steps": 2})
    monkeypatch.setattr(quality, "CONFIGS", [("UniPC 2 steps", {"steps": 2}, "fp32"),
                                             ("bf16 compute, 2 steps", {"steps": 2}, "bf16"),
                                             ("experts swapped, 2 steps", {"steps": 2}, "swapped")])
    out = tmp_path / "results.md"
    out.write_text("# kept\n\n## Measurements\n\nkept\n\n## Quality table\n\nold table\n\n"
                   "## Samplers in ComfyUI\n\nkept too\n")
    quality.main(["--clips", "1", "--weights", str(tmp_path), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# kept\n\n## Measurements\n\nkept\n\n## Quality table\n") and "old table" not in text
    assert text.endswith("## Samplers in ComfyUI\n\nkept too\n")
    rows = table_rows(text)
    # no I2V files here: no I2V rows
    assert [r[0][2:] for r in rows] == ["UniPC 2 steps (the reference)", "UniPC 2 steps",
                                        "bf16 compute, 2 steps", "experts swapped, 2 steps"]
    assert rows[0][7] == "0.0"  # the reference run is its own reference: pixel RMS 0


def test_gguf_and_i2v_rows(tmp_path, monkeypatch):
    toy_files(tmp_path, i2v=True)
    monkeypatch.setattr(quality, "GGUF_SHARES", {})
    monkeypatch.setattr(quality, "REFERENCE", {"steps": 2})
    monkeypatch.setattr(quality, "I2V_REFERENCE", {"steps": 2})
    monkeypatch.setattr(quality, "CONFIGS", [("GGUF Q4_K, 2 steps", {"steps": 2}, "Q4_K"),
                                             ("fp32 again, 2 steps", {"steps": 2}, "fp32")])
    monkeypatch.setattr(quality, "I2V_CONFIGS", [("I2V GGUF Q8_0, 2 steps", {"steps": 2}, "Q8_0")])
    out = tmp_path / "results.md"
    quality.main(["--clips", "1", "--weights", str(tmp_path), "--out", str(out)])
    text = out.read_text()
    rows = table_rows(text)
    assert [r[0][2:] for r in rows] == ["UniPC 2 steps (the reference)", "GGUF Q4_K, 2 steps", "fp32 again, 2 steps",
                                        "I2V UniPC 2 steps (the reference)", "I2V GGUF Q8_0, 2 steps"]
    assert rows[0][7] == rows[2][7] == rows[3][7] == "0.0"  # the same fp32 run twice: identical videos
    assert float(rows[1][7]) > 0  # the Q4_K experts are not the fp16 ones
    assert set(quality.GGUF_SHARES) == {("t2v", "Q4_K", "high"), ("t2v", "Q4_K", "low"),
                                        ("i2v", "Q8_0", "high"), ("i2v", "Q8_0", "low")}
    assert "T2V high-noise Q4_K file: F16" in text and "I2V low-noise Q8_0 file" in text

    quality.main(["--clips", "1", "--weights", str(tmp_path), "--out", str(out), "--task", "i2v"])
    text = out.read_text()
    assert text.index("## Quality table") < text.index("## I2V quality table")
    assert [r[0][2:] for r in table_rows(text.split("## I2V quality table")[1])] == [
        "I2V UniPC 2 steps (the reference)", "I2V GGUF Q8_0, 2 steps"]


def test_a_section_is_added_when_missing(tmp_path):
    out = tmp_path / "r.md"
    out.write_text("# title\n")
    quality.write_section(out, "## Samplers in ComfyUI", "table\n")
    assert out.read_text() == "# title\n\n## Samplers in ComfyUI\n\ntable\n"
