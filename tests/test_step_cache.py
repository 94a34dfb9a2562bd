"""Step caching in the one loop: per stage, warm-up and last steps run, CFG in step, off below MIN_STEPS."""
import math
from collections import defaultdict

import pytest
import torch

from wan22duo.engine.sampling.loop import sample
from wan22duo.engine.sampling.phases import Phase, Stage
from wan22duo.engine.sampling.step_cache import MIN_STEPS, CacheRun, StepCache, StepCacheError

from test_sampling import pair, run

HUGE = 1e6  # a threshold no summed change reaches: every unprotected step is reused


def expected_reused(stages, warmup):
    """Every step but each stage's first ``warmup`` and its last (the rule under test)."""
    return [i for start, stop in stages for i in range(start + warmup, stop - 1)]


def test_threshold_zero_reuses_nothing_and_is_bit_identical():
    high, low, calls = pair()
    plain = run(high, low, steps=20, shift=12.0, switch_step=8, cfg_high=4.0, cfg_low=3.0)
    n_plain = len(calls)
    cached = run(high, low, steps=20, shift=12.0, switch_step=8, cfg_high=4.0, cfg_low=3.0,
                 step_cache=StepCache(threshold=0.0))
    assert cached.cache["active"] and cached.cache["reused"] == []
    assert len(calls) == 2 * n_plain  # every pass ran again
    assert torch.equal(cached.latent, plain.latent)


def test_a_large_threshold_reuses_all_but_the_protected_steps_of_each_expert():
    high, low, calls = pair()
    result = run(high, low, steps=20, shift=12.0, switch_step=8, step_cache=StepCache(threshold=HUGE))
    assert result.cache["reused"] == expected_reused([(0, 8), (8, 20)], 2)
    ran_t = sorted({float(c.t[0]) for c in calls}, reverse=True)
    ts = [float(t) for t in result.schedule.timesteps]
    assert ran_t == [ts[i] for i in (0, 1, 7, 8, 9, 19)]


def test_the_switch_resets_the_state():
    # With a threshold nothing reaches, a state carried over the switch would already count its warm-up
    # as done and reuse the high expert's change on the first low steps; a reset state runs them.
    high, low, calls = pair()
    result = run(high, low, steps=20, shift=12.0, switch_step=8, step_cache=StepCache(threshold=HUGE, warmup=3))
    reused = set(result.cache["reused"])
    assert not {8, 9, 10} & reused  # the low expert's own warm-up
    assert {11, 12} <= reused
    low_ts = {float(c.t[0]) for c in calls if c.expert == "low"}
    assert {float(result.schedule.timesteps[i]) for i in (8, 9, 10, 19)} == low_ts


@pytest.mark.parametrize("warmup", [2, 3, 5])
@pytest.mark.parametrize("steps, switch", [(20, 8), (30, 17), (12, 6)])
def test_warm_up_and_last_steps_always_run(warmup, steps, switch):
    high, low, _ = pair()
    result = run(high, low, steps=steps, shift=12.0, switch_step=switch,
                 step_cache=StepCache(threshold=HUGE, warmup=warmup))
    reused = result.cache["reused"]
    assert reused == expected_reused([(0, switch), (switch, steps)], warmup)
    for start, stop in ((0, switch), (switch, steps)):
        assert not set(range(start, min(stop, start + warmup))) & set(reused)
        assert stop - 1 not in reused


def test_each_leading_phase_is_a_stage_with_its_own_warm_up():
    high, low, calls = pair()
    base = pair()[0]  # another high-noise handle, as the base model of a Lightning recipe
    result = run(high, low, steps=24, shift=12.0, switch_step=14, lead=[Phase(base, 3.5, 6)],
                 step_cache=StepCache(threshold=HUGE))
    assert [s["role"] for s in result.stages] == ["lead1", "high", "low"]
    assert result.cache["reused"] == expected_reused([(0, 6), (6, 14), (14, 24)], 2)


def test_cfg_passes_stay_in_step():
    high, low, calls = pair()
    result = run(high, low, steps=24, shift=12.0, switch_step=10, cfg_high=4.0, cfg_low=3.0,
                 step_cache=StepCache(threshold=0.3))
    reused = result.cache["reused"]
    assert 0 < len(reused) < 24 - 6  # some steps reused, some ran
    by_step = defaultdict(list)
    for c in calls:
        by_step[float(c.t[0])].append(c)
    ts = [float(t) for t in result.schedule.timesteps]
    for i, t in enumerate(ts):
        passes = by_step.get(t, [])
        if i in reused:
            assert passes == []
            continue
        assert sorted(p.context.shape[1] for p in passes) == [3, 7]  # one negative, one positive pass
        assert torch.equal(passes[0].x, passes[1].x)


def test_short_plans_reuse_nothing():
    high, low, calls = pair()
    result = run(high, low, steps=MIN_STEPS - 1, shift=5.0, switch_step=4, step_cache=StepCache(threshold=HUGE))
    assert result.cache == {**result.cache, "active": False, "reused": []}
    longer = run(high, low, steps=MIN_STEPS, shift=5.0, switch_step=5, step_cache=StepCache(threshold=HUGE))
    assert longer.cache["active"] and longer.cache["reused"]


def test_the_criterion_and_the_reused_change():
    """k = |dv| / |dx| over the last two calls; predicted change k |x_i - x_{i-1}| / |v_b| summed; reuse x + (v_b - x_b)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, 4, 2, 2, 2, generator=g) for _ in range(4)]
    vs = [torch.randn(1, 4, 2, 2, 2, generator=g) for _ in range(2)]
    mean = lambda t: float(t.abs().mean())  # noqa: E731
    k = mean(vs[1] - vs[0]) / mean(xs[1] - xs[0])
    change = k * mean(xs[2] - xs[1]) / mean(vs[1])

    def cache_at(threshold):
        cache = CacheRun(StepCache(threshold), [Stage("high", 0, 6)], MIN_STEPS)
        for i in range(2):
            assert cache.reuse(i, xs[i]) is None
            cache.record(i, xs[i], vs[i])
        return cache

    above = cache_at(change * 1.001)
    assert torch.equal(above.reuse(2, xs[2]), xs[2] + (vs[1] - xs[1]))
    second = k * mean(xs[3] - xs[2]) / mean(vs[1])  # the sum goes on from the reused step
    assert (above.reuse(3, xs[3]) is None) == (change + second >= change * 1.001)
    assert cache_at(change * 0.999).reuse(2, xs[2]) is None


def test_a_new_stage_starts_from_nothing():
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(1, 4, 1, 2, 2, generator=g) for _ in range(8)]

    def walk(cache, steps):
        reused = {}
        for i in steps:
            v = cache.reuse(i, x[i])
            if v is None:
                cache.record(i, x[i], x[i] * (1 + i))
            else:
                reused[i] = v
        return reused

    both = walk(CacheRun(StepCache(HUGE, warmup=2), [Stage("high", 0, 4), Stage("low", 4, 8)], MIN_STEPS), range(8))
    assert sorted(both) == [2, 6]
    # step 6 reused the low stage's own change (recorded at step 5), as a run of the low stage alone does
    alone = CacheRun(StepCache(HUGE, warmup=2), [Stage("low", 4, 8)], MIN_STEPS)
    alone.ran = [True] * 4  # steps 0-3 belong to no stage of this cache
    assert torch.equal(both[6], walk(alone, range(4, 8))[6])
    assert torch.equal(both[6], x[6] + (x[5] * 6 - x[5]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=-0.1), "threshold is -0.1"),
    (dict(threshold=math.nan), "threshold is nan"),
    (dict(threshold=0.05, warmup=1), "warmup is 1"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(StepCacheError, match=match):
        StepCache(**kwargs)


def test_the_batched_cfg_forward_runs_or_is_skipped_whole():
    """A real (tiny) WanModel: CFG runs as one batch-2 forward per step (engine.sampling.guidance); the cache
    decides once for that forward, so every step makes exactly one batch-2 forward or none."""
    from wan22duo.engine.memory.residency import ModelHandle
    from wan22duo.engine.model.dit import WanModel
    from wan22duo.engine.testing.tiny import random_state_dict, tiny_config

    batches = []

    def expert(seed, role):
        config = tiny_config("t2v_a14b", dim=128, ffn_dim=256, num_layers=1)
        model = WanModel(config)
        model.load_state_dict(random_state_dict(config, seed=seed))
        model.register_forward_pre_hook(lambda module, args: batches.append((role, args[0].shape[0])))
        return ModelHandle.from_module(model, info={"role": f"{role}_noise", "name": role})

    high, low = expert(1, "high"), expert(2, "low")
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(1, 5, 4096, generator=g), torch.randn(1, 5, 4096, generator=g)
    result = sample(high, low, torch.zeros(1, 16, 1, 4, 4), pos, neg, seed=0, steps=12, shift=12.0, switch_step=5,
                    cfg_high=4.0, cfg_low=3.0, step_cache=StepCache(threshold=HUGE))
    reused = result.cache["reused"]
    assert reused == expected_reused([(0, 5), (5, 12)], 2)
    assert batches == [("high", 2)] * 3 + [("low", 2)] * 3  # steps 0, 1, 4 and 5, 6, 11: one batch-2 forward each
