"""Step caching: model calls saved against distance to the uncached run (and a quality score, when given one).

What it measures, for each plan length and cache threshold: the same seeds and prompts
sampled once without the step cache and once with it (``engine.sampling.step_cache``),
on whatever high- and low-noise experts it is pointed at. Per row:

* ``calls``: DiT forward passes of the cached runs (a step at cfg != 1 is two passes),
  against those of the full runs, and the share saved;
* ``rel_l2``: ``|x_cached - x_full| / |x_full|`` of the final latents, the mean over the
  prompts and seeds (0 means the cache changed nothing);
* ``score`` (only with ``--score``): the mean of a scoring function over the decoded
  cached runs, next to the same for the full runs.

Without ``--high``/``--low`` it writes tiny random-weight experts
(``engine.testing.tiny``): a plumbing check only, whose numbers say nothing about
quality. Quality claims need trained experts (the toy model of issue 21) and name them.

Usage::

    python bench/cache_quality.py                                   # tiny random experts, tiny shapes
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
            sample_options: Optional[dict] = None, warmup: int = 2) -> list[Row]:
    """One Row per (steps, threshold); ``contexts`` is a list of ``(positive, negative)`` pairs."""
    import torch

    from wan22duo.engine.sampling.loop import sample
    from wan22duo.engine.sampling.step_cache import StepCache

    options = dict(sample_options or {})
    cfgs = {"high": options.get("cfg_high", 4.0), "low": options.get("cfg_low", 3.0)}
    rows = []
    for steps in steps_list:
        full = {}
        for p, (pos, neg) in enumerate(contexts):
            for seed in seeds:
                full[p, seed] = sample(high, low, torch.zeros(tuple(latent_shape)), pos, neg, seed=seed, steps=steps,
                                       **options)
        calls_full = sum(passes(r, cfgs) for r in full.values())
        score_full = _mean([score(r.latent, p) for (p, _), r in full.items()]) if score else None
        for threshold in thresholds:
            start = time.perf_counter()
            calls, reused, dists, scores = 0, 0, [], []
            for p, (pos, neg) in enumerate(contexts):
                for seed in seeds:
                    got = sample(high, low, torch.zeros(tuple(latent_shape)), pos, neg, seed=seed, steps=steps,
                                 step_cache=StepCache(threshold, warmup), **options)
                    calls += passes(got, cfgs)
                    reused += len(got.cache["reused"])
                    dists.append(rel_l2(got.latent, full[p, seed].latent))
                    if score:
                        scores.append(score(got.latent, p))
            rows.append(Row(steps, threshold, calls, calls_full, reused, _mean(dists), max(dists),
                            _mean(scores) if score else None, score_full, time.perf_counter() - start))
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def table(rows: Sequence[Row], title: str) -> str:
    """Markdown table of the rows."""
    lines = [f"**{title}**", "",
             "| steps | threshold | DiT passes (full) | saved | reused steps | rel. L2 to full (mean / max) | score (full) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        score = "n/a" if r.score is None else f"{r.score:.3f} ({r.score_full:.3f})"
        lines.append(f"| {r.steps} | {r.threshold:g} | {r.calls} ({r.calls_full}) | {100 * r.saved:.0f} % | "
                     f"{r.reused_steps} | {r.rel_l2:.4f} / {r.rel_l2_max:.4f} | {score} |")
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
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    from packpath import load_pack

    load_pack()
    with tempfile.TemporaryDirectory() as tmp:
        if args.high and args.low:
            high_path, low_path, title = Path(args.high), Path(args.low), f"{Path(args.high).name} + {Path(args.low).name}"
        else:
            high_path, low_path = tiny_experts(Path(tmp), args.variant)
            title = "tiny random-weight experts (plumbing check; says nothing about quality)"
        high, low = handles(high_path, low_path)
        if args.contexts:
            positives, negatives, _ = _import(args.contexts)()
            contexts = list(zip(positives, negatives))
        else:
            contexts = random_contexts(args.prompts)
        score = _import(args.score) if args.score else None
        shape = [int(v) for v in args.shape.split(",")]
        options = dict(cfg_high=args.cfg_high, cfg_low=args.cfg_low, shift=args.shift, solver=args.solver)
        rows = measure(high, low, contexts, shape, args.steps, args.thresholds, args.seeds, score, options,
                       args.warmup)
    print(table(rows, title))
    if args.out:
        Path(args.out).write_text(json.dumps([{**asdict(r), "saved": r.saved} for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
