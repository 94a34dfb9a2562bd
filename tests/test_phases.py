"""Phase plans: leading phases on one schedule and one trajectory, before the two experts."""
from types import SimpleNamespace

import pytest
import torch

from wan22duo.engine.sampling.loop import SamplingError
from wan22duo.engine.sampling.phases import Phase, stages

from test_sampling import T2V, handle, pair, run


@pytest.mark.parametrize("solver", ["unipc", "euler", "dpmpp_2m"])
def test_a_two_phase_plan_equals_the_two_expert_run_bit_for_bit(solver):
    high, low, _ = pair()
    plain = run(high, low, steps=12, shift=12.0, switch_step=5, cfg_high=4.0, cfg_low=3.0, solver=solver)
    # The high-noise steps as a leading phase of the high expert (its own cfg), the sampler's high slot idle.
    phased = run(high, low, steps=12, shift=12.0, switch_step=5, cfg_high=99.0, cfg_low=3.0, solver=solver,
                 lead=[Phase(high, 4.0, 5)])
    assert [s["role"] for s in phased.stages] == ["lead1", "low"]
    assert torch.equal(phased.latent, plain.latent)


def test_three_stages_run_in_order_with_their_own_cfg_on_one_trajectory():
    calls = []
    base = handle("base", calls, T2V, "high_noise", 2.0)
    high = handle("high", calls, T2V, "high_noise", 1.0)
    low = handle("low", calls, T2V, "low_noise", 0.5)
    latents, roles = [], []
    result = run(high, low, steps=8, shift=5.0, cfg_high=1.0, cfg_low=1.0, solver="euler", schedule="simple",
                 lead=[Phase(base, 3.5, 2)],
                 callback=lambda s: (latents.append(s.latent), roles.append(s.expert)))
    assert result.switch_step == 4  # the boundary rule still decides the hand-over
    assert roles == ["lead1"] * 2 + ["high"] * 2 + ["low"] * 4
    assert result.stages == [{"role": "lead1", "start": 0, "stop": 2, "cfg": 3.5},
                             {"role": "high", "start": 2, "stop": 4, "cfg": 1.0},
                             {"role": "low", "start": 4, "stop": 8, "cfg": 1.0}]
    assert [c.expert for c in calls] == ["base"] * 4 + ["high"] * 2 + ["low"] * 4  # cfg 3.5: two passes a step
    first_high = next(c for c in calls if c.expert == "high")
    assert torch.equal(first_high.x, latents[1])  # continues from the last lead step, not re-noised
    assert result.switch_info()["stages"] == result.stages


def test_chained_leading_phases():
    calls = []
    a, b = handle("a", calls, T2V, "high_noise", 2.0), handle("b", calls, T2V, "high_noise", 3.0)
    high, low, _ = pair()
    result = run(high, low, steps=20, shift=12.0, switch_step=9, lead=[Phase(a, 4.0, 2), Phase(b, 1.0, 3)])
    assert [(s["role"], s["start"], s["stop"]) for s in result.stages] == [
        ("lead1", 0, 2), ("lead2", 2, 5), ("high", 5, 9), ("low", 9, 20)]
    assert result.expert_steps == {"high": 4, "low": 11}


def test_stages_skip_empty_ones():
    assert [s.role for s in stages(8, 2, (2,))] == ["lead1", "low"]
    assert [s.role for s in stages(8, 8, ())] == ["high"]


def test_leading_phases_past_the_switch_are_refused_with_the_numbers():
    high, low, _ = pair()
    with pytest.raises(SamplingError, match=r"run 5 steps \(2 \+ 3\).*after step 4 of 8"):
        run(high, low, steps=8, shift=5.0, lead=[Phase(high, 3.5, 2), Phase(high, 1.0, 3)])


def test_a_low_noise_expert_as_a_leading_phase_is_refused():
    high, low, _ = pair()
    with pytest.raises(SamplingError, match="lead phase 1 .*low-noise expert"):
        run(high, low, steps=8, shift=5.0, lead=[Phase(low, 3.5, 2)])


def test_a_leading_phase_of_another_variant_is_refused():
    high, low, calls = pair()
    i2v = handle("i2v", calls, SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096))
    with pytest.raises(SamplingError, match="i2v_a14b model but the experts are t2v_a14b"):
        run(high, low, steps=8, shift=5.0, lead=[Phase(i2v, 3.5, 2)])


@pytest.mark.parametrize("steps", [0, -1])
def test_a_phase_without_steps_is_refused(steps):
    high, low, _ = pair()
    with pytest.raises(SamplingError, match=f"phase 1 runs {steps} steps"):
        run(high, low, steps=8, shift=5.0, lead=[Phase(high, 3.5, steps)])


def test_a_non_finite_phase_cfg_is_refused():
    high, low, _ = pair()
    with pytest.raises(SamplingError, match="cfg of lead phase 1 is nan"):
        run(high, low, steps=8, shift=5.0, lead=[Phase(high, float("nan"), 2)])


def test_a_non_finite_leading_phase_is_named_in_the_error():
    from wan22duo.engine.memory.residency import ModelHandle

    broken = ModelHandle(lambda d: (lambda x, t, c: torch.full_like(x[:, :16], float("inf"))),
                         info={"config": T2V, "role": "high_noise", "name": "broken"})
    high, low, _ = pair()
    with pytest.raises(SamplingError, match=r"NaN/inf at step 1 of 8 \(lead phase 1 broken, "):
        run(high, low, steps=8, shift=5.0, lead=[Phase(broken, 3.5, 2)])
