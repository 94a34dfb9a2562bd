"""Guards that turn silent failures into named errors, and the 1-based wording of the plan."""
import pytest
import torch

from test_sampling_fixtures import contexts, tiny_expert
from wan22duo.engine.sampling import SamplingError, describe_plan, plan_switch, sample


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guards")
    return tiny_expert(tmp, "t2v_a14b", 1, "high_noise"), tiny_expert(tmp, "t2v_a14b", 2, "low_noise")


def _run(experts, positive, negative, **kwargs):
    high, low = experts
    latent = torch.zeros(1, 16, 1, 4, 4)
    return sample(high, low, latent, positive, negative, seed=0, steps=2, **kwargs)


@pytest.mark.parametrize("which", ["positive", "negative"])
def test_nan_text_context_is_named(experts, which):
    positive, negative = contexts(5, 7)
    broken = positive if which == "positive" else negative
    broken[0, 2, :3] = float("nan")
    with pytest.raises(SamplingError, match=rf"^{which} holds 3 NaN/inf values .*text encoder"):
        _run(experts, positive, negative)


def test_a_latent_going_non_finite_names_the_step(experts):
    high, low = experts
    positive, negative = contexts(5, 7)
    model = low.acquire()
    with torch.no_grad():
        model.head.head.bias.fill_(float("inf"))  # the low-noise expert now returns inf velocities
    with pytest.raises(SamplingError, match=r"NaN/inf at step 2 of 2 \(low-noise expert"):
        _run(experts, positive, negative, switch_step=1, memory="keep_both")
    low.release()


def test_plan_is_described_from_step_one():
    plan = plan_switch("t2v_a14b", object(), 40, 12.0, None, -1, "wan")
    assert plan.switch_step == 26  # spec §1.3
    assert describe_plan(plan, "unipc") == (
        "40 steps (unipc, wan schedule, shift 12): high-noise steps 1-26, low-noise steps 27-40 (boundary 0.875)")
    single = plan_switch("ti2v_5b", None, 4, 5.0, None, -1, "wan")
    assert describe_plan(single, "euler").endswith("TI2V-5B, single model, steps 1-4")
    low_only = plan_switch("t2v_a14b", object(), 4, 5.0, None, 0, "simple")
    assert "no high-noise steps, low-noise steps 1-4" in describe_plan(low_only, "euler")
