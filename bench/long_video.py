"""Long video with context windows on the toy Wan 2.2 MoE: score per window segment and seam artefacts.

    python bench/long_video.py [--clips 4] [--frames 65] [--steps 20] [--weights toy/weights]
                               [--out bench/results_long_video.md]
    python bench/long_video.py --untrained      # plumbing check on untrained toy files (no trained toy yet)

Every number is measured on the toy (toy/: a small T2V-A14B-layout MoE trained on 17-frame synthetic
clips of one shape moving in a straight line), never on Wan 2.2. For ``--clips`` held-out captions it
samples a video of ``--frames`` frames (65 = about 4 toy clips) through the pack's nodes
(Wan22DuoExpertLoader x2 -> Wan22DuoContextWindows -> Wan22DuoSampler -> Wan22DuoVAEDecode), with
windows of one toy clip (17 frames = 5 latent frames) overlapping by 8 frames (2 latent frames), in
several configurations, and without windows (the whole video in one model call, which the toy never saw
in training).

Per configuration it reports:

* **segment score**: the video cut into consecutive 17-frame segments (one toy clip each, sharing their
  edge frame), each scored against the caption by ``toy/score.py`` (colour, background, direction, speed,
  jitter, background stability); the mean over segments and clips, and the first and last segment's
  mean (does the video hold its content to the end?);
* **seam ratio**: the mean absolute frame-to-frame pixel change (0-255) at window seams divided by the
  same mean at the other latent-frame boundaries. Latent frame ``k`` holds video frames ``4k-3 .. 4k``,
  so every seam falls between two latent frames, where the causal VAE's decoding alone already changes
  more than inside a latent frame; comparing with the other boundaries takes that out. A seam is the
  pair of video frames where a window of step 1 starts or ends inside the video; the uniform schedule
  moves its windows at later steps, so this measures step 1's seams. 1.0: seams change no more than the
  other boundaries; above 1, visible jumps (the no-windows row uses the same frame pairs, as a control);
* the seconds per video (one CPU thread).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from packpath import load_pack  # noqa: E402

WINDOW, OVERLAP = 17, 8  # video frames: one toy clip, and 2 latent frames shared
SEGMENT = 17  # frames scored at a time (one toy clip)
CONFIGS = [  # (label, Wan22DuoContextWindows settings or None for no windows)
    ("no windows (whole video at once)", None),
    ("uniform, pyramid, anchor, FreeNoise", dict(schedule="uniform", fuse="pyramid", causal_anchor=True,
                                                 freenoise=True)),
    ("static, pyramid, anchor, FreeNoise", dict(schedule="static", fuse="pyramid", causal_anchor=True,
                                                freenoise=True)),
    ("uniform, overlap_linear, anchor, FreeNoise", dict(schedule="uniform", fuse="overlap_linear",
                                                        causal_anchor=True, freenoise=True)),
    ("uniform, pyramid, no anchor, FreeNoise", dict(schedule="uniform", fuse="pyramid", causal_anchor=False,
                                                    freenoise=True)),
    ("uniform, pyramid, anchor, no FreeNoise", dict(schedule="uniform", fuse="pyramid", causal_anchor=True,
                                                    freenoise=False)),
]


def segments(frames: int, size: int = SEGMENT) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` video-frame ranges of ``size`` frames sharing their edge frame; the last
    one ends on the last frame (it may overlap its neighbour more)."""
    if frames <= size:
        return [(0, frames)]
    out, start = [], 0
    while start + size < frames:
        out.append((start, start + size))
        start += size - 1
    out.append((frames - size, frames))
    return out


def seam_pairs(windows, latent_frames: int) -> set[int]:
    """Indices ``i`` of the video-frame pairs ``(i, i + 1)`` at the edges of ``windows`` (latent ranges)."""
    pairs = set()
    for w in windows:
        if w.start > 0:
            pairs.add(4 * w.start - 4)  # last video frame of latent frame start-1 -> first of latent frame start
        if w.stop < latent_frames:
            pairs.add(4 * (w.stop - 1))  # last video frame of the window's last latent frame -> the next one
    return pairs


def seam_ratio(video, pairs: set[int]) -> float:
    """Mean |frame change| at ``pairs`` over the mean at the other latent-frame boundaries (pairs ``(4k, 4k+1)``);
    ``video`` is an IMAGE [F, H, W, 3] in [0, 1]."""
    change = (video[1:].float() - video[:-1].float()).abs().mul(255).mean(dim=(1, 2, 3))
    boundaries = set(range(0, len(change), 4))
    seams, others = sorted(boundaries & pairs), sorted(boundaries - pairs)
    if not seams or not others:
        return float("nan")
    return float(change[seams].mean() / change[others].mean().clamp_min(1e-6))


def untrained_weights(folder: Path) -> Path:
    """Untrained toy files (random weights) in ``folder``: the plumbing check before trained weights exist."""
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    build.save(dit.new_model(seed=1), "t2v_high", "untrained", folder)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", folder)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", folder)
    return folder


def sample_long(models: dict, caption: str, seed: int, frames: int, steps: int, windows_settings):
    """One toy video of ``frames`` frames through the nodes; returns (IMAGE [F, H, W, 3], the switch report)."""
    from wan22duo.nodes.context_windows import Wan22DuoContextWindows
    from wan22duo.nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoSampler
    from wan22duo.nodes.vae import Wan22DuoVAEDecode
    from wan22duo.toy import data, text

    (latent,) = Wan22DuoEmptyLatent().generate(data.WIDTH, data.HEIGHT, frames, 1)
    windows = None
    if windows_settings is not None:
        (windows,) = Wan22DuoContextWindows().make(WINDOW, OVERLAP, **windows_settings)
    out = Wan22DuoSampler().sample(models["high"], text.conditioning(caption), text.conditioning(""), latent, seed,
                                   steps=steps, cfg_high=4.0, cfg_low=3.0, shift=12.0, low_noise_model=models["low"],
                                   context_windows=windows)
    sampled, _ = out["result"]
    (images,) = Wan22DuoVAEDecode().decode(models["vae"], sampled, 0, 64)
    return images, out["ui"]["wan22duo_switch"][0]


def evaluate(clips: int, frames: int, steps: int, weights: Path | None = None, configs=None, log=print) -> list:
    import torch

    from wan22duo.engine.sampling.context_windows import ContextWindows
    from wan22duo.toy import run, score

    torch.set_num_threads(1)
    seeds, captions = run.held_out(clips)
    models = run.load(weights)
    latent_frames = (frames - 1) // 4 + 1
    step1 = ContextWindows.from_video_frames(WINDOW, OVERLAP).windows(latent_frames, 0)
    pairs = seam_pairs(step1, latent_frames)
    rows = []
    for label, settings in configs if configs is not None else CONFIGS:
        start = time.perf_counter()
        seg_scores, firsts, lasts, ratios, per_step = [], [], [], [], None
        for s, c in zip(seeds, captions):
            video, report = sample_long(models, c, s, frames, steps, settings)
            assert video.shape[0] == frames, f"{label}: {video.shape[0]} frames decoded, expected {frames}"
            scores = [score.score_video(video[a:b], c).score for a, b in segments(frames)]
            seg_scores += scores
            firsts.append(scores[0])
            lasts.append(scores[-1])
            ratios.append(seam_ratio(video, pairs))
            if settings is not None:
                per_step = report["context_windows"]["windows_per_step"]
        rows.append({"config": label, "score": sum(seg_scores) / len(seg_scores),
                     "first": sum(firsts) / len(firsts), "last": sum(lasts) / len(lasts),
                     "seam_ratio": sum(ratios) / len(ratios), "windows": per_step,
                     "seconds": (time.perf_counter() - start) / len(seeds)})
        log(format_row(rows[-1]))
    return rows


HEADER = ("| configuration | windows at step 1 | mean segment score | first segment | last segment "
          "| seam ratio (step-1 seams) | s / video |\n|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    windows = "-" if r["windows"] is None else str(r["windows"])
    return (f"| {r['config']} | {windows} | {r['score']:.2f} | {r['first']:.2f} | {r['last']:.2f} | "
            f"{r['seam_ratio']:.2f} | {r['seconds']:.1f} |")


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=65, help="video frames, 4n+1 (65: about 4 toy clips)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weights", type=Path, default=None, help="folder of toy files (default toy/weights)")
    parser.add_argument("--untrained", action="store_true",
                        help="write untrained toy files to a temporary folder and use them (a plumbing check: the "
                             "numbers mean nothing)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table into this markdown file, replacing what follows its "
                             "'## Measurements' heading (e.g. bench/results_long_video.md)")
    args = parser.parse_args(argv)
    if (args.frames - 1) % 4 or args.frames <= WINDOW:
        parser.error(f"--frames {args.frames}: use 4n+1 frames longer than one window ({WINDOW})")
    load_pack()
    import torch

    weights = args.weights
    if args.untrained:
        weights = untrained_weights(Path(tempfile.mkdtemp(prefix="toy_untrained_")))
    rows = evaluate(args.clips, args.frames, args.steps, weights, log=lambda line: print(line, flush=True))
    table = "\n".join([HEADER] + [format_row(r) for r in rows])
    print(table)
    if args.out:
        head = args.out.read_text().split("## Measurements")[0] if args.out.exists() else ""
        what = "untrained toy files (plumbing only)" if args.untrained else "the trained toy"
        args.out.write_text(
            f"{head}## Measurements\n\nMeasured by `python bench/long_video.py --clips {args.clips} --frames "
            f"{args.frames} --steps {args.steps}` (torch {torch.__version__}, one CPU thread) on {what}: "
            f"{args.frames}-frame videos, windows of {WINDOW} frames overlapping by {OVERLAP}, UniPC, "
            f"{args.clips} held-out captions.\n\n{table}\n")
    return rows


if __name__ == "__main__":
    main()
