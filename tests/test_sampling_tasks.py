"""I2V-A14B and TI2V-5B through the sampler (spec §3.2, §3.3), with ComfyUI's conventions."""
from types import SimpleNamespace

import torch

from wan22duo.engine.model.conditioning import I2VConditioning
from wan22duo.engine.model.latents import normalize
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.sampling.loop import sample

from test_sampling_fixtures import comfy_noise, contexts, tiny_expert

I2V = SimpleNamespace(variant="i2v_a14b", in_dim=36, out_dim=16, text_dim=4096)
TI2V = SimpleNamespace(variant="ti2v_5b", in_dim=48, out_dim=48, text_dim=4096)


def recording(config, calls, name="m"):
    def model(x, t, context):
        calls.append(SimpleNamespace(x=x.clone(), t=t.clone(), context=context))
        return torch.sin(x[:, : config.out_dim]) + 0.1 * context.mean()

    return ModelHandle(lambda d: model, info={"config": config, "name": name})


def comfy_i2v_inputs(shape=(1, 16, 3, 4, 6)):
    g = torch.Generator().manual_seed(4)
    raw_image_latent = torch.randn(shape, generator=g) * 2  # as a VAE encodes [image, gray...]
    concat_mask = torch.ones(1, 1, shape[2], shape[3], shape[4])
    concat_mask[:, :, :1] = 0.0  # ComfyUI: 0 where the start image is known
    return raw_image_latent, concat_mask


def test_i2v_model_input_is_noise_mask_and_image_latent_in_that_order():
    calls = []
    raw, concat_mask = comfy_i2v_inputs()
    latents = []
    pos, neg = contexts(5, 4)
    sample(recording(I2V, calls, "high"), recording(I2V, calls, "low"), torch.zeros(1, 16, 3, 4, 6), pos, neg,
           seed=2, steps=6, shift=5.0, i2v=I2VConditioning.from_comfy(raw, concat_mask),
           callback=lambda s: latents.append(s.latent))
    assert len(calls) == 12  # cond and uncond each step
    expected_mask = torch.zeros(1, 4, 3, 4, 6)
    expected_mask[:, :, 0] = 1.0  # latent frame 0 known, all four channels (official rule)
    for call in calls:
        assert call.x.shape == (1, 36, 3, 4, 6)
        assert torch.equal(call.x[:, 16:20], expected_mask)
        assert torch.allclose(call.x[:, 20:], normalize(raw), atol=1e-6)
    assert torch.equal(calls[0].x[:, :16], comfy_noise(2, (1, 16, 3, 4, 6)))  # plain noise start
    for step in range(1, 6):
        assert torch.equal(calls[2 * step].x[:, :16], latents[step - 1])  # noise channels follow the latent


def ti2v_image_latent(shape=(1, 48, 3, 4, 6)):
    """ComfyUI Wan22ImageToVideoLatent: frame 0 holds the raw image latent, noise_mask 0 there."""
    latent = torch.zeros(shape)
    latent[:, :, :1] = torch.randn(shape[0], shape[1], 1, *shape[3:], generator=torch.Generator().manual_seed(8))
    noise_mask = torch.ones(1, 1, *shape[2:])
    noise_mask[:, :, :1] = 0.0
    return latent, noise_mask


def test_ti2v_frame0_is_held_with_timestep_zero_tokens():
    calls, latents = [], []
    latent, noise_mask = ti2v_image_latent()
    pos, neg = contexts(5, 4)
    result = sample(recording(TI2V, calls), None, latent, pos, neg, seed=5, steps=5, shift=5.0, cfg_high=5.0,
                    noise_mask=noise_mask, callback=lambda s: latents.append(s))
    kept = normalize(latent[:, :, :1])
    tokens_per_frame = (4 // 2) * (6 // 2)
    for call, step_t in zip(calls[::2], result.schedule.timesteps):
        assert call.t.shape == (1, 3 * tokens_per_frame)  # per-token timesteps
        assert torch.all(call.t[:, :tokens_per_frame] == 0)  # frame-0 tokens at t = 0
        assert torch.all(call.t[:, tokens_per_frame:] == step_t)
        assert torch.equal(call.x[:, :, :1], kept)  # the model always sees the image in frame 0
    noise = comfy_noise(5, latent.shape)
    assert torch.equal(calls[0].x[:, :, 1:], noise[:, :, 1:])  # other frames start from the seed's noise
    assert all(torch.equal(s.latent[:, :, :1], kept) for s in latents)  # re-imposed after each step
    assert torch.equal(result.latent[:, :, :1], latent[:, :, :1])  # returned raw, bit-exact
    assert not torch.allclose(result.latent[:, :, 1:], latent[:, :, 1:])


def test_ti2v_text_to_video_uses_one_timestep_per_sample():
    calls = []
    pos, neg = contexts(5, 4)
    sample(recording(TI2V, calls), None, torch.zeros(2, 48, 2, 4, 4), pos, neg, seed=1, steps=3, shift=5.0)
    assert all(c.t.shape == (2,) for c in calls)
    assert all(c.context.shape[0] == 2 for c in calls)  # a batch-1 context is broadcast to the latent batch


def test_real_tiny_models_run_every_task(tmp_path):
    # The real WanModel takes what the loop feeds it: 36-channel I2V input, per-token TI2V timesteps.
    width = 256
    dims = {"dim": 128, "ffn_dim": 256, "text_dim": width}
    pos, neg = contexts(5, 3, width=width)
    raw, concat_mask = comfy_i2v_inputs((1, 16, 2, 4, 4))
    i2v = sample(tiny_expert(tmp_path, "i2v_a14b", 1, **dims), tiny_expert(tmp_path, "i2v_a14b", 2, **dims),
                 torch.zeros(1, 16, 2, 4, 4), pos, neg, seed=0, steps=3, shift=5.0, switch_step=2,
                 i2v=I2VConditioning.from_comfy(raw, concat_mask))
    assert i2v.latent.shape == (1, 16, 2, 4, 4) and torch.isfinite(i2v.latent).all()
    latent, noise_mask = ti2v_image_latent((1, 48, 2, 4, 4))
    ti2v = sample(tiny_expert(tmp_path, "ti2v_5b", 3, **dims), None, latent, pos, neg, seed=0, steps=3,
                  shift=5.0, noise_mask=noise_mask)
    assert torch.equal(ti2v.latent[:, :, :1], latent[:, :, :1]) and torch.isfinite(ti2v.latent).all()
