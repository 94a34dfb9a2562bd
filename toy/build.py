"""Train the whole toy (VAE, then the T2V experts) and write its files into ``toy/weights``.

    python scripts/train_toy.py [--stage all|vae|t2v] [--threads 1]

Stages: ``vae`` trains the Wan 2.1-layout VAE on the synthetic clips and writes it; ``t2v`` encodes the
training clips with that VAE, trains the high-noise and the low-noise expert, each on its side of the
T2V boundary, and writes them. Everything is seeded; the loss curves go to ``weights/train_log.json`` and
the checksums to ``weights/SHA256SUMS``. Files are stored in fp16 under the real checkpoint key names.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..engine.model.latents import normalize
from ..engine.weights.vae_checkpoint import load_vae
from . import data, dit, text, vae as toy_vae

WEIGHTS = Path(__file__).resolve().parent / "weights"
FILES = {
    "vae": "toy_wan_2.1_vae.safetensors",
    "t2v_high": "toy_t2v_high_noise.safetensors",
    "t2v_low": "toy_t2v_low_noise.safetensors",
}
VAE_STEPS, EXPERT_STEPS = 1200, 1000
TRAIN_SEEDS = range(0, 96 * 3)  # every caption at three start positions


def path(name: str) -> Path:
    return WEIGHTS / FILES[name]


def save(module: torch.nn.Module, name: str, note: str) -> Path:
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    out = path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"wan22duo_toy": note})
    return out


def update_log(key: str, entry: dict) -> None:
    log_path = WEIGHTS / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    log[key] = entry
    log_path.write_text(json.dumps(log, indent=1) + "\n")


def write_sums() -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(WEIGHTS.glob("*.safetensors"))]
    (WEIGHTS / "SHA256SUMS").write_text("".join(lines))


def train_vae_stage(log=print) -> None:
    start = time.perf_counter()
    vae, curve = toy_vae.train(steps=VAE_STEPS, log=log)
    vae.eval()
    toy_vae.match_wan21_stats(vae, list(TRAIN_SEEDS[::4]))
    save(vae, "vae", f"toy Wan 2.1 VAE, base_dim {toy_vae.BASE_DIM}, trained {VAE_STEPS} steps on toy clips")
    update_log("vae", {"steps": VAE_STEPS, "seconds": round(time.perf_counter() - start), "mse_curve": curve})
    write_sums()


@torch.no_grad()
def encode_clips(seeds, log=print) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised latents ``[N, 16, 5, 8, 8]`` and the caption rows of clips ``seeds``."""
    vae = load_vae(path("vae"), torch.float32)
    latents, rows = [], []
    for i, s in enumerate(seeds):
        clip = data.draw_clip(s)
        latents.append(normalize(vae.encode(data.to_model_range(data.render(clip)))))
        rows.append(text.encode_rows(clip.caption))
        if i % 50 == 0:
            log(f"encoded {i}/{len(seeds)} clips")
    return torch.cat(latents), rows


CACHE = Path(__file__).resolve().parent / "cache" / "t2v_latents.pt"


def latents_stage(log=print) -> None:
    """Encode the training clips once (both experts train on them; ``cache/`` is not committed)."""
    latents, rows = encode_clips(list(TRAIN_SEEDS), log)
    CACHE.parent.mkdir(exist_ok=True)
    torch.save({"latents": latents, "rows": rows}, CACHE)


def train_t2v_stage(which: tuple[str, ...] = ("t2v_high", "t2v_low"), log=print) -> None:
    if not CACHE.exists():
        latents_stage(log)
    cached = torch.load(CACHE)
    latents, rows = cached["latents"], cached["rows"]
    for name, high in (("t2v_high", True), ("t2v_low", False)):
        if name not in which:
            continue
        start = time.perf_counter()
        model, curve = dit.train_expert(latents, rows, high=high, steps=EXPERT_STEPS, seed=1 if high else 2, log=log)
        side = "t >= 875" if high else "t < 875"
        save(model, name, f"toy T2V-A14B-layout {'high' if high else 'low'}-noise expert, dim {dit.DIM}, "
                          f"{dit.LAYERS} layers, trained {EXPERT_STEPS} steps on {side}")
        update_log(name, {"steps": EXPERT_STEPS, "seconds": round(time.perf_counter() - start),
                          "clips": len(latents), "loss_curve": curve})
        write_sums()
