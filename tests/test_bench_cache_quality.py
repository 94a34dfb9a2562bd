"""bench/cache_quality.py on tiny random experts: its counts and distances are right (not its numbers' meaning)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import cache_quality  # noqa: E402

from wan22duo.engine.sampling.loop import sample  # noqa: E402
from wan22duo.engine.sampling.phases import Phase  # noqa: E402

SHAPE = (1, 16, 2, 4, 4)
OPTIONS = dict(cfg_high=4.0, cfg_low=1.0, shift=12.0, switch_step=5)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    return cache_quality.handles(*cache_quality.tiny_experts(tmp_path_factory.mktemp("cache_bench")))


def test_rows_count_passes_and_distances(experts):
    contexts = cache_quality.random_contexts(2)
    rows = cache_quality.measure(*experts, contexts, SHAPE, [12], [0.0, 50.0], score=lambda latent, p: float(p),
                                 sample_options=OPTIONS)
    zero, big = rows
    full_passes = 2 * (5 * 2 + 7 * 1)  # two prompts; high steps at cfg 4 are two passes, low steps at cfg 1 one
    assert zero.calls_full == big.calls_full == full_passes
    assert (zero.calls, zero.reused_steps, zero.rel_l2, zero.saved) == (full_passes, 0, 0.0, 0.0)
    # threshold 50: all but the 2 warm-up steps and the last step of each expert are reused
    reused_high, reused_low = 5 - 3, 7 - 3
    assert big.reused_steps == 2 * (reused_high + reused_low)
    assert big.calls == full_passes - 2 * (2 * reused_high + reused_low)
    assert big.rel_l2 > 0 and big.rel_l2_max >= big.rel_l2
    assert big.score == zero.score == big.score_full == 0.5  # the mean of the scorer over the two prompts
    assert "| 12 | 50 |" in cache_quality.table(rows, "t")


def test_passes_counts_each_stage_at_its_cfg(experts):
    high, low = experts
    pos, neg = cache_quality.random_contexts(1)[0]
    result = sample(high, low, torch.zeros(SHAPE), pos, neg, seed=0, steps=8, cfg_high=1.0, cfg_low=2.0,
                    switch_step=4, lead=[Phase(high, 3.0, 2)])
    assert cache_quality.passes(result, {"lead1": 3.0, "high": 1.0, "low": 2.0}) == 2 * 2 + 2 * 1 + 4 * 2


def row(threshold, score, score_full, pixel_rms, steps=20, task="t2v"):
    return cache_quality.Row(steps, threshold, 10, 20, 5, 0.1, 0.2, score, score_full, 1.0, pixel_rms, task)


def test_suggested_threshold_is_the_largest_that_every_configuration_allows():
    rows = [row(0.0, 0.9, 0.9, 0.0), row(0.05, 0.9, 0.9, 2.0), row(0.1, 0.89, 0.9, 3.0), row(0.2, 0.7, 0.9, 9.0),
            row(0.0, 0.8, 0.8, 0.0, 40), row(0.05, 0.8, 0.8, 1.0, 40), row(0.1, 0.75, 0.8, 2.0, 40),
            row(0.2, 0.8, 0.8, 1.0, 40)]
    # 0.1 loses 0.05 at 40 steps; 0.2 keeps the score at 40 but not at 20 steps
    assert cache_quality.suggest_threshold(rows, max_score_drop=0.02, max_pixel_rms=8.0) == 0.05
    assert cache_quality.suggest_threshold(rows, max_score_drop=0.06, max_pixel_rms=8.0) == 0.1
    assert cache_quality.suggest_threshold(rows, max_score_drop=0.06, max_pixel_rms=1.5) == 0.0
    with pytest.raises(ValueError, match="scored rows"):
        cache_quality.suggest_threshold([row(0.05, None, None, None)], 0.02, 8.0)


def test_the_toy_table_runs_end_to_end_and_is_written(tmp_path, capsys):
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    build.save(dit.new_model(seed=1), "t2v_high", "untrained", tmp_path)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", tmp_path)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", tmp_path)
    out = tmp_path / "results.md"
    out.write_text("# kept prose\n\n## Measurements\n\nold table\n")
    cache_quality.main(["--toy", "t2v", "--steps", "10", "--clips", "1", "--thresholds", "0", "50",
                        "--weights", str(tmp_path), "--write", str(out), "--out", str(tmp_path / "rows.json")])
    text = out.read_text()
    assert text.startswith("# kept prose\n\n## Measurements\n") and "old table" not in text
    assert "UNTRAINED" in text and "the suggestion means nothing" in text
    lines = [line for line in text.splitlines() if line.startswith("| 10 |")]
    assert len(lines) == 2
    zero, big = (line.split(" | ") for line in lines)
    assert zero[3:6] == ["0 %", "0", "0.0000 / 0.0000"] and zero[6] == "0.00"  # threshold 0: the uncached run
    # threshold 50: per expert, all but the 2 warm-up steps and the last one are reused
    switch = json.loads((tmp_path / "rows.json").read_text())[1]
    assert switch["reused_steps"] > 0 and switch["calls"] < switch["calls_full"] and float(big[6]) > 0


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "r.md"
    path.write_text("# title\n\nprose\n\n## A\n\nold a\n\n## B\n\nold b\n")
    cache_quality.write_section(path, "## A", "new a")
    assert path.read_text() == "# title\n\nprose\n\n## A\n\nnew a\n\n## B\n\nold b\n"
    cache_quality.write_section(path, "## B", "new b\n")
    assert path.read_text() == "# title\n\nprose\n\n## A\n\nnew a\n\n## B\n\nnew b\n"
    cache_quality.write_section(path, "## C", "c")
    assert path.read_text().endswith("## B\n\nnew b\n\n## C\n\nc\n")
    cache_quality.write_section(tmp_path / "new.md", "## A", "a")
    assert (tmp_path / "new.md").read_text() == "## A\n\na\n"


def test_easycache_pairs_take_the_nearest_saved_share():
    import cache_easycache

    def r(task, threshold, calls, steps=20):
        return cache_quality.Row(steps, threshold, calls, 40, 0, 0.0, 0.0, 0.5, 0.5, 1.0, 0.0, task)

    rows = [r("t2v ours", 0.05, 30), r("t2v ours", 0.1, 20), r("t2v ours", 0.1, 30, steps=40),
            r("t2v EasyCache", 0.2, 32), r("t2v EasyCache", 0.3, 28), r("t2v EasyCache", 0.5, 21),
            r("i2v EasyCache", 0.9, 20)]
    got = [(a.threshold, a.steps, b.threshold) for a, b in cache_easycache.pairs(rows)]
    # 25 % saved: 0.2 (20 %) and 0.3 (30 %) are equally near, the smaller threshold wins; 50 %: 0.5 (47.5 %);
    # no EasyCache row at 40 steps, and the I2V row never pairs with a T2V one
    assert got == [(0.05, 20, 0.2), (0.1, 20, 0.5)]
    assert "| T2V | 20 | 0.05 | 25 % |" in cache_easycache.pair_table(rows, "t")
