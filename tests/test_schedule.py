"""Schedules and the expert-switch rule, against the timestep tables typed from spec §1.3."""
import pytest
import torch

from wan22duo.engine.sampling.schedule import boundary_switch_step, make_schedule, resolve_switch_step

# Spec §1.3, "timesteps fed to the model", T2V 40 steps at shift 12 (all 40 values).
T2V_40_SHIFT12 = [
    999, 997, 995, 993, 990, 988, 985, 982, 979, 976, 972, 969, 965, 961, 956, 952, 947, 941, 936, 929,
    922, 915, 907, 898, 888, 877, 865, 852, 837, 819, 799, 776, 749, 717, 678, 631, 571, 492, 386, 235,
]
# Spec §1.3, I2V 40 steps at shift 5: the first 18 and the last 2 values.
I2V_40_SHIFT5_HEAD = [999, 994, 989, 983, 978, 972, 965, 959, 952, 944, 937, 929, 920, 911, 902, 892, 882, 870]
I2V_40_SHIFT5_TAIL = [208, 113]
# Spec §1.3, TI2V 50 steps at shift 5: first 7 and last 3.
TI2V_50_SHIFT5_HEAD = [999, 995, 991, 987, 982, 978, 973]
TI2V_50_SHIFT5_TAIL = [241, 172, 92]


def test_t2v_timesteps_and_switch_after_26_of_40():
    sched = make_schedule("wan", 40, 12.0)
    assert sched.timesteps.tolist() == T2V_40_SHIFT12
    assert boundary_switch_step(sched.timesteps, 0.875) == 26  # last high step is t = 877


def test_i2v_timesteps_and_switch_after_15_of_40():
    sched = make_schedule("wan", 40, 5.0)
    assert sched.timesteps[:18].tolist() == I2V_40_SHIFT5_HEAD
    assert sched.timesteps[-2:].tolist() == I2V_40_SHIFT5_TAIL
    assert boundary_switch_step(sched.timesteps, 0.900) == 15  # last high step is t = 902


def test_ti2v_timesteps():
    sched = make_schedule("wan", 50, 5.0)
    assert sched.timesteps[:7].tolist() == TI2V_50_SHIFT5_HEAD
    assert sched.timesteps[-3:].tolist() == TI2V_50_SHIFT5_TAIL


def test_twenty_step_switches():
    # Spec §1.3: 13 of 20 (T2V, shift 12) and 8 of 20 (I2V, shift 5).
    assert boundary_switch_step(make_schedule("wan", 20, 12.0).timesteps, 0.875) == 13
    assert boundary_switch_step(make_schedule("wan", 20, 5.0).timesteps, 0.900) == 8


@pytest.mark.parametrize(
    "shift,boundary,steps,expected",
    [(8.0, 0.875, 20, 11), (12.0, 0.875, 40, 26), (5.0, 0.9, 4, 2), (8.0, 0.9, 20, 10)],
)
def test_simple_schedule_switch_follows_the_official_rule(shift, boundary, steps, expected):
    # landscape.md §0: the official rule on ComfyUI's "simple" sigmas (one step later than
    # WanMoeKSampler; 2+2 for the 4-step Lightning split).
    assert boundary_switch_step(make_schedule("simple", steps, shift).timesteps, boundary) == expected


def test_first_sigmas_of_both_grids():
    # Spec §5.4: ComfyUI simple starts at 1.0, 0.997868; the official UniPC grid at 0.999917, 0.997783.
    simple = make_schedule("simple", 40, 12.0).sigmas
    wan = make_schedule("wan", 40, 12.0).sigmas
    assert simple[:2].tolist() == pytest.approx([1.0, 0.997868], abs=1e-6)
    assert wan[:2].tolist() == pytest.approx([0.999917, 0.997783], abs=1e-6)
    assert simple[-1] == 0 and wan[-1] == 0


def test_boundary_is_inclusive_on_the_integer_timestep():
    ts = make_schedule("wan", 40, 12.0).timesteps
    assert boundary_switch_step(ts, 0.877) == 26  # t = 877 >= 877 stays high
    assert boundary_switch_step(ts, 0.8771) == 25


def test_boundary_edges():
    ts = make_schedule("wan", 40, 12.0).timesteps
    assert boundary_switch_step(ts, 0.9995) == 0  # above the first timestep (999): low expert only
    assert boundary_switch_step(ts, 1.0) == 0
    assert boundary_switch_step(ts, 0.2) == 40  # below the last timestep (235): high expert only
    assert boundary_switch_step(ts, 0.0) == 40
    with pytest.raises(ValueError, match="boundary must lie in"):
        boundary_switch_step(ts, 1.5)


def test_switch_step_override():
    ts = make_schedule("wan", 40, 12.0).timesteps
    assert resolve_switch_step(ts, 0.875, -1) == 26
    assert resolve_switch_step(ts, 0.875, 0) == 0
    assert resolve_switch_step(ts, 0.875, 40) == 40
    assert resolve_switch_step(ts, 0.875, 10) == 10
    for bad in (41, -2):
        with pytest.raises(ValueError, match=r"switch_step must be -1"):
            resolve_switch_step(ts, 0.875, bad)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="unknown scheduler 'karras'"):
        make_schedule("karras", 10, 5.0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        make_schedule("wan", 0, 5.0)
    with pytest.raises(ValueError, match="shift must be positive"):
        make_schedule("wan", 10, 0.0)


def test_wan_grid_dtypes():
    sched = make_schedule("wan", 10, 5.0)
    assert sched.sigmas.dtype == torch.float32 and sched.sigmas.numel() == 11
    assert sched.timesteps.dtype == torch.float64
    assert torch.equal(sched.timesteps, sched.timesteps.floor())  # truncated integers
