"""Loop parity: our dual-expert run against diffusers' WanPipeline and a hand-written Euler loop.

The reference is WanPipeline's two-transformer loop (``transformer`` = high noise,
``transformer_2`` = low noise, ``boundary_ratio``) written out with diffusers' flow UniPC
scheduler and diffusers' ``WanTransformer3DModel``, which gets our tiny random experts
converted to its parameter names (spec §6.3). Contexts are zero-padded to 512 rows for
diffusers, as its text encoding does; our model pads them itself.

Why the scheduler gets our grid: diffusers' flow UniPC builds its unshifted sigmas as
``linspace(1, 1/1000, steps + 1)[:-1]`` (spec §5.4), offset by +0.001 from the
official ``linspace(float32(0.999), 0, steps + 1)[:-1]`` that our "wan" schedule and
the official scheduler use. That offset alone changes the result by O(1e-2), so the
comparison would test the grid, not the loop. diffusers accepts custom unshifted
sigmas (``set_timesteps(sigmas=...)``) and shifts them with ``flow_shift`` itself; we
pass it the official grid, assert that its sigmas and timesteps then equal ours
exactly, and compare the loops.
"""
import numpy as np
import torch
from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

from wan22duo.engine.sampling.loop import sample
from wan22duo.engine.sampling.schedule import OFFICIAL_SIGMA_MAX, boundary_switch_step, make_schedule
from wan22duo.engine.model.latents import denormalize, normalize

from test_sampling_fixtures import comfy_noise, contexts, tiny_expert

STEPS, SHIFT, BOUNDARY = 8, 12.0, 0.875  # timesteps 999 ... 877 | 799 ...: switch after 6
CFG_HIGH, CFG_LOW = 4.0, 3.0
LATENT_SHAPE = (1, 16, 3, 8, 8)  # 9 frames, 64 x 64 pixels
TEXT_DIM = 256  # a narrow stand-in for umT5's 4096 keeps the 512-row text embedding cheap
DIMS = {"dim": 128, "ffn_dim": 256, "text_dim": TEXT_DIM}  # one head of the real head dim 128


def to_diffusers_key(key: str) -> str:
    """Original Wan key -> diffusers WanTransformer3DModel key (spec §6.3 table)."""
    renames = [
        ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
        ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
        ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
        ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
        ("time_projection.1.", "condition_embedder.time_proj."),
        ("head.modulation", "scale_shift_table"),  # before the generic block rule below
        ("head.head.", "proj_out."),
        (".self_attn.o.", ".attn1.to_out.0."),
        (".cross_attn.o.", ".attn2.to_out.0."),
        (".self_attn.", ".attn1."),
        (".cross_attn.", ".attn2."),
        (".norm3.", ".norm2."),  # the affine cross-attn norm changes its name
        (".ffn.0.", ".ffn.net.0.proj."),
        (".ffn.2.", ".ffn.net.2."),
        (".modulation", ".scale_shift_table"),
    ]
    for old, new in renames:
        if old in key:
            key = key.replace(old, new)
            if old == "head.modulation":
                break
    for p in "qkv":
        key = key.replace(f".attn1.{p}.", f".attn1.to_{p}.").replace(f".attn2.{p}.", f".attn2.to_{p}.")
    return key


def diffusers_transformer(model) -> WanTransformer3DModel:
    cfg = model.config
    ref = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.dim // 128, attention_head_dim=128,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6,
    )
    state = {to_diffusers_key(k): v.float() for k, v in model.state_dict().items()}
    ref.load_state_dict(state, strict=True)
    return ref.eval()


class OfficialGridUniPC(UniPCMultistepScheduler):
    """diffusers' flow UniPC, handed the official unshifted grid instead of its own."""

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        grid = np.linspace(OFFICIAL_SIGMA_MAX, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(device=device, sigmas=grid)


def diffusers_loop(transformer, transformer_2, boundary_ratio, scheduler, latents, prompt_embeds, negative_embeds):
    """WanPipeline's denoising loop (transformers is not installed, so the pipeline class
    itself cannot be built): expert by ``t >= boundary_ratio * 1000``, CFG per expert."""
    scheduler.set_timesteps(STEPS)
    scheduler.set_begin_index(0)
    boundary_timestep = boundary_ratio * scheduler.config.num_train_timesteps
    with torch.no_grad():
        for t in scheduler.timesteps:
            model, scale = (transformer, CFG_HIGH) if t >= boundary_timestep else (transformer_2, CFG_LOW)
            timestep = t.expand(latents.shape[0])
            cond = model(hidden_states=latents, timestep=timestep, encoder_hidden_states=prompt_embeds,
                         return_dict=False)[0]
            uncond = model(hidden_states=latents, timestep=timestep, encoder_hidden_states=negative_embeds,
                           return_dict=False)[0]
            latents = scheduler.step(uncond + scale * (cond - uncond), t, latents, return_dict=False)[0]
    return latents


def pad_to_512(context):
    return torch.nn.functional.pad(context, (0, 0, 0, 512 - context.shape[1]))


def test_schedule_needs_the_official_grid():
    ours = make_schedule("wan", STEPS, SHIFT)
    stock = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT)
    stock.set_timesteps(STEPS)
    assert not torch.equal(stock.sigmas, ours.sigmas)  # the +0.001 offset of spec §5.4
    fed = OfficialGridUniPC(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT)
    fed.set_timesteps(STEPS)
    assert torch.equal(fed.sigmas, ours.sigmas)
    assert torch.equal(fed.timesteps.double(), ours.timesteps)


def test_unipc_two_expert_run_matches_diffusers_wan_pipeline(tmp_path):
    high = tiny_expert(tmp_path, "t2v_a14b", seed=1, **DIMS)
    low = tiny_expert(tmp_path, "t2v_a14b", seed=2, **DIMS)
    positive, negative = contexts(7, 5, width=TEXT_DIM)
    seed = 1234
    switch = boundary_switch_step(make_schedule("wan", STEPS, SHIFT).timesteps, BOUNDARY)
    assert 0 < switch < STEPS  # both experts take part

    ours = sample(
        high, low, torch.zeros(LATENT_SHAPE), positive, negative, seed=seed, steps=STEPS,
        cfg_high=CFG_HIGH, cfg_low=CFG_LOW, shift=SHIFT, solver="unipc", schedule="wan",
    )
    assert ours.switch_step == switch

    ref = diffusers_loop(
        diffusers_transformer(high.acquire()), diffusers_transformer(low.acquire()), BOUNDARY,
        OfficialGridUniPC(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT),
        comfy_noise(seed, LATENT_SHAPE), pad_to_512(positive), pad_to_512(negative),
    )
    got = normalize(ours.latent)
    rel = float((got - ref).norm() / ref.norm())
    print(f"relative L2 difference to diffusers: {rel:.2e}")
    assert rel < 1e-4, rel


def test_euler_two_expert_run_matches_a_hand_written_loop(tmp_path):
    high = tiny_expert(tmp_path, "t2v_a14b", seed=3, **DIMS)
    low = tiny_expert(tmp_path, "t2v_a14b", seed=4, **DIMS)
    positive, negative = contexts(6, 6, width=TEXT_DIM)
    sched = make_schedule("simple", 8, 8.0)
    ours = sample(high, low, torch.zeros(LATENT_SHAPE), positive, negative, seed=5, steps=8, shift=8.0,
                  schedule="simple", solver="euler", cfg_high=3.5, cfg_low=2.0, boundary=0.875)

    x = comfy_noise(5, LATENT_SHAPE)
    with torch.no_grad():
        for i in range(8):
            t = float(sched.timesteps[i])
            model, cfg = (high.acquire(), 3.5) if t >= 875 else (low.acquire(), 2.0)
            tt = torch.tensor([t])
            v_c, v_u = model(x, tt, positive), model(x, tt, negative)
            v = v_u + cfg * (v_c - v_u)
            x = x + (sched.sigmas[i + 1] - sched.sigmas[i]) * v
    assert ours.switch_step == int((sched.timesteps >= 875).sum())
    assert torch.allclose(ours.latent, denormalize(x), rtol=0, atol=1e-5)
