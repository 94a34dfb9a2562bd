"""Flow solvers: against diffusers' schedulers, a hand-written Euler loop, and exact ODE solutions."""
import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from wan22duo.engine.sampling.schedule import OFFICIAL_SIGMA_MAX, make_schedule
from wan22duo.engine.sampling.solvers import SOLVERS, make_solver

SHAPE = (1, 4, 2, 6, 6)


def toy_velocity(seed=0):
    """A smooth non-linear stand-in for a DiT: v depends on x and the timestep."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 4, generator=g) * 0.3
    b = torch.randn(1, 4, 1, 1, 1, generator=g)

    def v(x, sigma):
        mixed = torch.einsum("oc,bcthw->bothw", w, x)
        return torch.tanh(mixed) + b * (1.0 + sigma) + 0.5 * x

    return v


def run_ours(name, sigmas, x, v_fn):
    solver = make_solver(name, sigmas)
    for i in range(len(sigmas) - 1):
        x = solver.step(i, x, v_fn(x, float(sigmas[i])))
    return x


def rel(a, b):
    return float((a - b).norm() / b.norm())


def noise():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("steps,shift", [(40, 12.0), (13, 5.0)])
def test_unipc_matches_diffusers_flow_unipc(steps, shift):
    # diffusers builds its own unshifted grid linspace(1, 1/1000); to compare the solver
    # itself we hand it the official unshifted grid (float32(0.999) -> 0) and let it
    # apply the same shift, which reproduces our "wan" schedule (spec §5.4).
    ours = make_schedule("wan", steps, shift)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    unshifted = torch.linspace(OFFICIAL_SIGMA_MAX, 0.0, steps + 1, dtype=torch.float64)[:-1].numpy()
    sched.set_timesteps(sigmas=unshifted)
    assert torch.equal(sched.sigmas, ours.sigmas)
    assert torch.equal(sched.timesteps.double(), ours.timesteps)
    sched.set_begin_index(0)
    v_fn, x = toy_velocity(), noise()
    ref = x.clone()
    for i, t in enumerate(sched.timesteps):
        ref = sched.step(v_fn(ref, float(sched.sigmas[i])), t, ref).prev_sample
    got = run_ours("unipc", ours.sigmas, x, v_fn)
    assert rel(got, ref) < 1e-5


def _diffusers_dpm(sigmas):
    sched = DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        prediction_type="flow_prediction", use_flow_sigmas=True, final_sigmas_type="zero",
    )
    steps = len(sigmas) - 1
    sched.set_timesteps(steps)
    # diffusers' DPM takes no custom sigmas; put ours in place of its grid.
    sched.sigmas = sigmas.clone()
    sched.timesteps = (sigmas[:-1].double() * 1000).long()
    sched.set_begin_index(0)
    return sched


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 notice from inside diffusers
@pytest.mark.parametrize("name,steps,shift", [("wan", 20, 12.0), ("simple", 10, 8.0)])
def test_dpmpp_2m_matches_diffusers_dpmsolver(name, steps, shift):
    sigmas = make_schedule(name, steps, shift).sigmas  # "simple" starts at sigma 1 exactly
    sched = _diffusers_dpm(sigmas)
    v_fn, x = toy_velocity(1), noise()
    ref = x.clone()
    for i, t in enumerate(sched.timesteps):
        ref = sched.step(v_fn(ref, float(sigmas[i])), t, ref).prev_sample
    got = run_ours("dpmpp_2m", sigmas, x, v_fn)
    assert torch.isfinite(got).all()
    assert rel(got, ref) < 1e-5


def test_euler_matches_hand_written_loop():
    sigmas = make_schedule("simple", 12, 8.0).sigmas
    v_fn, x = toy_velocity(2), noise()
    ref = x.clone()
    for i in range(12):
        ref = ref + (sigmas[i + 1] - sigmas[i]) * v_fn(ref, float(sigmas[i]))
    assert rel(run_ours("euler", sigmas, x, v_fn), ref) < 1e-6


def gaussian_flow(mu=0.7, s=0.5):
    """Exact velocity field and ODE endpoint when the data is N(mu, s^2) per element.

    With x_t = (1 - t) x0 + t e, the ODE path from x(t0) is
    x(t) = (1 - t) mu + sqrt((1 - t)^2 s^2 + t^2) * z with z fixed by the start.
    """
    def v(x, t):
        var = (1 - t) ** 2 * s**2 + t**2
        x0_hat = mu + (1 - t) * s**2 / var * (x - (1 - t) * mu)
        return (x - x0_hat) / t

    def endpoint(x_start, t0):
        z = (x_start - (1 - t0) * mu) / math.sqrt((1 - t0) ** 2 * s**2 + t0**2)
        return mu + s * z

    return v, endpoint


@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_converge_to_exact_ode_solution(name):
    v_fn, endpoint = gaussian_flow()
    x = noise().double()
    errors = []
    for steps in (10, 20, 40):
        sigmas = make_schedule("wan", steps, 5.0).sigmas.double()
        exact = endpoint(x, float(sigmas[0]))
        errors.append(rel(run_ours(name, sigmas, x, v_fn), exact))
    assert errors[2] < errors[1] < errors[0]
    observed_order = math.log2(errors[1] / errors[2])
    expected = {"euler": 0.8, "dpmpp_2m": 1.6, "unipc": 1.6}[name]
    assert observed_order > expected, (name, errors)


@pytest.mark.parametrize("steps", [1, 2, 8])
@pytest.mark.parametrize("name", SOLVERS)
def test_point_data_is_reached_exactly(name, steps):
    # All data at one point c: the x0 estimate is exact at every step, so every solver
    # must land on c (the last step of the multistep solvers returns x0 itself).
    c = torch.full(SHAPE, 0.3, dtype=torch.float64)
    sigmas = make_schedule("wan", steps, 12.0).sigmas.double()
    got = run_ours(name, sigmas, noise().double(), lambda x, t: (x - c) / t)
    assert torch.allclose(got, c, atol=1e-9)


def test_solver_rejects_out_of_order_steps_and_unknown_names():
    solver = make_solver("unipc", make_schedule("wan", 4, 5.0).sigmas)
    x = noise()
    with pytest.raises(RuntimeError, match="expected step 0"):
        solver.step(1, x, x)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        make_solver("heun", make_schedule("wan", 4, 5.0).sigmas)
