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

``--toy t2v i2v`` runs on the trained toy Wan 2.2 MoE of issue 21 (``toy/``, its committed
weights, or ``--weights DIR``): held-out captions (and, for I2V, their first frames), its text
encoding, its VAE and its caption score (``toy.score.score_video``, the fraction of its six
checks that hold). It then suggests a threshold: the largest whose every configuration keeps
its mean score within ``--max-score-drop`` of the uncached run and its mean decoded pixel RMS
to it within ``--max-pixel-rms``. ``--write`` puts the tables into a results file.

Without ``--high``/``--low`` it writes tiny random-weight experts
(``engine.testing.tiny``): a plumbing check only, whose numbers say nothing about
quality. Quality claims need trained experts (the toy model of issue 21) and name them.

Usage::

    python bench/cache_quality.py                                   # tiny random experts, tiny shapes
    python bench/cache_quality.py --toy t2v i2v --steps 20 40 --clips 8 \\
        --write bench/results_cache.md --out bench/results_cache.json     # the trained toy (toy/weights)
    python bench/cache_quality.py --high H.safetensors --low L.safetensors --variant t2v_a14b \\
        --steps 20 40 --thresholds 0 0.02 0.05 0.1 --shape 1,16,5,8,12 \\
        --contexts MODULE:FUNCTION --score MODULE:FUNCTION --out rows.json

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
    task: str = ""

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
    latent; ``judge`` (a :class:`ToyJudge`) replaces it: it decodes each run once, scores the video
    and gives its pixel distance to the decoded uncached run.
    """
    import torch

    from wan22duo.engine.sampling.loop import sample
    from wan22duo.engine.sampling.step_cache import StepCache

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
        videos = {key: judge.video(r.latent) for key, r in full.items()} if judge is not None else {}
        if judge is not None:
            score_full = _mean(judge.score(videos[key], key[0]) for key in full)
        else:
            score_full = _mean([score(r.latent, p) for (p, _), r in full.items()]) if score else None
        for threshold in thresholds:
            start = time.perf_counter()
            calls, reused, dists, scores, pixels = 0, 0, [], [], []
            for (p, seed), reference in full.items():
                got = run(p, seed, steps, StepCache(threshold, warmup))
                calls += passes(got, cfgs)
                reused += len(got.cache["reused"])
                dists.append(rel_l2(got.latent, reference.latent))
                if judge is not None:
                    video = judge.video(got.latent)
                    scores.append(judge.score(video, p))
                    pixels.append(judge.pixel_rms(video, videos[p, seed]))
                elif score:
                    scores.append(score(got.latent, p))
            rows.append(Row(steps, threshold, calls, calls_full, reused, _mean(dists), max(dists),
                            _mean(scores) if scores else None, score_full, time.perf_counter() - start,
                            _mean(pixels) if judge is not None else None))
    return rows


class ToyJudge:
    """Decode with the toy's VAE (the pack's decode node), score against the caption (``toy.score``), pixel RMS."""

    def __init__(self, vae, captions: Sequence[str]):
        from wan22duo.nodes.vae import Wan22DuoVAEDecode
        from wan22duo.toy import score

        self._decode = lambda latent: Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 0, 64)[0]
        self._score = score
        self.captions = list(captions)

    def video(self, latent):
        """IMAGE ``[F, H, W, 3]`` of a raw final latent."""
        return self._decode(latent)

    def score(self, video, index: int) -> float:
        return self._score.score_video(video, self.captions[index]).score

    def pixel_rms(self, video, reference) -> float:
        return self._score.distance(video, reference)["pixel_rms"]


def toy_setup(task: str, clips: int, weights: Optional[Path] = None):
    """(high, low, contexts, latent shape, judge, cfgs, shift) for the toy ``task`` on ``clips`` held-out clips.

    ``weights``: the folder of the toy files (default ``toy/weights``).
    """
    from wan22duo.nodes.samplers import i2v_conditioning
    from wan22duo.toy import run

    models = run.load(weights, task=task)
    inputs = run.held_out_inputs(task, clips, models["vae"])
    captions = [caption for _, caption, _, _, _ in inputs]
    contexts = []
    for _, _, positive, negative, latent in inputs:
        extra = {"i2v": i2v_conditioning(positive[0][1], negative[0][1])} if task == "i2v" else {}
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


def toy_sections(tasks: Sequence[str], steps: Sequence[int], thresholds: Sequence[float], clips: int,
                 weights: Optional[Path] = None, solver: str = "unipc", warmup: int = 2,
                 log=print) -> list[tuple[str, list[Row]]]:
    """``(title, rows)`` per toy task: the whole quality-vs-calls table of issue 23."""
    sections = []
    for task in tasks:
        high, low, contexts, shape, judge, (cfg_high, cfg_low), shift = toy_setup(task, clips, weights)
        options = dict(cfg_high=cfg_high, cfg_low=cfg_low, shift=shift, solver=solver)
        kind = ("UNTRAINED toy files (plumbing check; says nothing about quality)" if toy_untrained(task, weights)
                else "trained on synthetic clips; not Wan 2.2")
        title = (f"toy {task.upper()} MoE of issue 21 ({kind}), {clips} held-out clips, {solver}, "
                 f"cfg {cfg_high:g}/{cfg_low:g}, shift {shift:g}")
        rows = measure(high, low, contexts, shape, steps, thresholds, score=None, sample_options=options,
                       warmup=warmup, judge=judge)
        for row in rows:
            row.task = task
        log(table(rows, title))
        sections.append((title, rows))
    return sections


def toy_untrained(task: str, weights: Optional[Path] = None) -> bool:
    """Whether the toy expert files of ``task`` say they are untrained (``toy.build.save``'s note)."""
    from safetensors import safe_open

    from wan22duo.toy import run

    for role in ("high", "low"):
        with safe_open(str(run.weight_path(f"{task}_{role}", weights)), "pt") as f:
            if "untrained" in (f.metadata() or {}).get("wan22duo_toy", ""):
                return True
    return False


def suggest_threshold(rows: Sequence[Row], max_score_drop: float, max_pixel_rms: float) -> float:
    """The largest threshold that keeps every configuration's (task, steps) mean score within ``max_score_drop``
    of the uncached run's and its mean decoded pixel RMS to the uncached run at most ``max_pixel_rms``.

    0 (reuse nothing) when no larger threshold qualifies. Rows without a score or pixel distance are refused:
    the choice needs the trained toy.
    """
    if any(r.score is None or r.pixel_rms is None for r in rows):
        raise ValueError("suggest_threshold needs scored rows (measured with --toy)")
    ok = {}
    for r in rows:
        good = r.score_full - r.score <= max_score_drop + 1e-12 and r.pixel_rms <= max_pixel_rms
        ok[r.threshold] = ok.get(r.threshold, True) and good
    return max([t for t, good in ok.items() if good] + [0.0])


def write_section(path: Path, heading: str, body: str) -> None:
    """Put ``body`` under ``heading`` (a '## ' line) in ``path``: what was under it up to the next '## ' heading is
    replaced, everything else stays; a missing heading is appended."""
    lines = path.read_text().splitlines() if path.exists() else []
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = len(lines)
        if lines and lines[-1].strip():
            lines.append("")
            start = end = len(lines)
    after = [""] + lines[end:] if end < len(lines) else []
    path.write_text("\n".join(lines[:start] + [heading, "", body.rstrip("\n")] + after) + "\n")


def write_results(path: Path, sections: Sequence[tuple[str, list[Row]]], command: str, note: str = "") -> None:
    """The tables under the '## Measurements' heading of ``path`` (see :func:`write_section`)."""
    import torch

    body = "\n\n".join(table(rows, title) for title, rows in sections)
    write_section(path, "## Measurements", f"Measured by `{command}` (torch {torch.__version__}, CPU, fp32)."
                                           f"{(' ' + note) if note else ''}\n\n{body}")


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
    parser.add_argument("--toy", choices=["t2v", "i2v"], nargs="+", help="the trained toy MoE of issue 21 (toy/)")
    parser.add_argument("--weights", type=Path, help="folder of the toy files (with --toy; default toy/weights)")
    parser.add_argument("--clips", type=int, default=8, help="held-out toy clips (with --toy)")
    parser.add_argument("--max-score-drop", type=float, default=1 / 48,
                        help="with --toy: the suggested threshold keeps each configuration's mean score within this "
                             "of the uncached run's (default 1/48: one check of one clip, at 8 clips x 6 checks)")
    parser.add_argument("--max-pixel-rms", type=float, default=8.0,
                        help="with --toy: ... and its mean decoded pixel RMS to the uncached run at most this (0-255)")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--write", type=Path, help="write the tables into this markdown file, replacing what follows "
                                                   "its '## Measurements' heading (e.g. bench/results_cache.md)")
    args = parser.parse_args(argv)

    from packpath import load_pack

    load_pack()
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    command = "python bench/cache_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    note = ""
    if args.toy:
        sections = toy_sections(args.toy, args.steps, args.thresholds, args.clips, args.weights, args.solver,
                                args.warmup, log=lambda text: print(text + "\n", flush=True))
        rows = [r for _, section in sections for r in section]
        chosen = suggest_threshold(rows, args.max_score_drop, args.max_pixel_rms)
        note = (f"Suggested threshold (largest with every configuration's mean score within {args.max_score_drop:.3g} "
                f"of the uncached run's and mean pixel RMS to it at most {args.max_pixel_rms:g}): **{chosen:g}**.")
        if any(toy_untrained(task, args.weights) for task in args.toy):
            note += " These are untrained files: the suggestion means nothing."
        print(note)
    else:
        sections = [measure_random(args)]
        rows = sections[0][1]
        print(table(rows, sections[0][0]))
    if args.write:
        write_results(args.write, sections, command, note)
    if args.out:
        Path(args.out).write_text(json.dumps([{**asdict(r), "saved": r.saved} for r in rows], indent=1) + "\n")
    return 0


def measure_random(args) -> tuple[str, list[Row]]:
    """``(title, rows)`` on ``--high/--low`` (or tiny random experts), with ``--contexts``/``--score`` if given."""
    score = _import(args.score) if args.score else None
    options = dict(cfg_high=args.cfg_high, cfg_low=args.cfg_low, shift=args.shift, solver=args.solver)
    with tempfile.TemporaryDirectory() as tmp:
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
                       args.warmup)
    return title, rows


if __name__ == "__main__":
    raise SystemExit(main())
