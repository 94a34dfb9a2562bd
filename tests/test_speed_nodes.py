"""The step-cache and leading-phase nodes on Wan22DuoSampler (real tiny experts through the loader node)."""
import pytest
import torch

from wan22duo.engine.sampling.step_cache import StepCacheError
from wan22duo.nodes.speed import Wan22DuoPhase, Wan22DuoStepCache, phase_models

from test_nodes_sampler import expert, models, run, small_t2v_latent  # noqa: F401  (models is a fixture)


def test_a_phase_node_for_the_high_steps_equals_the_plain_sampler(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    plain, report = run(high, small_t2v_latent(), low, steps=6, shift=12.0, switch_step=3, cfg_high=4.0)
    (phases,) = Wan22DuoPhase().add(high, cfg=4.0, steps=3)
    phased, phased_report = run(high, small_t2v_latent(), low, steps=6, shift=12.0, switch_step=3, cfg_high=1.0,
                                lead_phases=phases)
    assert torch.equal(phased["samples"], plain["samples"])
    assert "stages" not in report
    assert [s["role"] for s in phased_report["stages"]] == ["lead1", "low"]


def test_chained_phase_nodes_keep_their_order(models):
    high = expert(models, "t2v_high")
    (first,) = Wan22DuoPhase().add(high, cfg=3.5, steps=2)
    (both,) = Wan22DuoPhase().add(high, cfg=1.0, steps=1, lead_phases=first)
    assert [(p.cfg, p.steps) for p in both] == [(3.5, 2), (1.0, 1)]


def test_the_step_cache_node_reports_the_reused_steps(models):
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    (cache,) = Wan22DuoStepCache().make(threshold=2.0, warmup_steps=2)
    _, report = run(high, small_t2v_latent(), low, steps=12, shift=12.0, switch_step=5, step_cache=cache)
    reused = report["cache"]["reused"]
    assert len(reused) >= 3 and set(reused) <= {2, 3, 7, 8, 9, 10}  # the first 2 and the last step of each expert run
    _, off = run(high, small_t2v_latent(), low, steps=12, shift=12.0, switch_step=5,
                 step_cache=Wan22DuoStepCache().make(threshold=0.0, warmup_steps=2)[0])
    assert off["cache"]["reused"] == []


def test_bad_cache_values_are_named():
    with pytest.raises(StepCacheError, match="warmup is 1"):
        Wan22DuoStepCache().make(threshold=0.1, warmup_steps=1)


def test_a_phase_of_the_other_model_kind_is_named(models):
    high = expert(models, "t2v_high")
    (phases,) = Wan22DuoPhase().add(high, cfg=3.5, steps=2)  # wired into the MODEL sampler (same socket type)
    with pytest.raises(ValueError, match=r"lead phase 1 holds a Wan 2.2 Duo model .* build the phase with "
                                         "Wan22DuoModelPhase"):
        phase_models(phases, "MODEL", "Wan22DuoModelSampler")
    with pytest.raises(ValueError, match="lead_phases entry 1 is a str"):
        phase_models(("x",), "WAN22DUO_MODEL", "Wan22DuoSampler")


def test_cache_and_phases_are_refused_with_the_parallel_input_before_any_worker_starts(models, monkeypatch):
    from wan22duo.engine.parallel import workers
    from wan22duo.nodes.parallel import Wan22DuoParallel

    def no_group(*args, **kwargs):
        raise AssertionError("a worker group was started")

    monkeypatch.setattr(workers, "shared_group", no_group)
    high, low = expert(models, "t2v_high"), expert(models, "t2v_low")
    (options,) = Wan22DuoParallel().options("cpu,cpu")
    (cache,) = Wan22DuoStepCache().make(threshold=0.1, warmup_steps=2)
    (phases,) = Wan22DuoPhase().add(high, cfg=3.5, steps=1)
    for extra, named in (({"step_cache": cache}, "step_cache cannot"),
                         ({"lead_phases": phases}, "lead_phases cannot"),
                         ({"step_cache": cache, "lead_phases": phases}, "step_cache and lead_phases cannot")):
        with pytest.raises(ValueError, match=named):
            run(high, small_t2v_latent(), low, steps=4, switch_step=2, parallel=options, **extra)
