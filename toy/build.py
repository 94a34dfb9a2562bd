"""Train the whole toy (VAE, then the T2V and I2V experts) and write its files into ``toy/weights``.

    python scripts/train_toy.py [--stage all|vae|latents|t2v_high|t2v_low|i2v_high|i2v_low] [--threads 1]

Stages: ``vae`` trains the Wan 2.1-layout VAE on the synthetic clips and writes it; ``latents`` encodes
the training clips with it (into ``cache/``, not committed); each expert stage trains one expert on
its side of the boundary (T2V 0.875, I2V 0.900) and writes it; the I2V stages first encode the
clips' first frames as the official I2V conditioning. Everything is seeded; the loss curves go to ``weights/train_log.json`` and
the checksums to ``weights/SHA256SUMS``. Files are stored in fp16 under the real checkpoint key names.

The committed files (2026-12-05) were made by this code on the shared 2-core CPU: the VAE's image stage
(2000 steps, 6 min) and video stage (1200 steps, 14 min; held-out whole clips 33.5 dB mean, 30.9 dB worst),
the latents (3 min), then the experts two at a time (I2V 3000 steps, about 15 min a pair alone; T2V 6000
steps, retrained later that day, about 30 min a pair: at 2000 steps the T2V toy's shape barely moved).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..engine.model.conditioning import I2VConditioning, official_i2v_mask
from ..engine.model.latents import normalize
from ..engine.weights.vae_checkpoint import load_vae
from . import data, dit, text, vae as toy_vae

WEIGHTS = Path(__file__).resolve().parent / "weights"
FILES = {
    "vae": "toy_wan_2.1_vae.safetensors",
    "t2v_high": "toy_t2v_high_noise.safetensors",
    "t2v_low": "toy_t2v_low_noise.safetensors",
    "i2v_high": "toy_i2v_high_noise.safetensors",
    "i2v_low": "toy_i2v_low_noise.safetensors",
}
# The VAE: an image stage (single frames: a per-frame autoencoder), then a video stage (whole clips:
# the causal taps and time convs learn the motion). See toy.vae.
VAE_IMAGE = dict(steps=2000, frames=1, batch_size=8, lr=1e-3, seed=0)
VAE_VIDEO = dict(steps=1200, frames=17, batch_size=2, lr=3e-4, seed=1, whole_every=4)
EXPERT_STEPS = {"t2v": 6000, "i2v": 3000}  # T2V learns its motion late (at 2000 steps its shape barely moved)
TRAIN_SEEDS = range(0, 96 * 8)  # every caption at eight start positions


def path(name: str, folder: Path | None = None) -> Path:
    return (folder or WEIGHTS) / FILES[name]


def save(module: torch.nn.Module, name: str, note: str, folder: Path | None = None) -> Path:
    """Write ``module``'s state dict in fp16 under its checkpoint key names as the toy file ``name``."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    out = path(name, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"wan22duo_toy": note})
    return out


def update_log(key: str, entry: dict) -> None:
    """Set ``key`` in ``weights/train_log.json`` (under a lock: expert stages may run in parallel)."""
    import fcntl

    log_path = WEIGHTS / "train_log.json"
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    with open(WEIGHTS / ".train_log.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log = json.loads(log_path.read_text()) if log_path.exists() else {}
        log[key] = entry
        log_path.write_text(json.dumps(log, indent=1) + "\n")
        write_sums()


def write_sums() -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(WEIGHTS.glob("*.safetensors"))]
    (WEIGHTS / "SHA256SUMS").write_text("".join(lines))


@torch.no_grad()
def vae_psnr(seeds) -> list[float]:
    """Reconstruction PSNR (dB, frames in [-1, 1]) of the saved VAE on whole clips ``seeds``."""
    vae = load_vae(path("vae"), torch.float32)
    out = []
    for s in seeds:
        video = data.to_model_range(data.render(data.draw_clip(s)))
        mse = float((vae.decode(vae.encode(video)) - video).square().mean())
        out.append(toy_vae.psnr_from_mse(mse))
    return out


HELD_OUT_VAE = [data.HELD_OUT_SEED + 7 * i for i in range(12)]


def train_vae_stage(log=print, checkpoint=None, image_state=None) -> None:
    """Train the VAE (both stages) and write it; ``image_state``: a saved image-stage state dict to start from."""
    start = time.perf_counter()
    eval_seeds = HELD_OUT_VAE[:4]
    if image_state is None:
        vae, image_curve = toy_vae.train(**VAE_IMAGE, log=log, eval_seeds=eval_seeds, checkpoint=checkpoint)
    else:
        vae, image_curve = toy_vae.new_vae(VAE_IMAGE["seed"]), "resumed from " + str(image_state)
        vae.load_state_dict(torch.load(image_state))
    vae, video_curve = toy_vae.train(**VAE_VIDEO, vae=vae, log=log, eval_seeds=eval_seeds, checkpoint=checkpoint)
    toy_vae.match_wan21_stats(vae, list(TRAIN_SEEDS[::8]))
    save(vae, "vae", f"toy Wan 2.1 VAE, base_dim {toy_vae.BASE_DIM}, {VAE_IMAGE['steps']} image steps + "
                     f"{VAE_VIDEO['steps']} video steps on toy clips")
    psnr = vae_psnr(HELD_OUT_VAE)
    log(f"held-out PSNR: mean {sum(psnr) / len(psnr):.2f} dB, min {min(psnr):.2f} dB")
    update_log("vae", {"image_stage": VAE_IMAGE, "video_stage": VAE_VIDEO, "seconds": round(time.perf_counter() - start),
                       "image_mse_curve": image_curve, "video_mse_curve": video_curve,
                       "held_out_psnr_db": [round(p, 2) for p in psnr]})


@torch.no_grad()
def encode_clips(seeds, log=print, batch: int = 16, folder: Path | None = None,
                 spread: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised latents ``[N, 16, 5, 8, 8]`` and the caption rows of clips ``seeds`` (``data.draw_clip``)."""
    vae = load_vae(path("vae", folder), torch.float32)
    clips = [data.draw_clip(s, spread=spread) for s in seeds]
    latents = []
    for i in range(0, len(clips), batch):
        video = torch.cat([data.to_model_range(data.render(c)) for c in clips[i:i + batch]])
        latents.append(normalize(vae.encode(video)))
        log(f"encoded {i + video.shape[0]}/{len(clips)} clips")
    return torch.cat(latents), [text.encode_rows(c.caption) for c in clips]


@torch.no_grad()
def encode_i2v_conditions(seeds, log=print, batch: int = 16, folder: Path | None = None) -> torch.Tensor:
    """The I2V-A14B ``y = [mask(4), normalised image latent(16)]`` of each clip, ``[N, 20, 5, 8, 8]``.

    As the official I2V pipeline (and ``Wan22DuoI2VConditioning``) builds it: the VAE encodes the
    clip's first frame followed by zero (mid-gray) frames, and the mask marks video frame 0 as known.
    """
    vae = load_vae(path("vae", folder), torch.float32)
    clips = [data.draw_clip(s) for s in seeds]
    out = []
    for i in range(0, len(clips), batch):
        video = torch.cat([data.to_model_range(data.render(c)) for c in clips[i:i + batch]])
        video[:, :, 1:] = 0.0
        raw = vae.encode(video)
        mask = official_i2v_mask([f == 0 for f in range(data.FRAMES)], tuple(raw.shape[-2:]))
        out.append(I2VConditioning(raw, mask).y(tuple(raw.shape)))
        log(f"encoded {i + video.shape[0]}/{len(clips)} start frames")
    return torch.cat(out)


CACHE = Path(__file__).resolve().parent / "cache" / "t2v_latents.pt"
I2V_LATENTS = CACHE.with_name("i2v_latents.pt")
I2V_CACHE = CACHE.with_name("i2v_conditions.pt")


def latents_stage(log=print) -> None:
    """Encode the training clips and their I2V conditions once (``cache/``, not committed)."""
    CACHE.parent.mkdir(exist_ok=True)
    latents, rows = encode_clips(list(TRAIN_SEEDS), log, spread=data.T2V_SPREAD)
    torch.save({"latents": latents, "rows": rows}, CACHE)
    latents, rows = encode_clips(list(TRAIN_SEEDS), log)
    torch.save({"latents": latents, "rows": rows}, I2V_LATENTS)
    torch.save(encode_i2v_conditions(list(TRAIN_SEEDS), log), I2V_CACHE)


def train_experts_stage(which: tuple[str, ...] = ("t2v_high", "t2v_low"), log=print) -> None:
    """Train the named experts (``t2v_high``, ``t2v_low``, ``i2v_high``, ``i2v_low``) and write them."""
    if not (CACHE.exists() and I2V_LATENTS.exists() and I2V_CACHE.exists()):
        latents_stage(log)
    for name in which:
        high, i2v = name.endswith("high"), name.startswith("i2v")
        cached = torch.load(I2V_LATENTS if i2v else CACHE)
        latents, rows = cached["latents"], cached["rows"]
        variant = "i2v_a14b" if i2v else "t2v_a14b"
        cond = torch.load(I2V_CACHE) if i2v else None
        start = time.perf_counter()
        steps = EXPERT_STEPS[name[:3]]
        model, curve = dit.train_expert(latents, rows, high=high, variant=variant, cond=cond, steps=steps,
                                        seed=(3 if i2v else 1) + (0 if high else 1), log=log)
        side = ("t >= " if high else "t < ") + ("900" if i2v else "875")
        save(model, name, f"toy {'I2V' if i2v else 'T2V'}-A14B-layout {'high' if high else 'low'}-noise expert, "
                          f"dim {dit.DIM}, {dit.LAYERS} layers, trained {steps} steps on {side}")
        update_log(name, {"steps": steps, "seconds": round(time.perf_counter() - start),
                          "clips": len(latents), "loss_curve": curve})
