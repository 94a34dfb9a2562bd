"""The GPU streaming benchmark runs end to end at tiny shapes on CPU (its --tiny mode).

On a GPU session the same script measures real A14B / TI2V-5B shapes; here its code
runs with the CUDA link's calls played on CPU (engine.testing.stream_sim), so a broken script is
caught before a GPU session is spent on it.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_gpu_memory  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_run_streams_within_the_scaled_cards(tmp_path):
    out = tmp_path / "gpu.md"
    rows = bench_gpu_memory.main(["--tiny", "--runs", "a14b:832x480x81", "--cards", "8", "16", "resident",
                                  "--out", str(out)])
    by_card = {r["card"]: r for r in rows}
    assert all(r["fits"] and r["finite"] for r in rows)
    assert by_card["8"]["streamed_blocks"] > 0 and by_card["resident"]["streamed_blocks"] == 0
    assert by_card["8"]["peak_gib"] <= 8.0 + 1e-6  # the streamer's device-side peak, scaled to the card
    assert by_card["16"]["peak_gib"] <= 16.0 + 1e-6
    assert by_card["8"]["identical"] and by_card["16"]["identical"]  # streamed = resident, bit for bit
    assert [r["card"] for r in rows] == ["8", "16", "resident"]  # the order asked for (resident ran first)
    text = out.read_text()
    assert "| a14b | 96x64x13 | 8 |" in text and "= resident |" in text and "DIFFERS" not in text


def test_tiny_run_reports_a_card_too_small():
    rows = bench_gpu_memory.main(["--tiny", "--runs", "a14b:832x480x81", "--cards", "0.5"])
    assert not rows[0]["fits"] and "smaller than the least streaming needs" in rows[0]["why"]
