"""Shared helpers for the sampling tests (no tests here): tiny experts, contexts, ComfyUI-style noise."""
import torch

from wan22duo.engine.weights.checkpoint import detect_dit, load_dit
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.testing.tiny import write_tiny_dit


def tiny_expert(tmp_path, variant: str, seed: int, role: str = "", **dims) -> ModelHandle:
    """A lazy handle on a tiny random ``WanModel`` written to disk, loaded with ``load_dit``."""
    path = write_tiny_dit(tmp_path / f"{variant}_{seed}.safetensors", variant=variant, seed=seed, **dims)

    def load(device):
        return load_dit(path, compute_dtype=torch.float32, device=device)

    return ModelHandle(load, "cpu", torch.float32, {"config": detect_dit(path), "role": role, "path": str(path)})


def contexts(len_pos: int, len_neg: int, seed: int = 11, batch: int = 1, width: int = 4096):
    """Positive/negative umT5-like states [B, L, width] of different lengths."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len_pos, width, generator=g), torch.randn(batch, len_neg, width, generator=g)


def comfy_noise(seed: int, shape) -> torch.Tensor:
    """Noise exactly as ComfyUI's ``comfy.sample.prepare_noise`` draws it (global CPU generator)."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        return torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
