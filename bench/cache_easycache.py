"""ComfyUI's own EasyCache against our step cache, on the same MODELs, sampler, prompts and seeds.

Both caches run through ``Wan22DuoModelSampler`` on the toy experts of issue 21 loaded by
ComfyUI's ``UNETLoader`` with ``ModelSamplingSD3`` (the toy's shift: 12 T2V, 5 I2V), UniPC on the
``wan`` schedule, the official boundary and cfg (T2V 4/3, I2V 3.5/3.5):

* **uncached**: the MODELs as they are: the reference run of every clip;
* **ours**: the same MODELs with the sampler's ``step_cache`` input
  (``engine.sampling.step_cache``: per expert, warm-up 2, last step of each expert computed);
* **EasyCache**: both MODELs through ComfyUI's ``EasyCache`` node (its defaults: start 0.15,
  end 0.95), ``reuse_threshold`` swept; each expert has its own holder, as in ComfyUI's
  two-``KSamplerAdvanced`` graph.

Model calls are counted at the model itself, not taken from either cache's report: a forward
pre-hook on each expert's ``patch_embedding`` (the first layer of ComfyUI's ``WanModel``) adds
the batch it is given, so a step at cfg != 1 counts 2 passes (cond and uncond, batched or
not) and a reused step counts 0, whichever cache reused it. For our cache the count is checked
against the sampler's report of reused steps. Per row, as in ``bench/cache_quality.py``: passes
and the share saved, final-latent relative L2 to the uncached run, decoded pixel RMS to it
(0-255) and the toy caption score (``toy.score``), decoded by the pack's VAE decode.

The "equal calls saved" table pairs each of our thresholds with the EasyCache setting whose
saved share is nearest (ties: the smaller threshold).

It needs ComfyUI (imported in-process from ``--comfyui``, CPU, no custom nodes, nothing written
into that tree) and so ComfyUI's Python environment::

    /work/venvs/comfy/bin/python bench/cache_easycache.py --comfyui ../shared/comfyui/ComfyUI-0.3.76 \\
        --toy t2v i2v --steps 20 40 --clips 8 --write bench/results_cache.md

``--weights DIR`` points at other toy files (untrained ones make a plumbing check; the tables
then say so). Numbers measured on the toy are the toy's, never Wan 2.2's.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import cache_quality  # noqa: E402
from cache_quality import Row, rel_l2  # noqa: E402

OUR_THRESHOLDS = (0.02, 0.05, 0.1, 0.2)
EASYCACHE_THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8)
HEADING = "## ComfyUI's EasyCache on the MODEL path"


class Comfy:
    """ComfyUI imported in this process from ``tree`` (CPU, built-in nodes only)."""

    def __init__(self, tree: Path):
        if not (tree / "main.py").is_file() or not (tree / "comfy").is_dir():
            raise SystemExit(f"{tree} is not a ComfyUI checkout (no main.py and comfy/); pass --comfyui PATH")
        sys.path.insert(0, str(tree.resolve()))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        from comfy.cli_args import args

        args.cpu = True
        args.disable_auto_launch = True
        import folder_paths
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if "EasyCache" not in nodes.NODE_CLASS_MAPPINGS:
            raise SystemExit(f"ComfyUI at {tree} has no EasyCache node (it came in ComfyUI 0.3.5x; 0.3.76 has it)")
        self.nodes, self.folder_paths = nodes, folder_paths

    @classmethod
    def attach(cls, nodes, folder_paths) -> "Comfy":
        """A ComfyUI this process has already imported (the integration suite's)."""
        comfy = cls.__new__(cls)
        comfy.nodes, comfy.folder_paths = nodes, folder_paths
        return comfy

    def run(self, name: str, **kwargs):
        cls = self.nodes.NODE_CLASS_MAPPINGS[name]
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        return tuple(getattr(out, "result", out))


class PassCounter:
    """Counts the batch rows each expert's WanModel is called with (forward pre-hook on its first layer)."""

    def __init__(self, patchers):
        self.rows, self.calls = Counter(), Counter()
        self._hooks = [p.model.diffusion_model.patch_embedding.register_forward_pre_hook(self._hook(n))
                       for n, p in enumerate(patchers)]

    def _hook(self, n: int):
        def hook(module, args):
            self.rows[n] += int(args[0].shape[0])
            self.calls[n] += 1
        return hook

    def take(self) -> tuple[int, int]:
        """(passes, forward calls) since the last take."""
        out = sum(self.rows.values()), sum(self.calls.values())
        self.rows.clear(), self.calls.clear()
        return out


def setup(comfy: Comfy, task: str, clips: int, weights: Optional[Path]):
    """MODELs, our VAE, per-clip (positive, negative, latent) and captions, cfgs and shift for toy ``task``."""
    from wan22duo.nodes.loaders import Wan22DuoVAELoader
    from wan22duo.toy import run

    high_path = run.weight_path(f"{task}_high", weights)
    low_path = run.weight_path(f"{task}_low", weights)
    folder = str(high_path.parent)
    if folder not in comfy.folder_paths.get_folder_paths("diffusion_models"):
        comfy.folder_paths.add_model_folder_path("diffusion_models", folder)
    cfgs, shift = ((3.5, 3.5), 5.0) if task == "i2v" else ((4.0, 3.0), 12.0)
    models = []
    for path in (high_path, low_path):
        (model,) = comfy.run("UNETLoader", unet_name=path.name, weight_dtype="default")
        models.append(comfy.run("ModelSamplingSD3", model=model, shift=shift)[0])
    (vae,) = Wan22DuoVAELoader().load(str(run.weight_path("vae", weights)), "fp32", "cpu")["result"]
    inputs = run.held_out_inputs(task, clips, vae)
    captions = [caption for _, caption, _, _, _ in inputs]
    clips_in = [(positive, negative, latent) for _, _, positive, negative, latent in inputs]
    return models, vae, clips_in, captions, cfgs, shift


def sample(pair, clip, steps: int, cfgs, step_cache=None):
    """One Wan22DuoModelSampler run; (final latent, the switch report)."""
    from wan22duo.nodes.model_sampler import Wan22DuoModelSampler

    positive, negative, latent = clip
    out = Wan22DuoModelSampler().sample(pair[0], positive, negative, latent, 0, steps=steps, cfg_high=cfgs[0],
                                        cfg_low=cfgs[1], shift=-1.0, sampler="unipc", scheduler="wan",
                                        memory="keep_both", low_noise_model=pair[1], step_cache=step_cache)
    return out["result"][0]["samples"].float().cpu(), out["ui"]["wan22duo_switch"][0]


def measure(comfy: Comfy, task: str, steps_list: Sequence[int], ours: Sequence[float], easy: Sequence[float],
            clips: int, weights: Optional[Path] = None, log=print) -> list[Row]:
    """Rows (``task`` set to "<task> ours" / "<task> EasyCache") for every plan length and threshold."""
    from wan22duo.engine.sampling.step_cache import StepCache

    models, vae, clips_in, captions, cfgs, _ = setup(comfy, task, clips, weights)
    judge = cache_quality.ToyJudge(vae, captions)
    counter = PassCounter(models)
    easy_pairs = {t: [comfy.run("EasyCache", model=m, reuse_threshold=t, start_percent=0.15, end_percent=0.95,
                                verbose=False)[0] for m in models] for t in easy}
    rows = []
    for steps in steps_list:
        full, calls_full, scores_full = [], 0, []
        for n, clip in enumerate(clips_in):
            latent, _ = sample(models, clip, steps, cfgs)
            passes, calls = counter.take()
            if calls != steps:  # one batched forward per step: the reused-step count below relies on it
                raise RuntimeError(f"the uncached run made {calls} forward calls in {steps} steps; expected one "
                                   "batched call per step")
            calls_full += passes
            full.append((latent, judge.video(latent)))
            scores_full.append(judge.score(full[-1][1], n))
        score_full = cache_quality._mean(scores_full)
        runs = [("ours", t, models, StepCache(t)) for t in ours] + [("EasyCache", t, easy_pairs[t], None) for t in easy]
        for method, threshold, pair, cache in runs:
            start = time.perf_counter()
            total, reused, dists, scores, pixels = 0, 0, [], [], []
            for n, clip in enumerate(clips_in):
                latent, report = sample(pair, clip, steps, cfgs, cache)
                passes, calls = counter.take()
                if cache is not None and steps - calls != len(report["cache"]["reused"]):
                    raise RuntimeError(f"counted {steps - calls} reused steps, the report says "
                                       f"{len(report['cache']['reused'])}: the pass counter is wrong")
                total, reused = total + passes, reused + steps - calls
                video = judge.video(latent)
                dists.append(rel_l2(latent, full[n][0]))
                scores.append(judge.score(video, n))
                pixels.append(judge.pixel_rms(video, full[n][1]))
            row = Row(steps, threshold, total, calls_full, reused, cache_quality._mean(dists), max(dists),
                      cache_quality._mean(scores), score_full, time.perf_counter() - start,
                      cache_quality._mean(pixels), f"{task} {method}")
            log(f"{task} {steps} steps {method} {threshold:g}: saved {100 * row.saved:.0f} %, "
                f"rel. L2 {row.rel_l2:.4f}, pixel RMS {row.pixel_rms:.2f}, score {row.score:.3f} ({score_full:.3f})")
            rows.append(row)
    return rows


def pairs(rows: Sequence[Row]) -> list[tuple[Row, Row]]:
    """Each of our rows with the EasyCache row of the same task and steps whose saved share is nearest."""
    out = []
    for ours in (r for r in rows if r.task.endswith(" ours")):
        task = ours.task[:-len(" ours")]
        peers = [r for r in rows if r.task == f"{task} EasyCache" and r.steps == ours.steps]
        if peers:
            out.append((ours, min(peers, key=lambda r: (round(abs(r.saved - ours.saved), 9), r.threshold))))
    return out


def pair_table(rows: Sequence[Row], title: str) -> str:
    lines = [f"**{title}**", "",
             "| task | steps | ours: threshold | saved | latent rel. L2 | pixel RMS | score "
             "| EasyCache: reuse_threshold | saved | latent rel. L2 | pixel RMS | score | uncached score |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, b in pairs(rows):
        lines.append(f"| {a.task.split()[0].upper()} | {a.steps} | {a.threshold:g} | {100 * a.saved:.0f} % | "
                     f"{a.rel_l2:.4f} | {a.pixel_rms:.2f} | {a.score:.3f} | {b.threshold:g} | {100 * b.saved:.0f} % | "
                     f"{b.rel_l2:.4f} | {b.pixel_rms:.2f} | {b.score:.3f} | {a.score_full:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (0.3.76 tested)")
    parser.add_argument("--toy", choices=["t2v", "i2v"], nargs="+", default=["t2v", "i2v"])
    parser.add_argument("--weights", type=Path, help="folder of the toy files (default toy/weights)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(OUR_THRESHOLDS), help="ours")
    parser.add_argument("--easycache", type=float, nargs="+", default=list(EASYCACHE_THRESHOLDS),
                        help="EasyCache reuse_threshold values")
    parser.add_argument("--write", type=Path, help=f"write the tables into this markdown file under '{HEADING}'")
    args = parser.parse_args(argv)

    from packpath import load_pack

    load_pack()
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    logging.getLogger().setLevel(logging.WARNING)  # EasyCache logs two lines per run at INFO
    comfy = Comfy(args.comfyui)
    sections = []
    for task in args.toy:
        rows = measure(comfy, task, args.steps, args.thresholds, args.easycache, args.clips, args.weights,
                       log=lambda line: print(line, flush=True))
        kind = ("UNTRAINED toy files (plumbing check; says nothing about quality)"
                if cache_quality.toy_untrained(task, args.weights) else "trained on synthetic clips; not Wan 2.2")
        where = (f"toy {task.upper()} MoE of issue 21 ({kind}), {args.clips} held-out clips, Wan22DuoModelSampler "
                 "on ComfyUI MODELs, unipc")
        sections.append((f"{where}: at equal calls saved", pair_table(rows, f"{where}: at equal calls saved")))
        sections.append((f"{where}: ours", cache_quality.table([r for r in rows if r.task.endswith("ours")],
                                                                f"{where}: ours (step_cache input)")))
        sections.append((f"{where}: EasyCache", cache_quality.table(
            [r for r in rows if r.task.endswith("EasyCache")],
            f"{where}: ComfyUI EasyCache (threshold = reuse_threshold; start 0.15, end 0.95)")))
    text = "\n\n".join(body for _, body in sections)
    print(text)
    if args.write:
        command = "python bench/cache_easycache.py " + " ".join(sys.argv[1:] if argv is None else argv)
        cache_quality.write_section(args.write, HEADING, f"Measured by `{command}` (torch {torch.__version__}, CPU, "
                                                         f"fp32).\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
