"""Step caching: model calls saved against distance to the uncached run (and a quality score, when given one).

What it measures, for each plan length and cache threshold: the same seeds and prompts
sampled once without the step cache and once with it (``engine.sampling.step_cache``),
on whatever high- and low-noise experts it is pointed at. Per row:

* ``calls``: DiT forward passes of the cached runs (a step at cfg != 1 is two passes),
  against those of the full runs, and the share saved;
* ``rel_l2``: ``|x_cached - x_full| / |x_full|`` of the final latents, the mean over the
  prompts and seeds (0 means the cache changed nothing);
* ``score`` (only with ``--score`` or ``--toy``): the mean of a scoring function over the
  decoded cached runs, next to the same for the full runs;
* ``pixel_rms`` (only with ``--toy``): the decoded cached video's pixel RMS (0-255) from the
  decoded full run, the mean over the runs.

``--toy t2v|i2v`` runs on the trained toy Wan 2.2 MoE of issue 21 (``toy/``, its committed
weights): held-out captions (and, for I2V, their first frames), its text encoding, its VAE
and its caption score (``toy.score.score_video``, the fraction of its six checks that hold).

Without ``--high``/``--low`` it writes tiny random-weight experts
(``engine.testing.tiny``): a plumbing check only, whose numbers say nothing about
quality. Quality claims need trained experts (the toy model of issue 21) and name them.

Usage::

    python bench/cache_quality.py                                   # tiny random experts, tiny shapes
    python bench/cache_quality.py --toy t2v --steps 20 40 --clips 8   # the trained toy (needs toy/)
    python bench/cache_quality.py --high H.safetensors --low L.safetensors --variant t2v_a14b \
        --steps 20 40 --thresholds 0 0.02 0.05 0.1 --shape 1,16,5,8,12 \
        --contexts toy.text:encode_captions --score toy.score:score_latents --out bench/results_cache.json

``--contexts MODULE:FUNCTION`` returns ``(positive, negative, names)``: lists of ``[1, L, 4096]``
contexts and a name per prompt; ``--score MODULE:FUNCTION`` takes ``(latent, index)`` (the raw
final latent of prompt ``index``) and returns a float, higher is better.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

DEFAULT_THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2)


@dataclass
class Row:
    steps: int
    threshold: float
    calls: int  # DiT passes of the cached runs, all prompts and seeds
    calls_full: int
    reused_steps: int
    rel_l2: float  # mean over runs
    rel_l2_max: float
    score: Optional[float]
    score_full: Optional[float]
    seconds: float
    pixel_rms: Optional[float] = None

    @property
    def saved(self) -> float:
        return 1.0 - self.calls / self.calls_full if self.calls_full else 0.0


def passes(result, cfgs: dict) -> int:
    """DiT forward passes a run made: one per step at cfg 1, two otherwise, none on a reused step."""
    reused = set(result.cache["reused"]) if result.cache else set()
    total = 0
    for stage in result.stages:
        cfg = cfgs[stage["role"]]
        ran = sum(1 for i in range(stage["start"], stage["stop"]) if i not in reused)
        total += ran * (1 if cfg == 1.0 else 2)
    return total


def rel_l2(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def measure(high, low, contexts: Sequence, latent_shape: Sequence[int], steps_list: Sequence[int],
            thresholds: Sequence[float], seeds: Sequence[int] = (0,), score: Optional[Callable] = None,
            sample_options: Optional[dict] = None, warmup: int = 2, judge=None) -> list[Row]:
    """One Row per (steps, threshold).

    ``contexts``: ``(positive, negative)`` or ``(positive, negative, options)`` per prompt, the
    options (e.g. ``i2v=``) added to that prompt's runs. ``score(latent, index)`` scores a raw final
    latent; ``judge`` (``.score(latent, index)``, ``.distance(latent, reference)``) replaces it and
    adds the decoded distance.
    """
    import torch

    from wan22duo.engine.sampling.loop import sample
    from wan22duo.engine.sampling.step_cache import StepCache

    if judge is not None:
        score = judge.score
    options = dict(sample_options or {})
    cfgs = {"high": options.get("cfg_high", 4.0), "low": options.get("cfg_low", 3.0)}
    prompts = [(c[0], c[1], dict(c[2]) if len(c) > 2 else {}) for c in contexts]

    def run(p: int, seed: int, steps: int, cache=None):
        pos, neg, extra = prompts[p]
        return sample(high, low, torch.zeros(tuple(latent_shape)), pos, neg, seed=seed, steps=steps,
                      step_cache=cache, **options, **extra)

    rows = []
    for steps in steps_list:
        full = {(p, seed): run(p, seed, steps) for p in range(len(prompts)) for seed in seeds}
        calls_full = sum(passes(r, cfgs) for r in full.values())
        score_full = _mean([score(r.latent, p) for (p, _), r in full.items()]) if score else None
        for threshold in thresholds:
            start = time.perf_counter()
            calls, reused, dists, scores, pixels = 0, 0, [], [], []
            for (p, seed), reference in full.items():
                got = run(p, seed, steps, StepCache(threshold, warmup))
                calls += passes(got, cfgs)
                reused += len(got.cache["reused"])
                dists.append(rel_l2(got.latent, reference.latent))
                if score:
                    scores.append(score(got.latent, p))
                if judge is not None:
                    pixels.append(judge.distance(got.latent, reference.latent))
            rows.append(Row(steps, threshold, calls, calls_full, reused, _mean(dists), max(dists),
                            _mean(scores) if score else None, score_full, time.perf_counter() - start,
                            _mean(pixels) if judge is not None else None))
    return rows


class ToyJudge:
    """Decode with the toy's VAE and score against the caption (``toy.score``); distance in decoded pixels."""

    def __init__(self, vae, captions: Sequence[str]):
        from wan22duo.nodes.vae import Wan22DuoVAEDecode
        from wan22duo.toy import score

        self._decode = lambda latent: Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 0, 64)[0]
        self._score = score
        self.captions = list(captions)

    def score(self, latent, index: int) -> float:
        return self._score.score_video(self._decode(latent), self.captions[index]).score

    def distance(self, latent, reference) -> float:
        return self._score.distance(self._decode(latent), self._decode(reference))["pixel_rms"]


def toy_setup(task: str, clips: int):
    """(high, low, contexts, latent shape, judge, cfgs, shift) for the toy ``task`` on ``clips`` held-out clips."""
    from wan22duo.nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoI2VConditioning, i2v_conditioning
    from wan22duo.toy import data, run, text

    models = run.load(task=task)
    seeds = [data.HELD_OUT_SEED + 5 * i for i in range(clips)]
    captions = [data.draw_clip(s).caption for s in seeds]
    contexts = []
    for seed, caption in zip(seeds, captions):
        positive, negative = text.conditioning(caption), text.conditioning("")
        if task == "i2v":
            positive, negative, latent = Wan22DuoI2VConditioning().encode(
                positive, negative, models["vae"], run.first_frame(seed), data.WIDTH, data.HEIGHT, data.FRAMES)
            extra = {"i2v": i2v_conditioning(positive[0][1], negative[0][1])}
        else:
            (latent,) = Wan22DuoEmptyLatent().generate(data.WIDTH, data.HEIGHT, data.FRAMES, 1)
            extra = {}
        contexts.append((positive[0][0], negative[0][0], extra))
    shape = tuple(latent["samples"].shape)
    cfgs, shift = ((3.5, 3.5), 5.0) if task == "i2v" else ((4.0, 3.0), 12.0)
    return models["high"], models["low"], contexts, shape, ToyJudge(models["vae"], captions), cfgs, shift


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def table(rows: Sequence[Row], title: str) -> str:
    """Markdown table of the rows."""
    lines = [f"**{title}**", "",
             "| steps | threshold | DiT passes (full) | saved | reused steps | latent rel. L2 to full (mean / max) "
             "| pixel RMS to full | score (full) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        score = "n/a" if r.score is None else f"{r.score:.3f} ({r.score_full:.3f})"
        pixels = "n/a" if r.pixel_rms is None else f"{r.pixel_rms:.2f}"
        lines.append(f"| {r.steps} | {r.threshold:g} | {r.calls} ({r.calls_full}) | {100 * r.saved:.0f} % | "
                     f"{r.reused_steps} | {r.rel_l2:.4f} / {r.rel_l2_max:.4f} | {pixels} | {score} |")
    return "\n".join(lines)


def _import(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"{spec!r}: expected MODULE:FUNCTION")
    return getattr(importlib.import_module(module), name)


TINY = dict(dim=128, ffn_dim=256, num_layers=1)


def tiny_experts(folder: Path, variant: str = "t2v_a14b"):
    """Random-weight experts from engine.testing.tiny (plumbing only: their numbers mean nothing)."""
    from wan22duo.engine.testing.tiny import write_tiny_dit

    return (write_tiny_dit(folder / "high_noise.safetensors", variant, seed=1, **TINY),
            write_tiny_dit(folder / "low_noise.safetensors", variant, seed=2, **TINY))


def handles(high_path, low_path, role_names=("high_noise", "low_noise")):
    import torch

    from wan22duo.engine.memory.residency import ModelHandle
    from wan22duo.engine.weights.checkpoint import detect_dit, load_dit

    out = []
    for path, role in zip((high_path, low_path), role_names):
        config = detect_dit(path)
        out.append(ModelHandle(lambda device, p=str(path): load_dit(p, compute_dtype=torch.float32, device=device),
                               "cpu", info={"config": config, "role": role, "name": Path(path).name,
                                            "path": str(path)}))
    return out


def random_contexts(count: int, seed: int = 0, length: int = 16):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, length, 4096, generator=g), torch.randn(1, length, 4096, generator=g))
            for _ in range(count)]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--high"), parser.add_argument("--low")
    parser.add_argument("--variant", default="t2v_a14b")
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shape", default="1,16,2,4,4", help="latent B,C,T,H,W")
    parser.add_argument("--prompts", type=int, default=2, help="random contexts when --contexts is not given")
    parser.add_argument("--contexts"), parser.add_argument("--score")
    parser.add_argument("--cfg-high", type=float, default=4.0), parser.add_argument("--cfg-low", type=float, default=3.0)
    parser.add_argument("--shift", type=float, default=12.0)
    parser.add_argument("--solver", default="unipc")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--toy", choices=["t2v", "i2v"], help="the trained toy MoE of issue 21 (toy/)")
    parser.add_argument("--clips", type=int, default=8, help="held-out toy clips (with --toy)")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    from packpath import load_pack

    load_pack()
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    judge, score = None, _import(args.score) if args.score else None
    options = dict(cfg_high=args.cfg_high, cfg_low=args.cfg_low, shift=args.shift, solver=args.solver)
    with tempfile.TemporaryDirectory() as tmp:
        if args.toy:
            high, low, contexts, shape, judge, (cfg_high, cfg_low), shift = toy_setup(args.toy, args.clips)
            options.update(cfg_high=cfg_high, cfg_low=cfg_low, shift=shift)
            title = (f"toy {args.toy.upper()} MoE of issue 21 (dim 128, trained on synthetic clips; not Wan 2.2), "
                     f"{args.clips} held-out clips, {args.solver}, cfg {cfg_high:g}/{cfg_low:g}, shift {shift:g}")
        else:
            if args.high and args.low:
                high_path, low_path = Path(args.high), Path(args.low)
                title = f"{high_path.name} + {low_path.name}"
            else:
                high_path, low_path = tiny_experts(Path(tmp), args.variant)
                title = "tiny random-weight experts (plumbing check; says nothing about quality)"
            high, low = handles(high_path, low_path)
            if args.contexts:
                positives, negatives, _ = _import(args.contexts)()
                contexts = list(zip(positives, negatives))
            else:
                contexts = random_contexts(args.prompts)
            shape = [int(v) for v in args.shape.split(",")]
        rows = measure(high, low, contexts, shape, args.steps, args.thresholds, args.seeds, score, options,
                       args.warmup, judge)
    print(table(rows, title))
    if args.out:
        Path(args.out).write_text(json.dumps([{**asdict(r), "saved": r.saved} for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
