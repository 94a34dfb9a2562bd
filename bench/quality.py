"""Toy quality table: how sampling options change the video of the trained toy Wan 2.2 MoE (toy/).

    python bench/quality.py [--clips 16] [--task all|t2v|i2v] [--weights toy/weights] [--out bench/results_quality.md]
    /work/venvs/comfy/bin/python bench/quality.py --comfyui PATH [--comfyui-gguf PATH] [--clips 8] [--out ...]

Every number is measured on the toy (a dim-128, 2-layer Wan 2.2 A14B-layout MoE trained on synthetic
clips), never on Wan 2.2. For ``--clips`` held-out evaluation clips (seeds from ``data.HELD_OUT_SEED``,
every fifth one so the captions vary) it samples each configuration through the pack's nodes
(``toy/run.py``: Wan22DuoExpertLoader x2 -> Wan22DuoSampler -> Wan22DuoVAEDecode) and scores the video
against its caption (``toy/score.py``), and against a reference run of the same seed (UniPC, 50 steps,
official boundary, fp32, the fp16 files): pixel RMS (0-255) and the RMS distance between the shape's
centroid tracks.

T2V rows: UniPC at 4/8/20/40 steps; Euler and DPM++ 2M at 20; the boundary far from the official 0.875
(0.5, so the high-noise expert runs steps it was never trained on, and 0.99, the reverse); bf16 compute;
GGUF Q8_0 and Q4_K files at 20 and 40 steps (written from the fp16 files by ``toy/quantize.py`` in
city96's layout and types: in the toy's Q4_K file only the FFN output weights are Q4_K, see there);
the experts swapped. I2V rows (when the ``toy_i2v_*`` files exist): the I2V experts from each clip's
first frame (shift 5, cfg 3.5 / 3.5 as official I2V-A14B), against their own UniPC 50-step reference.

``--comfyui PATH`` (run with a Python that has ComfyUI's requirements) measures the samplers instead:
ComfyUI is set up and imported in this process exactly as the integration suite does it
(``integration/conftest.py``: a temporary copy with this pack and ComfyUI-GGUF installed), the toy
files go into its ``models/`` folders, and T2V clips are sampled by ``Wan22DuoSampler`` (our loaders),
by ``Wan22DuoModelSampler`` on ComfyUI's ``UNETLoader`` models, and by ComfyUI's own two-
``KSamplerAdvanced`` A14B graph (``ModelSamplingSD3`` shift 12, ``uni_pc``/``simple``, the switch step
from the official boundary), each decoded by ComfyUI's ``VAEDecode`` except the first (ours).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from packpath import load_pack  # noqa: E402

GGUF_TYPES = ("Q8_0", "Q4_K")
CONFIGS = [  # (label, generate() options, models: a compute dtype, "swapped" or a GGUF type)
    ("UniPC 4 steps", {"steps": 4}, "fp32"),
    ("UniPC 8 steps", {"steps": 8}, "fp32"),
    ("UniPC 20 steps", {"steps": 20}, "fp32"),
    ("UniPC 40 steps", {"steps": 40}, "fp32"),
    ("Euler 20 steps", {"steps": 20, "sampler": "euler"}, "fp32"),
    ("DPM++ 2M 20 steps", {"steps": 20, "sampler": "dpmpp_2m"}, "fp32"),
    ("boundary 0.5 (far off), 20 steps", {"steps": 20, "boundary": 0.5}, "fp32"),
    ("boundary 0.99 (far off), 20 steps", {"steps": 20, "boundary": 0.99}, "fp32"),
    ("bf16 compute, 20 steps", {"steps": 20}, "bf16"),
    ("bf16 compute, 40 steps", {"steps": 40}, "bf16"),
    ("GGUF Q8_0, 20 steps", {"steps": 20}, "Q8_0"),
    ("GGUF Q8_0, 40 steps", {"steps": 40}, "Q8_0"),
    ("GGUF Q4_K, 20 steps", {"steps": 20}, "Q4_K"),
    ("GGUF Q4_K, 40 steps", {"steps": 40}, "Q4_K"),
    ("experts swapped, 20 steps", {"steps": 20}, "swapped"),
]
REFERENCE = {"steps": 50}
I2V_CONFIGS = [
    ("I2V UniPC 20 steps", {"steps": 20}, "fp32"),
    ("I2V UniPC 40 steps", {"steps": 40}, "fp32"),
    ("I2V GGUF Q8_0, 40 steps", {"steps": 40}, "Q8_0"),
    ("I2V GGUF Q4_K, 40 steps", {"steps": 40}, "Q4_K"),
]
I2V_REFERENCE = {"steps": 50}
I2V_OPTIONS = {"cfg_high": 3.5, "cfg_low": 3.5}  # official I2V-A14B guidance
COMFY_CONFIGS = [  # (label, steps, sampler path)
    ("Wan22DuoSampler (our loaders), 20 steps", 20, "duo"),
    ("Wan22DuoModelSampler (UNETLoader), 20 steps", 20, "model_sampler"),
    ("Wan22DuoModelSampler (UNETLoader), 40 steps", 40, "model_sampler"),
    ("ComfyUI two KSamplerAdvanced, 20 steps", 20, "ksampler"),
    ("ComfyUI two KSamplerAdvanced, 40 steps", 40, "ksampler"),
]


def held_out(clips: int, run=None) -> tuple[list[int], list[str]]:
    """The held-out clips' seeds and captions (``run``: the toy.run module, e.g. as a ComfyUI imported it)."""
    if run is None:
        from wan22duo.toy import run

    return run.held_out(clips)


def summarise(label: str, results: list, dists: list[dict], seconds: float) -> dict:
    n = len(results)
    finite = [r for r in results if r.speed_error != float("inf")]
    return {
        "config": label, "pass": sum(r.ok for r in results) / n,
        "colour": sum(r.colour_ok for r in results) / n, "direction": sum(r.direction_ok for r in results) / n,
        "speed_error": sum(r.speed_error for r in finite) / max(1, len(finite)),
        "jitter": sum(min(r.jitter, 99.0) for r in results) / n, "score": sum(r.score for r in results) / n,
        "pixel_rms": sum(d["pixel_rms"] for d in dists) / n, "track_rms": sum(d["track_rms"] for d in dists) / n,
        "seconds": seconds / n,
    }


def measure(label: str, sample, seeds, captions, refs, score, log) -> dict:
    """Sample every clip with ``sample(seed, caption) -> IMAGE`` and score it against caption and reference."""
    start = time.perf_counter()
    videos = [sample(s, c) for s, c in zip(seeds, captions)]
    return score_row(label, videos, captions, refs, score, time.perf_counter() - start, log)


def reference_row(label: str, sample, seeds, captions, score, log) -> tuple[dict, list]:
    """The reference videos and their row (each is its own reference: distance 0), sampled once."""
    start = time.perf_counter()
    refs = [sample(s, c) for s, c in zip(seeds, captions)]
    return score_row(label, refs, captions, refs, score, time.perf_counter() - start, log), refs


def score_row(label: str, videos, captions, refs, score, seconds: float, log) -> dict:
    results = [score.score_video(v, c) for v, c in zip(videos, captions)]
    dists = [score.distance(v, ref) for v, ref in zip(videos, refs)]
    row = summarise(label, results, dists, seconds)
    log(format_row(row))
    return row


def gguf_models(weights: Path | None, qtype: str, task: str, folder: Path, vae, log=print) -> dict:
    """The ``task`` experts written as ``qtype`` GGUF files into ``folder`` and loaded by Wan22DuoExpertLoader."""
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader
    from wan22duo.toy import quantize, run

    models = {"vae": vae, "task": task}
    for side in ("high", "low"):
        out = folder / f"toy_{task}_{side}_noise-{qtype}.gguf"
        counts = quantize.write_expert_gguf(run.weight_path(f"{task}_{side}", weights), out, qtype)
        total = sum(counts.values())
        log(f"{out.name}: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items())) + " of weights")
        GGUF_SHARES[(task, qtype, side)] = counts
        (models[side],) = Wan22DuoExpertLoader().load(str(out), f"{side}_noise", "default", "fp32", "cpu")
    return models


GGUF_SHARES: dict = {}


def evaluate(clips: int, weights: Path | None = None, log=print, tasks=("t2v", "i2v")) -> list[dict]:
    """The T2V rows, then the I2V rows when the I2V files exist (each against its own reference)."""
    import torch

    from wan22duo.toy import run, score

    torch.set_num_threads(1)
    seeds, captions = held_out(clips)
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="toy_gguf_"))
    try:
        for task, reference, configs in (("t2v", REFERENCE, CONFIGS), ("i2v", I2V_REFERENCE, I2V_CONFIGS)):
            if task not in tasks:
                continue
            try:
                run.weight_path(f"{task}_high", weights), run.weight_path(f"{task}_low", weights)
            except FileNotFoundError as e:
                log(f"no {task.upper()} rows: {e}")
                continue
            models: dict = {}

            def get(key: str) -> dict:
                if key not in models:
                    if key in GGUF_TYPES:
                        models[key] = gguf_models(weights, key, task, folder, get("fp32")["vae"], log)
                    elif key == "swapped":
                        models[key] = run.load(weights, task=task, swap_experts=True)
                    else:
                        models[key] = run.load(weights, compute_dtype=key, task=task)
                return models[key]

            def sampler(key: str, options: dict):
                extra = I2V_OPTIONS if task == "i2v" else {}

                def sample(s, c):
                    image = run.first_frame(s) if task == "i2v" else None
                    return run.generate(get(key), c, seed=s, start_image=image, **extra, **options)[0]
                return sample

            prefix = "I2V " if task == "i2v" else ""
            row, refs = reference_row(f"{prefix}UniPC {reference['steps']} steps (the reference)",
                                      sampler("fp32", reference), seeds, captions, score, log)
            rows.append(row)
            for label, options, key in configs:
                rows.append(measure(label, sampler(key, options), seeds, captions, refs, score, log))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def evaluate_comfy(clips: int, comfyui: Path, gguf: Path | None = None, weights: Path | None = None,
                   log=print) -> list[dict]:
    """The sampler rows, in a real ComfyUI imported into this process (see the module docstring)."""
    import torch

    sys.path.insert(0, str(ROOT / "integration"))
    import conftest as harness  # the integration suite's set-up, as plain functions

    torch.set_num_threads(1)
    comfyui = comfyui.resolve()
    gguf = (gguf or comfyui.parent / harness.GGUF_FOLDER).resolve()
    dest = Path(tempfile.mkdtemp(prefix="toy_comfy_"))
    try:
        return comfy_rows(harness.import_comfy(harness.make_tree(comfyui, gguf, dest)), clips, weights, log)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def comfy_rows(comfy, clips: int, weights: Path | None = None, log=print) -> list[dict]:
    """The sampler rows in ``comfy``, a ComfyUI imported in this process (``integration/conftest.py``)."""
    build, run, score, text, data = (comfy.pack_module(f"toy.{m}") for m in ("build", "run", "score", "text",
                                                                             "data"))
    # in a subfolder of ComfyUI's model folders, beside (not over) files of the same names put there by others
    names = {k: f"wan22duo_quality/{build.FILES[k]}" for k in ("t2v_high", "t2v_low", "vae")}
    for key, name in names.items():
        shutil.copyfile(run.weight_path(key, weights),
                        comfy.tree.model_path("vae" if key == "vae" else "diffusion_models", name))
    ours = run.load(weights)
    (high,) = comfy.run("UNETLoader", unet_name=names["t2v_high"], weight_dtype="default")
    (low,) = comfy.run("UNETLoader", unet_name=names["t2v_low"], weight_dtype="default")
    (vae,) = comfy.run("VAELoader", vae_name=names["vae"])
    schedule = comfy.pack_module("engine.sampling.schedule")

    def latent():
        return comfy.run("EmptyHunyuanLatentVideo", width=data.WIDTH, height=data.HEIGHT, length=data.FRAMES,
                         batch_size=1)[0]

    def decode(samples):
        (images,) = comfy.run("VAEDecode", samples=samples, vae=vae)
        return images.reshape(-1, *images.shape[-3:]).float().cpu()

    def model_sampler(steps, s, c):
        pos, neg = text.conditioning(c), text.conditioning("")
        out = comfy.run("Wan22DuoModelSampler", high_noise_model=high, positive=pos, negative=neg,
                        latent=latent(), seed=s, steps=steps, cfg_high=4.0, cfg_low=3.0, shift=12.0,
                        boundary=-1.0, switch_step=-1, sampler="unipc", scheduler="wan", memory="keep_both",
                        low_noise_model=low)
        return decode(out["result"][0])

    shifted = [comfy.run("ModelSamplingSD3", model=m, shift=12.0)[0] for m in (high, low)]

    def ksampler(steps, s, c):
        pos, neg = text.conditioning(c), text.conditioning("")
        switch = schedule.boundary_switch_step(schedule.make_schedule("simple", steps, 12.0).timesteps, 0.875)
        common = dict(noise_seed=s, steps=steps, sampler_name="uni_pc", scheduler="simple", positive=pos,
                      negative=neg)
        (mid,) = comfy.run("KSamplerAdvanced", model=shifted[0], add_noise="enable", cfg=4.0,
                           latent_image=latent(), start_at_step=0, end_at_step=switch,
                           return_with_leftover_noise="enable", **common)
        (out,) = comfy.run("KSamplerAdvanced", model=shifted[1], add_noise="disable", cfg=3.0,
                           latent_image=mid, start_at_step=switch, end_at_step=steps,
                           return_with_leftover_noise="disable", **common)
        return decode(out)

    paths = {"duo": lambda steps, s, c: run.generate(ours, c, seed=s, steps=steps)[0],
             "model_sampler": model_sampler, "ksampler": ksampler}
    seeds, captions = held_out(clips, run)
    row, refs = reference_row(f"Wan22DuoSampler UniPC {REFERENCE['steps']} steps (the reference)",
                              lambda s, c: run.generate(ours, c, seed=s, **REFERENCE)[0], seeds, captions, score, log)
    rows = [row]
    for label, steps, path in COMFY_CONFIGS:
        rows.append(measure(label, lambda s, c, f=paths[path], n=steps: f(n, s, c), seeds, captions, refs,
                            score, log))
    return rows


HEADER = ("| configuration | pass | colour right | direction right | speed error | jitter (px) | mean score "
          "| pixel RMS to ref | track RMS to ref (px) | s / clip |\n|---|---|---|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    return (f"| {r['config']} | {r['pass']:.0%} | {r['colour']:.0%} | {r['direction']:.0%} | "
            f"{r['speed_error']:.0%} | {r['jitter']:.2f} | {r['score']:.2f} | {r['pixel_rms']:.1f} | "
            f"{r['track_rms']:.1f} | {r['seconds']:.1f} |")


def gguf_note() -> str:
    """Which share of each GGUF file's weights its type holds (the rest F16 / F32, city96's rules)."""
    lines = []
    for (task, qtype, side), counts in sorted(GGUF_SHARES.items()):
        total = sum(counts.values())
        lines.append(f"- {task.upper()} {side}-noise {qtype} file: "
                     + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(counts.items())) + " of the weights")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--weights", type=Path, default=None, help="folder of toy files (default toy/weights)")
    parser.add_argument("--task", choices=("all", "t2v", "i2v"), default="all",
                        help="rows of one task only (i2v: written under '## I2V quality table'), e.g. to run both "
                             "at once in two processes")
    parser.add_argument("--comfyui", type=Path, default=None,
                        help="measure the sampler rows in this ComfyUI checkout instead (needs ComfyUI's requirements)")
    parser.add_argument("--comfyui-gguf", type=Path, default=None,
                        help="ComfyUI-GGUF checkout for --comfyui (default: ComfyUI-GGUF beside it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table into this markdown file under '## Quality table' ('## I2V quality "
                             "table' with --task i2v, '## Samplers in ComfyUI' with --comfyui), replacing that section "
                             "up to the next '## ' heading or adding it at the end")
    args = parser.parse_args(argv)
    load_pack()
    import torch

    def log(line):
        print(line, flush=True)

    if args.comfyui:
        rows = evaluate_comfy(args.clips, args.comfyui, args.comfyui_gguf, args.weights, log)
        heading, command = "## Samplers in ComfyUI", f"--comfyui {args.comfyui} --clips {args.clips}"
    else:
        rows = evaluate(args.clips, args.weights, log, ("t2v", "i2v") if args.task == "all" else (args.task,))
        heading = "## I2V quality table" if args.task == "i2v" else "## Quality table"
        command = f"--clips {args.clips}" + ("" if args.task == "all" else f" --task {args.task}")
    table = "\n".join([HEADER] + [format_row(r) for r in rows])
    print(table)
    if args.out:
        reference = "Wan22DuoSampler's" if args.comfyui else "the same task's"
        write_section(args.out, heading, f"Measured by `python bench/quality.py {command}` (torch {torch.__version__}, "
                      f"one CPU thread) on the toy, {args.clips} held-out clips; the reference is {reference} "
                      f"UniPC 50-step run of the same seed.\n\n{table}\n" + (f"\nGGUF files (`toy/quantize.py`):\n\n{gguf_note()}\n"
                                                     if GGUF_SHARES else ""))


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace what follows ``heading`` in ``path`` up to the next '## ' heading (or add the section)."""
    text = path.read_text() if path.exists() else ""
    if heading in text:
        head, rest = text.split(heading, 1)
        after = rest.find("\n## ")
        tail = rest[after + 1:] if after >= 0 else ""
    else:
        head, tail = (text.rstrip("\n") + "\n\n") if text else "", ""
    path.write_text(f"{head}{heading}\n\n{body}" + (f"\n{tail}" if tail else ""))


if __name__ == "__main__":
    main()
