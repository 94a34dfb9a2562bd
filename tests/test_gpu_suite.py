"""bench/gpu_suite.py's own arithmetic: the FLOP count behind its roofline column, and its random models."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import gpu_suite  # noqa: E402

from wan22duo.engine.model import attention as attn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def matmul_attention(q, k, v):
    """Attention as plain matmuls, so torch's FLOP counter sees its two products."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


@pytest.mark.parametrize("case", gpu_suite.cases("tiny"), ids=lambda c: c.label)
def test_step_flops_match_torchs_flop_counter(case):
    model = gpu_suite.random_model(case.config, torch.device("cpu"), torch.float32)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
    x, t, pos, neg = gpu_suite.inputs(case, torch.device("cpu"))
    previous = attn.set_attention_backend(matmul_attention)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            v = gpu_suite.guided_velocity(model, x, t, pos, neg, gpu_suite.CFG)
    finally:
        attn.set_attention_backend(previous)
    assert torch.isfinite(v).all() and v.abs().mean() > 0.01  # order-1 outputs, not a dead random model
    counted = counter.get_total_flops()
    # The formula leaves out the time embedding MLPs (a few [B, 256] x [256, D] products).
    assert abs(gpu_suite.step_flops(case) / counted - 1) < 0.01


def test_real_cases_have_the_official_token_counts():
    tokens = {c.label: c.tokens for c in gpu_suite.cases("real")}
    assert tokens == {"T2V-A14B 832x480x81": 32760, "T2V-A14B 1280x720x81": 75600, "TI2V-5B 1280x704x121": 27280}
    a14b = gpu_suite.cases("real")[0].config
    assert (a14b.dim, a14b.num_heads, a14b.num_layers, a14b.ffn_dim) == (5120, 40, 40, 13824)


def test_video_rows_time_whole_runs_and_count_the_reused_steps(monkeypatch):
    case = gpu_suite.cases("tiny")[0]
    dev = gpu_suite.Device(torch.device("cpu"))
    model = gpu_suite.random_model(case.config, dev.device, torch.float32)
    _, _, pos, neg = gpu_suite.inputs(case, dev.device)
    args = gpu_suite.parse_args(["--size", "tiny", "--video-steps", "12"])
    monkeypatch.setattr(gpu_suite, "DEFAULT_THRESHOLD", 50.0)  # reuse all a stage allows, to see it counted
    rows = []
    gpu_suite.video_rows(case, model, dev, args, rows, float("inf"), (pos, neg))
    plain, cached = rows
    assert (plain.config, cached.config) == ("video, 12 steps, no cache", "video, 12 steps, step cache 50")
    assert plain.seconds > 0 and cached.seconds > 0
    assert plain.note == "s/video; 12 of 12 steps ran"
    # two experts (the one random model in both roles), each keeps 2 warm-up steps and its last step
    reused = cached.extra["reused_steps"]
    assert 0 < reused <= 12 - 6 and cached.note.startswith(f"s/video; {12 - reused} of 12 steps ran, {reused} reused")
    rows = []
    gpu_suite.video_rows(case, model, dev, args, rows, 0.0, (pos, neg))  # past the deadline
    assert [r.note for r in rows] == ["skipped (time budget)"] * 2
