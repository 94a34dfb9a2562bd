"""bench/cache_quality.py on tiny random experts: its counts and distances are right (not its numbers' meaning)."""
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
