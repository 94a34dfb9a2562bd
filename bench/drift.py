"""Drift of chained extensions on the toy I2V model: background colour, brightness and score per extension.

    python bench/drift.py [--extensions 8] [--seeds 4] [--steps 20] [--weights toy/weights]
                          [--out bench/results_drift.md] [--memory]

Every number is measured on the toy (toy/: a tiny I2V-A14B-layout MoE trained on synthetic clips of one
shape over a plain background), never on Wan 2.2. For each held-out seed, clip 0 is one plain I2V clip
from the seed's first frame (the anchor); every method then chains ``--extensions`` clips onto it through
the pack's nodes, the way a ComfyUI graph would:

* ``image``: ``Wan22DuoI2VExtend``: the previous clip's last 5 **decoded** frames, re-encoded, as the
  known first frames (image-space continuation, a VAE round trip per extension);
* ``latent (SVI layout)``: ``Wan22DuoI2VExtendSVI``: the anchor encoded alone plus the previous clip's
  last latent frame taken from its LATENT (latent-space continuation, no round trip);
* each ``+ colour match``: ``Wan22DuoColorMatch`` (Lab mean/std) on every new clip, fitted on the
  frames it shares with the previous clip (``overlap``) or on the anchor image (``anchor``). For the
  image route the matched frames also feed the next extension; for the latent route only the output.

Per extension, on the frames it adds (its first ``overlap`` frames are the previous clip's): the
**background drift** is the distance (0-255 RGB) of their background colour (per-frame median, as
``toy/score.py`` finds it) from the anchor's; the **brightness drift** is their mean luma (BT.601,
0-255) minus the anchor's; the **score** is ``toy/score.py``'s score of the whole decoded clip
against the caption. The toy shape moves 1 px per frame over a 64 px frame, so after about three
17-frame clips it has left the frame in the caption's direction and the motion checks of the score
fail whatever the method: read the score column for what a method breaks, the drift columns for drift.

The toy was trained on the plain I2V layout only. The SVI layout is one it never saw (the SVI LoRAs are
what teach Wan that layout), so the latent rows measure the mechanism, not what SVI does for Wan.

``context windows``: the same length as one I2V video denoised in overlapping 17-frame windows
(``Wan22DuoContextWindows``), cut into the chained routes' segments (:func:`windows_video`).

``long_video_ram`` states the host RAM of a chained long video in ComfyUI (see ``--memory``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from packpath import load_pack  # noqa: E402

OVERLAP = 5  # image route: 1 + 4 frames (fills latent frames 0 and 1 of the new clip)
MOTION_LATENTS = 1  # latent route: the SVI authors' default; 1 + 4 = 5 frames dropped at the join
I2V_CFG, I2V_SHIFT = 3.5, 5.0  # official I2V-A14B


def _sample(models, positive, negative, latent, seed: int, steps: int):
    from wan22duo.nodes.samplers import Wan22DuoSampler

    out = Wan22DuoSampler().sample(models["high"], positive, negative, latent, seed, steps=steps, cfg_high=I2V_CFG,
                                   cfg_low=I2V_CFG, shift=I2V_SHIFT, low_noise_model=models["low"])
    return out["result"][0]


def _decode(models, latent):
    from wan22duo.nodes.vae import Wan22DuoVAEDecode

    return Wan22DuoVAEDecode().decode(models["vae"], latent, 0, 64)[0]


def first_clip(models, anchor, caption: str, seed: int, steps: int):
    """Clip 0, the same for every method: a plain I2V clip from the anchor. Returns (LATENT, IMAGE)."""
    from wan22duo.nodes.samplers import Wan22DuoI2VConditioning
    from wan22duo.toy import data, text

    pos, neg = text.conditioning(caption), text.conditioning("")
    pos, neg, latent = Wan22DuoI2VConditioning().encode(pos, neg, models["vae"], anchor, data.WIDTH, data.HEIGHT,
                                                        data.FRAMES)
    latent = _sample(models, pos, neg, latent, seed, steps)
    return latent, _decode(models, latent)


def _match(clip, previous, anchor, mode):
    from wan22duo.nodes.continuation import Wan22DuoColorMatch

    if mode is None:
        return clip
    reference = previous if mode == "overlap" else anchor
    return Wan22DuoColorMatch().match(clip, reference, mode, OVERLAP, 1.0, "lab")[0]


def chain_image(models, anchor, caption, seed, extensions, steps, start, match=None) -> list:
    """Image-space continuation: decode, take the last frames, re-encode them as the next clip's start."""
    from wan22duo.nodes.keyframes import Wan22DuoI2VExtend
    from wan22duo.toy import data, text

    clips, previous = [], start[1]
    for i in range(1, extensions + 1):
        pos, neg = text.conditioning(caption), text.conditioning("")
        pos, neg, latent, overlap = Wan22DuoI2VExtend().extend(pos, neg, models["vae"], data.FRAMES, OVERLAP,
                                                               previous_images=previous)
        clip = _match(_decode(models, _sample(models, pos, neg, latent, seed + i, steps)), previous, anchor, match)
        clips.append((clip, overlap))
        previous = clip
    return clips


def chain_latent(models, anchor, caption, seed, extensions, steps, start, match=None) -> list:
    """Latent-space continuation in the SVI layout: the previous clip's LATENT, never re-encoded."""
    from wan22duo.nodes.continuation import Wan22DuoI2VExtendSVI
    from wan22duo.toy import data, text

    clips, previous_latent, previous = [], start[0], start[1]
    for i in range(1, extensions + 1):
        pos, neg = text.conditioning(caption), text.conditioning("")
        pos, neg, latent, overlap = Wan22DuoI2VExtendSVI().extend(
            pos, neg, models["vae"], anchor, data.WIDTH, data.HEIGHT, data.FRAMES, MOTION_LATENTS, previous_latent)
        previous_latent = _sample(models, pos, neg, latent, seed + i, steps)
        clip = _match(_decode(models, previous_latent), previous, anchor, match)
        clips.append((clip, overlap))
        previous = clip
    return clips


def windows_video(models, anchor, caption, seed, extensions, steps, start, match=None, retain=False) -> list:
    """Context windows over the same length: one I2V video of ``17 + 12 * extensions`` frames from the anchor,
    denoised in 17-frame windows (the toy's clip) overlapping by 8 frames (``Wan22DuoContextWindows``,
    uniform schedule, pyramid fuse, causal anchor, FreeNoise), cut into the segments the chained routes
    make (segment ``i``: frames ``12 i .. 12 i + 16``, its first ``OVERLAP`` frames shared with segment
    ``i - 1``). ``start`` (clip 0) and ``match`` are unused: the whole video is one sample. ``retain``: every
    window gets the start image as its first known frame (``retain_first_frame``)."""
    from wan22duo.nodes.context_windows import Wan22DuoContextWindows
    from wan22duo.nodes.samplers import Wan22DuoI2VConditioning, Wan22DuoSampler
    from wan22duo.toy import data, text

    step = data.FRAMES - OVERLAP
    length = data.FRAMES + step * extensions
    pos, neg = text.conditioning(caption), text.conditioning("")
    pos, neg, latent = Wan22DuoI2VConditioning().encode(pos, neg, models["vae"], anchor, data.WIDTH, data.HEIGHT,
                                                        length)
    (windows,) = Wan22DuoContextWindows().make(data.FRAMES, 8, "uniform", "pyramid", True, True, retain)
    out = Wan22DuoSampler().sample(models["high"], pos, neg, latent, seed, steps=steps, cfg_high=I2V_CFG,
                                   cfg_low=I2V_CFG, shift=I2V_SHIFT, low_noise_model=models["low"],
                                   context_windows=windows)
    video = _decode(models, out["result"][0])
    return [(video[step * i: step * i + data.FRAMES], OVERLAP) for i in range(1, extensions + 1)]


def _method(chain, match=None):
    return lambda *args: chain(*args, match=match)


# name -> f(models, anchor, caption, seed, extensions, steps, clip0)
#      -> [(decoded clip, frames it repeats)], one per extension
METHODS = {
    "image (decode, re-encode)": _method(chain_image),
    "image + colour match (overlap)": _method(chain_image, "overlap"),
    "image + colour match (anchor)": _method(chain_image, "anchor"),
    "latent (SVI layout)": _method(chain_latent),
    "latent (SVI layout) + colour match (overlap)": _method(chain_latent, "overlap"),
    "latent (SVI layout) + colour match (anchor)": _method(chain_latent, "anchor"),
    "context windows (one video, same length)": windows_video,
    "context windows + retain first frame": lambda *args: windows_video(*args, retain=True),
}


def background(frames):
    """Mean over frames of the per-frame median colour [3] (0-255), the background as toy/score.py finds it."""
    from wan22duo.toy import score

    bg, _, _, _ = score.track(frames)
    return bg.mean(0)


def luma(frames) -> float:
    from wan22duo.toy import score

    f = score.to_uint8_frames(frames)
    return float((0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).mean())


def measure(clip, overlap: int, anchor, caption: str) -> dict:
    from wan22duo.toy import score

    new = clip[overlap:]
    return {"background": float((background(new) - background(anchor)).norm()),
            "brightness": luma(new) - luma(anchor),
            "score": score.score_video(clip, caption).score}


def evaluate(seeds: int, extensions: int, steps: int, weights=None, methods=None, log=print) -> dict:
    """``{method: [per extension {"background", "brightness", "score"} averaged over seeds]}`` plus clip 0."""
    import torch

    from wan22duo.toy import run

    torch.set_num_threads(1)
    methods = methods or METHODS
    models = run.load(weights, task="i2v")
    per_seed = {name: [] for name in [CLIP0] + list(methods)}
    for seed, caption in zip(*run.held_out(seeds)):
        anchor = run.first_frame(seed)
        start = first_clip(models, anchor, caption, seed, steps)
        per_seed[CLIP0].append([measure(start[1], 1, anchor, caption)])
        for name, method in methods.items():
            t0 = time.perf_counter()
            clips = method(models, anchor, caption, seed, extensions, steps, start)
            per_seed[name].append([measure(clip, overlap, anchor, caption) for clip, overlap in clips])
            row = per_seed[name][-1]
            log(f"seed {seed} {name}: background drift " + " ".join(f"{m['background']:.1f}" for m in row) +
                f" ({time.perf_counter() - t0:.0f} s)")
    return {name: [{k: sum(run_[i][k] for run_ in runs) / len(runs) for k in runs[0][i]}
                   for i in range(len(runs[0]))] for name, runs in per_seed.items()}


CLIP0 = "clip 0 (plain I2V)"


def format_tables(results: dict) -> str:
    """One table per measure: a row per method, clip 0 (shared by all) then one column per extension."""
    results = dict(results)
    clip0 = results.pop(CLIP0, None)
    extensions = max(len(v) for v in results.values())
    head = "| method | clip 0 | " + " | ".join(f"ext {i}" for i in range(1, extensions + 1)) + " |"
    rule = "|---|---|" + "---|" * extensions
    out = []
    for key, title, fmt in (("background", "Background drift from the anchor (0-255 RGB distance)", "{:.1f}"),
                            ("brightness", "Brightness drift from the anchor (mean luma, 0-255, signed)", "{:+.1f}"),
                            ("score", "Toy score of each extension's clip (0-1)", "{:.2f}")):
        lines = [f"### {title}", "", head, rule]
        first = fmt.format(clip0[0][key]) if clip0 else ""
        for name, rows in results.items():
            cells = [first] + [fmt.format(r[key]) for r in rows] + [""] * (extensions - len(rows))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


# ---------------------------------------------------------------- host RAM of a chained long video


def long_video_ram(clips: int = 10, frames: int = 81, width: int = 832, height: int = 480, overlap: int = 5,
                   colour_match: bool = True) -> dict:
    """Bytes of host RAM the decoded frames of a chained video hold in ComfyUI, from the tensors the nodes make.

    Per clip: ``Wan22DuoVAEDecode`` streams the decoder one latent frame at a time (its GPU activations do
    not grow with the length) but returns the clip as one float32 IMAGE ``[F, H, W, 3]`` in RAM;
    ``Wan22DuoColorMatch`` returns a matched copy; ``Wan22DuoJoinClips`` returns a new IMAGE of the
    joined length; the latent is 1/48 of the video's float32 pixels (16 channels at 1/8 x 1/8 x 1/4).
    ComfyUI's default (classic) cache keeps every node's output of the last run, so all of them stay
    resident: the clips, the matched clips and every intermediate join. ``floor``: the final video alone
    (what CreateVideo / SaveVideo receive), which any graph that hands the whole video over as one
    IMAGE must hold. ``uncached_peak``: ComfyUI run with ``--cache-none`` (computed from when each output can
    be dropped, not measured in ComfyUI).
    """
    frame = width * height * 3 * 4
    clip_frames = [frames] * clips
    joined = [frames + k * (frames - overlap) for k in range(1, clips)]
    decoded = sum(clip_frames) * frame
    matched = sum(clip_frames[1:]) * frame if colour_match else 0
    joins = sum(joined) * frame
    latent_frames = (frames - 1) // 4 + 1
    # per clip: the extend node's empty LATENT, the sampled LATENT and the conditioning latent
    latents = clips * 16 * latent_frames * (height // 8) * (width // 8) * 4 * 3
    final = (joined[-1] if joined else frames) * frame
    # --cache-none: an output lives until every node reading it has run, so the largest moment is the last
    # join: the previous join, the last clip (and its matched copy) and the new join
    before_last = joined[-2] if len(joined) > 1 else frames
    uncached_peak = (before_last + frames * (2 if colour_match else 1)) * frame + final
    decode_peak = 2 * frames * frame  # the [1, 3, F, H, W] video and its IMAGE copy, alive together at return
    return {"frame": frame, "clip": frames * frame, "decoded": decoded, "matched": matched, "joins": joins,
            "latents": latents, "final": final, "decode_peak": decode_peak, "uncached_peak": uncached_peak,
            "cached_total": decoded + matched + joins + latents,
            "final_frames": joined[-1] if joined else frames}


def per_clip_device_bytes(frames: int = 81, width: int = 832, height: int = 480) -> dict:
    """The engine's own estimates for one clip on the accelerator: they do not grow with the chain.

    ``dit``: one bf16 I2V-A14B forward with CFG, both guidance passes batched as by default
    (``activation_bytes``), on top of the expert's weights;
    ``vae``: a whole-frame fp32 Wan 2.1 decode (``vae_decode_bytes``), one latent frame at a time.
    """
    import torch

    from wan22duo.engine.memory.estimates import activation_bytes, vae_decode_bytes
    from wan22duo.engine.model.dit import WanConfig
    from wan22duo.engine.model.vae.model import VAEConfig

    i2v = WanConfig(dim=5120, ffn_dim=13824, num_layers=40, in_dim=36, out_dim=16)
    latent_frames = (frames - 1) // 4 + 1
    return {"dit": activation_bytes(i2v, latent_frames, height // 8, width // 8, torch.bfloat16, cfg=3.5,
                                  guidance_batch=2),
            "vae": vae_decode_bytes(VAEConfig("2.1", 96, 96, 16), height, width)}


def format_memory(ram: dict, clips: int, frames: int, width: int, height: int) -> str:
    g = lambda n: f"{n / 1024 ** 3:.2f} GiB"  # noqa: E731
    device = per_clip_device_bytes(frames, width, height)
    return (
        f"{clips} chained {frames}-frame {width}x{height} clips ({ram['final_frames']} frames joined), float32 IMAGE "
        f"{ram['frame'] / 1024 ** 2:.2f} MiB per frame, {g(ram['clip'])} per clip:\n\n"
        f"| what | RAM |\n|---|---|\n"
        f"| decoded clips ({clips} x {frames} frames) | {g(ram['decoded'])} |\n"
        f"| colour-matched copies | {g(ram['matched'])} |\n"
        f"| intermediate and final joins | {g(ram['joins'])} |\n"
        f"| latents and conditioning latents | {g(ram['latents'])} |\n"
        f"| **all cached by ComfyUI (classic cache)** | **{g(ram['cached_total'])}** |\n"
        f"| with `--cache-none`: the last join's moment (previous join, last clip, its match, new join) | "
        f"{g(ram['uncached_peak'])} |\n"
        f"| the final video alone (floor for one IMAGE) | {g(ram['final'])} |\n"
        f"| one decode's transient peak (video + IMAGE copy) | {g(ram['decode_peak'])} |\n\n"
        f"Per clip on the accelerator (engine estimates, the same for clip 1 and clip {clips}): DiT activations "
        f"{g(device['dit'])} (bf16, CFG batched) on top of one expert's weights; VAE decode {g(device['vae'])} (fp32, whole "
        "frames, one latent frame at a time)."
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extensions", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weights", type=Path, default=None, help="folder of toy files (default toy/weights)")
    parser.add_argument("--memory", action="store_true", help="print the RAM statement for 10 x 81 frames at 480p")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the tables into this markdown file, replacing what follows its '## Measurements'")
    args = parser.parse_args(argv)
    load_pack()
    if args.memory:
        print(format_memory(long_video_ram(), 10, 81, 832, 480))
        return
    import torch

    results = evaluate(args.seeds, args.extensions, args.steps, args.weights, log=lambda s: print(s, flush=True))
    tables = format_tables(results)
    print(tables)
    if args.out:
        head = "# Drift of chained extensions\n\n"
        if args.out.exists():
            head = args.out.read_text().split("## Measurements")[0]
        weights = args.weights or "toy/weights"
        args.out.write_text(
            f"{head}## Measurements\n\nMeasured by `python bench/drift.py --extensions {args.extensions} --seeds "
            f"{args.seeds} --steps {args.steps}` with the toy files in `{weights}` (torch {torch.__version__}, one CPU "
            f"thread), means over {args.seeds} held-out seeds. On the toy, not on Wan 2.2.\n\n{tables}\n")


if __name__ == "__main__":
    main()
