"""One video over several processes: sequence parallel and CFG parallel equal the single process.

Real ``torch.distributed`` (gloo) in real spawned workers (``engine.parallel.workers``),
at 2 and 4 ranks, for T2V-A14B, I2V-A14B and TI2V-5B tiny models of 4 heads, on a
latent of 27 tokens (divides by neither 2 nor 4, so the padding path runs). Every job
has a timeout, and a dead or failing worker stops the whole group, so nothing hangs.

Bound: fp32, 1e-5 relative to the largest value. The ranks compute the same sums as the
single process except that attention runs per head group and the linears over other row
counts, which may change the CPU kernels' summation order; CFG parallel runs the two
guidance passes as two forwards where the single process batches them. Seen on the
development CPU: forwards and whole runs equal exactly, CFG parallel 2.2e-6.
"""
import os
import signal
import threading

import pytest
import torch

from wan22duo.engine.model.conditioning import I2VConditioning
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.parallel import workers
from wan22duo.engine.parallel.sequence import all_to_all_bytes, gather_bytes, padded_length
from wan22duo.engine.sampling.loop import guided_velocity, sample
from wan22duo.engine.testing import parallel_jobs
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.weights.checkpoint import detect_dit, load_dit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIMS = dict(dim=512, ffn_dim=256, num_layers=1, text_dim=64)  # 4 heads: 2 or 1 per rank
GRID = (3, 6, 6)  # latent T, h, w -> 3 * 3 * 3 = 27 tokens
TOKENS = 27
JOB_S = 180
VARIANTS = ("t2v_a14b", "i2v_a14b", "ti2v_5b")
CHANNELS = {"t2v_a14b": 16, "i2v_a14b": 16, "ti2v_5b": 48}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return {(v, s): str(write_tiny_dit(root / f"{v}_{s}.safetensors", variant=v, seed=s, **DIMS))
            for v in VARIANTS for s in (1, 2)}


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def group(request):
    g = workers.WorkerGroup(["cpu"] * request.param, threads=1, start_timeout_s=JOB_S)
    yield g
    g.close()


def inputs(variant: str, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    in_dim = {"t2v_a14b": 16, "i2v_a14b": 36, "ti2v_5b": 48}[variant]
    x = torch.randn(1, in_dim, *GRID, generator=g)
    context = torch.randn(1, 7, DIMS["text_dim"], generator=g)
    if variant == "ti2v_5b":  # frame 0 kept (t = 0), the rest at t: one modulation per frame
        t = torch.full((1, TOKENS), 700.0)
        t[:, :9] = 0.0
    else:
        t = torch.tensor([700.0])
    return x, t, context


@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_parallel_forward_equals_one_process(group, files, variant):
    path = files[(variant, 1)]
    x, t, context = inputs(variant)
    with torch.no_grad():
        expected = load_dit(path, compute_dtype=torch.float32)(x, t, context)
    got = group.run(parallel_jobs.forward_job, timeout_s=JOB_S, path=path, x=x, t=t, context=context)
    assert got["velocity"].shape == expected.shape
    assert rel(got["velocity"], expected) < 1e-5

    # what went through the collectives is what the README's formula says (fp32 here)
    ranks, cfg = group.world, detect_dit(path)
    traffic = got["traffic"]
    assert traffic.calls == 4 * cfg.num_layers
    assert traffic.all_to_all == all_to_all_bytes(cfg, TOKENS, ranks, element_bytes=4)
    assert traffic.gather == gather_bytes(cfg, TOKENS, ranks)
    local = padded_length(TOKENS, ranks) // ranks
    assert traffic.all_to_all == 4 * local * cfg.dim * 4 * (ranks - 1) // ranks  # 1 layer, by hand


def sample_args(variant: str):
    g = torch.Generator().manual_seed(5)
    latent = torch.randn(1, CHANNELS[variant], *GRID, generator=g)
    positive = torch.randn(1, 7, DIMS["text_dim"], generator=g)
    negative = torch.randn(1, 5, DIMS["text_dim"], generator=g)
    args = dict(latent=latent, positive=positive, negative=negative, seed=9, steps=2, shift=5.0,
                cfg_high=3.0, cfg_low=2.0, solver="euler")
    if variant == "i2v_a14b":
        image = torch.randn(1, 16, *GRID, generator=g)
        mask = torch.zeros(1, 4, *GRID)
        mask[:, :, 0] = 1.0
        args["i2v"] = I2VConditioning(image, mask)
    if variant == "ti2v_5b":
        mask = torch.ones(1, 1, *GRID)
        mask[:, :, 0] = 0.0  # first latent frame kept: one timestep per frame
        args["noise_mask"] = mask
    else:
        args["switch_step"] = 1  # one step on each expert
    return args


def handle(path: str) -> ModelHandle:
    return ModelHandle(lambda d: load_dit(path, compute_dtype=torch.float32, device=d), "cpu", torch.float32,
                       {"config": detect_dit(path), "path": path})


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_run_on_workers_equals_one_process(group, files, variant):
    high = files[(variant, 1)]
    low = None if variant == "ti2v_5b" else files[(variant, 2)]
    args = sample_args(variant)
    expected = sample(handle(high), None if low is None else handle(low), **args)
    got = group.run(workers.run_sample, timeout_s=JOB_S, high=high, low=low, **args)
    assert got.switch_step == expected.switch_step and got.expert_steps == expected.expert_steps
    assert rel(got.latent, expected.latent) < 1e-5
    assert not torch.equal(got.latent, args["latent"])


def test_guidance_batches_both_passes_on_a_sequence_parallel_model(group, files):
    """Contexts of 7 and 5 rows are padded to 512 and run as one forward of batch 2: one set of all-to-alls."""
    path = files[("t2v_a14b", 1)]
    x, t, positive = inputs("t2v_a14b")
    negative = torch.randn(1, 5, DIMS["text_dim"], generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = guided_velocity(load_dit(path, compute_dtype=torch.float32), x, t, positive, negative, 4.0)
    got = group.run(parallel_jobs.guided_job, timeout_s=JOB_S, path=path, x=x, t=t, positive=positive,
                    negative=negative, cfg=4.0)
    assert rel(got["velocity"], expected) < 1e-5
    cfg = detect_dit(path)
    assert got["traffic"].calls == 4 * cfg.num_layers  # two passes would make twice as many
    assert got["traffic"].all_to_all == all_to_all_bytes(cfg, TOKENS, group.world, batch=2, element_bytes=4)


def test_cfg_parallel_equals_batched_guidance(group, files):
    path = files[("t2v_a14b", 1)]
    x, t, positive = inputs("t2v_a14b")
    negative = torch.randn(1, 7, DIMS["text_dim"], generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = guided_velocity(load_dit(path, compute_dtype=torch.float32), x, t, positive, negative, 4.0)
    got = group.run(parallel_jobs.cfg_job, timeout_s=JOB_S, path=path, x=x, t=t, positive=positive,
                    negative=negative, cfg=4.0)
    assert rel(got["velocity"], expected) < 1e-5
    assert got["traffic"].calls == 1  # one all-gather of the two velocities per step


def test_cfg_parallel_whole_run(group, files):
    args = sample_args("t2v_a14b")
    high, low = files[("t2v_a14b", 1)], files[("t2v_a14b", 2)]
    expected = sample(handle(high), handle(low), **args)
    got = group.run(workers.run_sample, timeout_s=JOB_S, high=high, low=low, cfg_parallel=True, **args)
    assert rel(got.latent, expected.latent) < 1e-5


# ---------------------------------------------------------------- failures


def test_a_killed_worker_fails_the_job_clearly_and_the_next_job_runs(files):
    devices = ["cpu", "cpu"]
    try:
        first = workers.shared_group(devices)
        assert workers.shared_group(devices) is first  # kept across jobs
        args = sample_args("t2v_a14b")
        high, low = files[("t2v_a14b", 1)], files[("t2v_a14b", 2)]
        victim = first.pids[1]
        timer = threading.Timer(2.0, os.kill, (victim, signal.SIGKILL))
        timer.start()
        with pytest.raises(workers.WorkerError, match=r"worker rank 1 \(pid \d+, device cpu\) was killed by signal 9"):
            first.run(workers.run_sample, timeout_s=JOB_S, high=high, low=low,
                      **{**args, "steps": 40, "callback": parallel_jobs.slow_step})
        timer.join()
        assert not first.alive and not any(p.is_alive() for p in first.processes)  # nothing left running

        second = workers.shared_group(devices)
        assert second is not first and second.alive
        got = second.run(workers.run_sample, timeout_s=JOB_S, high=high, low=low, **args)
        expected = sample(handle(high), handle(low), **args)
        assert rel(got.latent, expected.latent) < 1e-5
    finally:
        workers.close_shared_group()


def test_an_error_on_a_rank_names_it_and_stops_the_group(files):
    g = workers.WorkerGroup(["cpu", "cpu"], threads=1, start_timeout_s=JOB_S)
    try:
        with pytest.raises(workers.WorkerError, match=r"(?s)worker rank \d \(device cpu\) failed while running "
                                                      r"forward_job:.*nonexistent"):
            g.run(parallel_jobs.forward_job, timeout_s=JOB_S, path="/nonexistent/model.safetensors",
                  x=torch.zeros(1), t=torch.zeros(1), context=torch.zeros(1))
        assert not g.alive
        with pytest.raises(workers.WorkerError, match="was shut down"):
            g.run(parallel_jobs.forward_job, path="x", x=None, t=None, context=None)
    finally:
        g.close()


def test_a_job_past_its_timeout_stops_the_group():
    g = workers.WorkerGroup(["cpu", "cpu"], threads=1, start_timeout_s=JOB_S)
    try:
        assert g.run(parallel_jobs.sleep_job, timeout_s=JOB_S, seconds=0.0) == 0  # rank 0's answer
        with pytest.raises(workers.WorkerError, match=r"ranks \[0, 1\] gave no answer within 1 s while running "
                                                      r"sleep_job"):
            g.run(parallel_jobs.sleep_job, timeout_s=1.0, seconds=60.0)
        assert not any(p.is_alive() for p in g.processes)
    finally:
        g.close()


def test_bad_device_lists_are_refused():
    with pytest.raises(ValueError, match="at least one device"):
        workers.check_devices([])
    with pytest.raises(ValueError, match="all 'cpu' or all 'cuda:N'"):
        workers.check_devices(["cpu", "cuda:0"])
    with pytest.raises(ValueError, match="name a GPU twice"):
        workers.check_devices(["cuda:0", "cuda:0"])


# ---------------------------------------------------------------- the ComfyUI node


def test_sampler_node_on_parallel_workers_equals_the_plain_node(files, monkeypatch):
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader
    from wan22duo.nodes.parallel import Wan22DuoParallel
    from wan22duo.nodes.samplers import Wan22DuoSampler

    monkeypatch.setattr(workers, "JOB_TIMEOUT_S", JOB_S)  # the node gives none
    loader = Wan22DuoExpertLoader()
    high = loader.load(files[("t2v_a14b", 1)], "high_noise", "default", "fp32", "cpu")[0]
    low = loader.load(files[("t2v_a14b", 2)], "low_noise", "default", "fp32", "cpu")[0]
    g = torch.Generator().manual_seed(4)
    latent = {"samples": torch.randn(1, 16, *GRID, generator=g)}
    pos = [[torch.randn(1, 6, DIMS["text_dim"], generator=g), {}]]
    neg = [[torch.randn(1, 4, DIMS["text_dim"], generator=g), {}]]
    settings = dict(steps=2, sampler="euler", switch_step=1, low_noise_model=low)
    plain = Wan22DuoSampler().sample(high, pos, neg, latent, 3, **settings)
    high = loader.load(files[("t2v_a14b", 1)], "high_noise", "default", "fp32", "cpu")[0]
    low = settings["low_noise_model"] = loader.load(files[("t2v_a14b", 2)], "low_noise", "default", "fp32", "cpu")[0]
    groups = []
    try:
        for devices in ("cpu, cpu", "cpu,cpu,cpu,cpu"):  # CFG halves of 1 and of 2 sequence ranks
            (options,) = Wan22DuoParallel().options(devices, cfg_parallel=True)
            out = Wan22DuoSampler().sample(high, pos, neg, latent, 3, parallel=options, **settings)
            assert out["ui"] == plain["ui"]
            assert rel(out["result"][0]["samples"], plain["result"][0]["samples"]) < 1e-5
            groups.append(workers._shared)
            assert groups[-1].devices == ["cpu"] * len(devices.split(",")) and groups[-1].alive
        assert not high.loaded and not low.loaded  # the workers loaded the experts, not this process
        assert not any(p.is_alive() for p in groups[0].processes)  # the new device list replaced the group
    finally:
        workers.close_shared_group()
    assert not any(p.is_alive() for g in groups for p in g.processes)


def test_parallel_node_refuses_bad_settings():
    from wan22duo.nodes.parallel import Wan22DuoParallel

    with pytest.raises(ValueError, match="lists no device"):
        Wan22DuoParallel().options(" , ")
    with pytest.raises(ValueError, match="even number of devices; got 3"):
        Wan22DuoParallel().options("cpu,cpu,cpu", cfg_parallel=True)
    with pytest.raises(workers.ParallelError, match="no model file"):
        workers.ExpertFile.of(ModelHandle.from_module(torch.nn.Linear(2, 2)))


@pytest.mark.parametrize("end", ["exits", "is_killed"])
def test_workers_leave_with_their_driver(tmp_path, end):
    """A driver that exits closes its group (atexit); one killed with SIGKILL runs no atexit, and its idle
    workers notice and exit by themselves."""
    import subprocess
    import sys
    import time

    root = workers.PACK_ROOT
    script = tmp_path / "driver.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(root / 'scripts')!r})\n"
        "from packpath import load_pack\n"
        "load_pack()\n"
        "from wan22duo.engine.parallel.workers import WorkerGroup\n"
        "group = WorkerGroup(['cpu', 'cpu'])\n"
        "print(*group.pids, flush=True)\n"
        + ("sys.stdin.readline()\n" if end == "exits" else "time.sleep(600)\n"))
    driver = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(_running(p) for p in pids)
        if end == "exits":
            driver.stdin.write("\n")
            driver.stdin.flush()
            assert driver.wait(60) == 0
        else:
            driver.kill()
            driver.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.2)
        assert not any(_running(p) for p in pids), f"workers {pids} outlived their driver"
    finally:
        driver.kill()


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan is reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_readme_table_is_what_the_formula_gives():
    """The README's bandwidth table is the output of scripts/parallel_traffic.py (the formula tested above)."""
    import sys

    sys.path.insert(0, str(workers.PACK_ROOT / "scripts"))
    import parallel_traffic

    readme = (workers.PACK_ROOT / "README.md").read_text()
    rows = parallel_traffic.rows()
    assert len(rows) == 2 + 9 and all(row in readme for row in rows)
    assert "| A14B 720p (1280x720, 81 frames) | 75600 | 8 | 27.1 |" in rows[7]  # 40 x 4 x 9450 x 5120 x 2 B x 7/8 x 2


def test_starting_workers_hides_the_main_script_only_meanwhile():
    """Spawn would re-run __main__ (ComfyUI's main.py) in each child; it is hidden while a child starts."""
    import sys

    main = sys.modules["__main__"]
    before = (main.__dict__.get("__file__"), main.__dict__.get("__spec__"))
    with workers.main_script_hidden():
        assert "__file__" not in main.__dict__ and main.__spec__ is None
    assert (main.__dict__.get("__file__"), main.__dict__.get("__spec__")) == before
