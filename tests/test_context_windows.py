"""Context windows in the one loop: coverage, fuse weights, the causal anchor, FreeNoise, conditioning, memory."""
import logging
from types import SimpleNamespace

import pytest
import torch

from wan22duo.engine.model.conditioning import I2VConditioning
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling import loop
from wan22duo.engine.sampling.context_windows import (FUSES, SCHEDULES, ContextWindowError, ContextWindows, Window,
                                                       latent_length, latent_overlap, van_der_corput)
from wan22duo.engine.sampling.loop import make_noise, sample

from test_sampling_fixtures import contexts

T2V = SimpleNamespace(variant="t2v_a14b", in_dim=16, out_dim=16, text_dim=4096)
I2V = SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096)
TI2V = SimpleNamespace(variant="ti2v_5b", in_dim=48, out_dim=48, text_dim=4096)
CASES = [(frames, length, overlap) for frames in (5, 9, 13, 21, 31) for length, overlap in
         ((4, 1), (4, 0), (5, 2), (6, 3), (7, 5), (3, 2))]


def recording(config, calls, name, local=True):
    """A stand-in DiT that records its inputs. ``local``: each frame's output depends on that frame only
    (so windows cannot change it); else the output also carries the frame's position in the window."""
    def model(x, t, context):
        calls.append(SimpleNamespace(expert=name, x=x.clone(), t=t.clone()))
        v = torch.sin(x[:, : config.out_dim]) + 0.1 * context.mean() + t.float().mean() / 1000.0
        if not local:
            v = v + 0.05 * torch.arange(x.shape[2], dtype=v.dtype).view(1, 1, -1, 1, 1)
        return v

    return ModelHandle(lambda d: model, info={"config": config, "name": name,
                                             "role": {"high": "high_noise", "low": "low_noise"}.get(name)})


def run(frames, windows=None, config=T2V, calls=None, local=True, seed=3, **kw):
    calls = [] if calls is None else calls
    high = recording(config, calls, "high", local)
    low = recording(config, calls, "low", local) if config is not TI2V else None
    pos, neg = contexts(5, 4)
    shape = (1, config.out_dim, frames, 4, 6)
    kw.setdefault("steps", 6)
    kw.setdefault("switch_step", 3 if low is not None else -1)
    return sample(high, low, kw.pop("latent", torch.zeros(shape)), pos, neg, seed=seed, shift=5.0,
                  windows=windows, **kw)


# ---------------------------------------------------------------- windows and weights


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("frames, length, overlap", CASES)
def test_windows_cover_the_video_with_full_length_windows_at_every_step(schedule, frames, length, overlap):
    w = ContextWindows(length, overlap, schedule=schedule)
    for step in range(12):
        windows = w.windows(frames, step)
        if frames <= length:
            assert windows == [Window(0, frames)]
            continue
        starts = [x.start for x in windows]
        assert starts == sorted(set(starts)) and starts[0] == 0 and windows[-1].stop == frames
        assert all(x.stop - x.start == length for x in windows)
        covered = [f for x in windows for f in x.frames]
        assert set(covered) == set(range(frames))
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(0 < g <= length - overlap for g in gaps)  # never more than the stride apart: the overlap holds


def test_uniform_windows_move_between_steps_and_start_as_static():
    uniform, static = ContextWindows(6, 2, schedule="uniform"), ContextWindows(6, 2, schedule="static")
    assert uniform.starts(30, 0) == static.starts(30, 0) == [0, 4, 8, 12, 16, 20, 24]
    assert static.starts(30, 5) == static.starts(30, 0)
    assert [van_der_corput(i) for i in range(5)] == [0.0, 0.5, 0.25, 0.75, 0.125]
    assert uniform.starts(30, 1) == [0, 2, 6, 10, 14, 18, 22, 24]  # shifted by floor(0.5 * 4) = 2
    # the first and last windows sit at the video's ends; the seams between them move from step to step
    seams = [set(x.stop for x in uniform.windows(30, s)[1:-1]) for s in range(4)]
    assert not set.intersection(*seams)


@pytest.mark.parametrize("fuse", FUSES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("frames, length, overlap", CASES)
def test_fuse_weights_are_positive_and_sum_to_one_on_every_frame(fuse, schedule, frames, length, overlap):
    w = ContextWindows(length, overlap, schedule=schedule, fuse=fuse)
    for step in range(6):
        windows = w.windows(frames, step)
        weights = w.weights(windows, frames)
        total = torch.zeros(frames, dtype=torch.float64)
        for x, weight in zip(windows, weights):
            assert weight.shape == (x.stop - x.start,) and bool((weight > 0).all())
            total[x.start:x.stop] += weight.double()
        assert torch.allclose(total, torch.ones(frames, dtype=torch.float64), atol=1e-6)


def test_pyramid_and_overlap_linear_weights():
    w = ContextWindows(5, 2, fuse="pyramid")
    assert w.weights([Window(0, 5)], 5)[0].tolist() == [1.0] * 5  # one window: normalised to 1
    raw = ContextWindows(5, 2, fuse="pyramid").weights([Window(0, 5), Window(3, 8)], 8)
    assert raw[0][:3].tolist() == [1.0, 1.0, 1.0] and raw[1][2:].tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(raw[0][3:], torch.tensor([2 / 3, 1 / 3]))  # weights 1 2 3 2 1: 2 vs 1, then 1 vs 2
    linear = ContextWindows(5, 2, fuse="overlap_linear").weights([Window(0, 5), Window(3, 8)], 8)
    assert torch.allclose(linear[0], torch.tensor([1, 1, 1, 2 / 3, 1 / 3]))  # the cross-fade over 2 shared frames
    assert torch.allclose(linear[1], torch.tensor([1 / 3, 2 / 3, 1, 1, 1]))


def test_video_frames_convert_to_latent_frames():
    assert [latent_length(f) for f in (5, 17, 81)] == [2, 5, 21]
    assert [latent_overlap(f) for f in (0, 3, 4, 30, 32)] == [0, 0, 1, 7, 8]
    w = ContextWindows.from_video_frames(81, 30, schedule="static", fuse="flat")
    assert (w.length, w.overlap, w.schedule, w.fuse) == (21, 7, "static", "flat")


@pytest.mark.parametrize("kwargs, match", [
    (dict(length=80, overlap=8), "4n\\+1"),
    (dict(length=17, overlap=-4), "negative"),
    (dict(length=17, overlap=20), "smaller than the window"),
    (dict(length=1, overlap=0), "too short"),
    (dict(length=17, overlap=4, schedule="looped"), "schedule 'looped'"),
    (dict(length=17, overlap=4, fuse="relative"), "fuse 'relative'"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ContextWindowError, match=match):
        ContextWindows.from_video_frames(**kwargs)


# ---------------------------------------------------------------- FreeNoise


def test_freenoise_gives_every_window_a_permutation_of_the_first_windows_noise():
    w = ContextWindows(6, 2, schedule="static")
    noise = make_noise(11, (1, 2, 30, 2, 3))
    shuffled = w.initial_noise(noise, seed=11)
    assert torch.equal(shuffled[:, :, :6], noise[:, :, :6]) and not torch.equal(shuffled, noise)
    assert torch.equal(noise, make_noise(11, noise.shape))  # the input is left alone
    first = sorted(tuple(shuffled[0, :, f].flatten().tolist()) for f in range(6))
    for start in range(0, 30 - 6 + 1, 4):
        frames = sorted(tuple(shuffled[0, :, f].flatten().tolist()) for f in range(start, start + 6))
        assert frames == first, start


def test_freenoise_is_deterministic_per_seed_and_off_for_one_window():
    w = ContextWindows(6, 1)
    noise = make_noise(0, (1, 2, 40, 2, 2))
    assert torch.equal(w.initial_noise(noise, 5), w.initial_noise(noise, 5))
    assert not torch.equal(w.initial_noise(noise, 5), w.initial_noise(noise, 6))
    short = noise[:, :, :6]
    assert w.initial_noise(short, 5) is short
    off = ContextWindows(6, 1, freenoise=False)
    assert off.initial_noise(noise, 5) is noise


# ---------------------------------------------------------------- in the loop


@pytest.mark.parametrize("frames, length", [(4, 4), (3, 6), (5, 6)])
def test_a_video_no_longer_than_one_window_is_bit_identical_to_no_windows(frames, length):
    plain = run(frames)
    windowed = run(frames, ContextWindows(length, 2, schedule="uniform", fuse="overlap_linear"))
    assert torch.equal(windowed.latent, plain.latent)
    assert windowed.windows is None and "context_windows" not in windowed.switch_info()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("anchor", [True, False])
def test_the_model_sees_each_window_once_per_step_both_experts_the_same(schedule, anchor):
    calls = []
    w = ContextWindows(4, 1, schedule=schedule, freenoise=False, causal_anchor=anchor)
    result = run(11, w, calls=calls, steps=6, switch_step=3)
    per_step = len(w.windows(11, 0))
    assert result.windows["windows_per_step"] == per_step == 4
    call = 0
    for step in range(6):
        windows = w.windows(11, step)
        for window in windows:
            for _ in range(2):  # cond and uncond (contexts of different lengths: two passes)
                c = calls[call]
                assert c.expert == ("high" if step < 3 else "low")
                expect = 5 if window.anchor is not None else 4
                assert c.x.shape[2] == expect == len(window.model_frames)
                assert (window.anchor is not None) == (anchor and window.start > 0)
                call += 1
    assert call == len(calls)


def test_windows_of_a_frame_local_model_give_the_unwindowed_result():
    """A model whose output at a frame depends on that frame only: slicing, the anchor and the fuse (weights
    summing to 1) must then reproduce the unwindowed run up to float rounding."""
    plain = run(13)
    for schedule in SCHEDULES:
        for fuse in FUSES:
            w = ContextWindows(5, 2, schedule=schedule, fuse=fuse, freenoise=False)
            out = run(13, w).latent
            err = float((out - plain.latent).abs().max())
            assert err < 1e-5, (schedule, fuse, err)


def test_the_causal_anchor_output_is_dropped_and_the_input_is_the_frame_before():
    w = ContextWindows(4, 1, schedule="static", fuse="flat")
    x = torch.arange(10.0).view(1, 1, 10, 1, 1)
    seen = []

    def call(frames, cond_frames):  # the window's position of each frame as its velocity
        assert cond_frames == frames  # no start frame retained
        seen.append(list(frames))
        return torch.arange(len(frames), dtype=torch.float32).view(1, 1, -1, 1, 1)

    fused = w.fuse_velocity(0, call, x.shape, "cpu").flatten().tolist()
    assert seen == [[0, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 8, 9]]
    # frame 3: position 3 in window 1, position 1 (after the anchor) in window 2; flat weights -> mean 2
    assert fused[:3] == [0.0, 1.0, 2.0] and fused[3] == 2.0 and fused[6] == (4 + 1) / 2


def test_windowed_runs_are_deterministic_per_seed():
    w = ContextWindows(4, 2, schedule="uniform", fuse="pyramid")
    a, b = run(14, w, local=False, seed=9), run(14, w, local=False, seed=9)
    assert torch.equal(a.latent, b.latent)
    assert not torch.equal(a.latent, run(14, w, local=False, seed=10).latent)
    off = run(14, ContextWindows(4, 2, schedule="uniform", fuse="pyramid", freenoise=False), local=False, seed=9)
    assert not torch.equal(a.latent, off.latent)  # FreeNoise changed the start


def start_frame_conditioning(seed: int):
    """I2V conditioning of a 9-latent-frame video whose frame 0 is known (a random image latent), and its y."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(1, 16, 9, 4, 6, generator=g)
    concat_mask = torch.ones(1, 1, 9, 4, 6)
    concat_mask[:, :, :1] = 0.0
    cond = I2VConditioning.from_comfy(raw, concat_mask)
    return cond, cond.y((1, 16, 9, 4, 6))


def test_i2v_conditioning_is_sliced_with_the_window():
    calls = []
    cond, y = start_frame_conditioning(4)
    w = ContextWindows(4, 1, schedule="static", freenoise=False)
    run(9, w, config=I2V, calls=calls, i2v=cond, steps=2, switch_step=1)
    windows = w.windows(9, 0)
    for n, window in enumerate(windows):
        c = calls[2 * n]
        assert c.x.shape[1] == 36
        assert torch.equal(c.x[:, 16:], y[:, :, window.model_frames])
    assert float(calls[0].x[:, 16:20, 0].min()) == 1.0  # the window with frame 0 sees the start image as known
    assert float(calls[2].x[:, 16:20].max()) == 0.0  # a later one does not


@pytest.mark.parametrize("anchor", [True, False])
def test_retain_first_frame_gives_every_window_the_start_image_first(anchor):
    """As ComfyUI 0.33's retain_first_frame: a window after the first gets frame 0's I2V channels (mask known,
    start image latent) at its first model position, the anchor's when there is one; its latent stays its own."""
    calls = []
    cond, y = start_frame_conditioning(5)
    w = ContextWindows(4, 1, schedule="static", freenoise=False, causal_anchor=anchor, retain_first_frame=True)
    plain = ContextWindows(4, 1, schedule="static", freenoise=False, causal_anchor=anchor)
    run(9, w, config=I2V, calls=calls, i2v=cond, steps=2, switch_step=1)
    plain_calls = []
    run(9, plain, config=I2V, calls=plain_calls, i2v=cond, steps=2, switch_step=1)
    windows = w.windows(9, 0)
    assert len(windows) == 3
    for n, window in enumerate(windows):
        c, p = calls[2 * n], plain_calls[2 * n]
        expect = [0] + window.model_frames[1:] if window.start > 0 else window.model_frames
        assert window.cond_frames == expect
        assert torch.equal(c.x[:, 16:], y[:, :, expect])
        assert float(c.x[:, 16:20, 0].min()) == 1.0  # every window sees the start image as known
        if window.start > 0:
            assert torch.equal(c.x[:, 16:, 1:], p.x[:, 16:, 1:])  # the rest as without retaining
            assert float(p.x[:, 16:20, 0].max()) == 0.0
    # the first step's noisy latent is the same either way (later steps differ: the velocities changed)
    assert torch.equal(calls[2].x[:, :16], plain_calls[2].x[:, :16])


def test_retain_first_frame_on_t2v_changes_nothing_and_says_so(caplog):
    caplog.set_level(logging.WARNING)
    a = run(11, ContextWindows(4, 1, freenoise=False, retain_first_frame=True), local=False)
    b = run(11, ContextWindows(4, 1, freenoise=False), local=False)
    assert torch.equal(a.latent, b.latent)
    assert "retain_first_frame acts on I2V-A14B" in caplog.text


def test_ti2v_runs_with_a_warning_and_the_kept_frames_per_window(caplog):
    caplog.set_level(logging.WARNING)
    calls = []
    latent = torch.zeros(1, 48, 9, 4, 6)
    latent[:, :, :1] = 1.0
    noise_mask = torch.ones(1, 1, 9, 4, 6)
    noise_mask[:, :, :1] = 0.0
    w = ContextWindows(4, 1, schedule="static", freenoise=False)
    result = run(9, w, config=TI2V, calls=calls, latent=latent, noise_mask=noise_mask, cfg_high=1.0, steps=2)
    assert any("TI2V-5B" in r.getMessage() and "Wan22DuoTI2VExtend" in r.getMessage() for r in caplog.records)
    tokens = 2 * 3
    assert calls[0].t.shape == (1, 4 * tokens) and bool((calls[0].t[:, :tokens] == 0).all())
    assert bool((calls[1].t > 0).all())  # the window without frame 0 keeps nothing
    assert torch.equal(result.latent[:, :, :1], latent[:, :, :1])


def test_the_activation_estimate_counts_one_window(monkeypatch):
    seen = []

    def fake(config, frames, height, width, *args, **kwargs):
        seen.append(frames)
        return 0

    monkeypatch.setattr(loop, "activation_bytes", fake)
    config = SimpleNamespace(**vars(T2V), dim=8, ffn_dim=16, head_dim=4, text_len=8)
    run(30, config=config)
    assert set(seen) == {30}
    seen.clear()
    run(30, ContextWindows(6, 2), config=config)
    assert set(seen) == {7}  # 6 frames and the causal anchor
    seen.clear()
    run(30, ContextWindows(6, 2, causal_anchor=False), config=config)
    assert set(seen) == {6}
    assert loop.model_shape((1, 16, 30, 60, 104), ContextWindows(21, 7)) == (1, 16, 22, 60, 104)
    assert loop.model_shape((1, 16, 20, 60, 104), ContextWindows(21, 7)) == (1, 16, 20, 60, 104)


def test_something_else_than_windows_is_refused():
    with pytest.raises(loop.SamplingError, match="expected an engine.sampling.context_windows.ContextWindows"):
        run(9, windows={"length": 4})


def test_windows_with_the_step_cache_and_a_leading_phase():
    """Both act on the whole latent around the windowed model call: threshold 0 changes nothing, and a leading
    phase gets the same windows as the experts (they depend on the step only)."""
    from wan22duo.engine.sampling.phases import Phase
    from wan22duo.engine.sampling.step_cache import StepCache

    w = ContextWindows(4, 1, schedule="uniform")
    plain = run(11, w, steps=12, switch_step=6)
    cached = run(11, w, steps=12, switch_step=6, step_cache=StepCache(threshold=0.0))
    assert torch.equal(cached.latent, plain.latent) and cached.cache["reused"] == []
    calls = []
    lead = recording(T2V, calls, "lead1")
    run(11, w, calls=calls, steps=6, switch_step=4, lead=[Phase(lead, 4.0, 2)])
    frames = {}
    for c in calls:
        frames.setdefault(c.expert, set()).add(c.x.shape[2])
    assert set(frames) == {"lead1", "high", "low"} and all(f <= {4, 5} for f in frames.values())
