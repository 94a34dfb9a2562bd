"""Run the pack's nodes end to end without ComfyUI and without downloads.

    python scripts/demo.py [--out output] [--caption "a red disc moves right over a gray background"] [--strip]
    python scripts/demo.py --random-weights [--steps 8] [--gif]

By default it samples the toy Wan 2.2 MoE trained here (toy/weights: I2V-A14B- and T2V-A14B-layout
high- and low-noise experts and a Wan 2.1-layout VAE, see toy/build.py) through the same node classes
ComfyUI would call: Wan22DuoExpertLoader x2 -> Wan22DuoI2VConditioning (the caption's shape drawn by
the toy's renderer as the start image) -> Wan22DuoSampler (both experts, the official switch rule) ->
Wan22DuoVAEDecode, with the caption through the toy text encoder. It saves the frames as an animated
WebP and prints the toy quality score of the video against its caption. --task t2v runs the T2V toy
(Wan22DuoEmptyLatent instead of a start image): the shape appears mid-frame and moves as captioned.
The toy knows one small world (a coloured disc or square moving over a plain background); it is a
demo and a yardstick, not Wan 2.2.

--random-weights keeps the plumbing check: tiny *random-weight* checkpoints written to a temporary
folder, random tensors of the umT5-XXL shape as prompts, the same nodes; the video is noise.
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

FPS = 16  # T2V-A14B's official frame rate


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "output", help="folder for the video (default: output/)")
    parser.add_argument("--caption", default=None,
                        help='toy caption (default "a red disc moves right over a gray background")')
    parser.add_argument("--random-weights", action="store_true",
                        help="tiny random-weight models instead of the toy (a plumbing check: the video is noise)")
    parser.add_argument("--toy", action="store_true", help="sample the trained toy model (the default)")
    parser.add_argument("--task", choices=("i2v", "t2v"), default="i2v",
                        help="toy I2V (default: the caption's shape drawn as the start image, animated by the I2V "
                             "experts) or T2V (text only: the T2V toy draws the shape mid-frame and moves it, see "
                             "bench/results_quality.md)")
    parser.add_argument("--toy-weights", type=Path, default=None, help="folder of toy files (default toy/weights)")
    parser.add_argument("--width", type=int, default=None, help="multiple of 16 (the toy's default 64; random 96)")
    parser.add_argument("--height", type=int, default=64, help="multiple of 16 (default 64)")
    parser.add_argument("--frames", type=int, default=None, help="4n+1 (the toy's default 17; random 13)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps over both experts (toy 20; random 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gif", action="store_true", help="also write a GIF")
    parser.add_argument("--strip", action="store_true", help="also write a PNG strip of 6 frames side by side")
    return parser.parse_args(argv)


def random_prompt(tokens: int, seed: int):
    """A CONDITIONING like CLIPTextEncode's, holding random umT5-shaped states instead of a real prompt."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=generator), {}]]


def save_video(images, path: Path, fps: int = FPS) -> Path:
    """IMAGE ``[frames, H, W, 3]`` in [0, 1] -> animated WebP or GIF (chosen by the suffix)."""
    from PIL import Image

    frames = [Image.fromarray((f.clamp(0, 1) * 255).round().byte().numpy()) for f in images]
    extra = {"lossless": False, "quality": 80} if path.suffix == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0, **extra)
    return path


def save_strip(images, path: Path, count: int = 6) -> Path:
    """``count`` evenly spaced frames of IMAGE ``[frames, H, W, 3]`` side by side, as a PNG."""
    import torch
    from PIL import Image

    picks = torch.linspace(0, images.shape[0] - 1, count).round().long()
    strip = torch.cat([images[i] for i in picks], dim=1)
    Image.fromarray((strip.clamp(0, 1) * 255).round().byte().numpy()).save(path)
    return path


def write_models(folder: Path) -> dict:
    from wan22duo.engine.testing.tiny import write_tiny_dit
    from wan22duo.engine.testing.tiny_vae import write_tiny_vae

    return {
        "high": write_tiny_dit(folder / "tiny_t2v_high_noise.safetensors", "t2v_a14b", seed=1),
        "low": write_tiny_dit(folder / "tiny_t2v_low_noise.safetensors", "t2v_a14b", seed=2),
        "vae": write_tiny_vae(folder / "tiny_wan_2.1_vae.safetensors", "2.1"),
    }


def make_out_folder(out: Path) -> None:
    """``--out`` as a folder; one that cannot be one (it or a parent is a regular file) stops with one line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise SystemExit(f"error: --out {out}: cannot make this folder ({why}); give a folder path") from None


def run_toy(args) -> tuple[list[Path], object]:
    """Sample the trained toy, save the video and print its score; returns (files, Score)."""
    from wan22duo.toy import run, score

    caption = args.caption or run.DEFAULT_CAPTION
    i2v = args.task == "i2v"
    print(f"Wan 2.2 Duo demo: the toy Wan 2.2 MoE, {args.task.upper()} ({args.toy_weights or 'toy/weights'}), "
          f"caption {caption!r}")
    start = time.perf_counter()
    models = run.load(args.toy_weights, task=args.task)
    print(f"loaded {models['high']!r}\n       {models['low']!r}")
    options = {"cfg_high": 3.5, "cfg_low": 3.5, "start_image": run.start_frame_for(caption, args.seed)} if i2v else {}
    if i2v:
        print("start image: the caption's shape drawn at its start by the toy's renderer; the I2V experts animate it")
    images, switch_step = run.generate(models, caption, seed=args.seed, steps=args.steps,
                                       width=args.width, height=args.height, frames=args.frames, **options)
    print(f"sampled {args.steps} steps at shift {5 if i2v else 12}: high-noise steps 1-{switch_step}, "
          f"low-noise steps {switch_step + 1}-{args.steps}")
    make_out_folder(args.out)
    stem = f"demo_{args.task}"
    written = [save_video(images, args.out / f"{stem}.webp")]
    if args.gif:
        written.append(save_video(images, args.out / f"{stem}.gif"))
    if args.strip:
        written.append(save_strip(images, args.out / f"{stem}_strip.png"))
    print(f"decoded {images.shape[0]} frames of {images.shape[2]}x{images.shape[1]}; wrote "
          + ", ".join(str(p) for p in written) + f" in {time.perf_counter() - start:.1f} s")
    result = score.score_video(images, caption)
    print("toy quality " + result.line())
    return written, result


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    load_pack()
    if args.toy and args.random_weights:
        raise SystemExit("error: --toy and --random-weights exclude each other; give one")
    args.toy = not args.random_weights
    if args.toy:
        from wan22duo.toy import data

        defaults = {"width": data.WIDTH, "frames": data.FRAMES, "steps": 20}
    else:
        defaults = {"width": 96, "frames": 13, "steps": 8}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.toy:
        return run_toy(args)[0]
    from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoVAELoader
    from wan22duo.nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoSampler
    from wan22duo.nodes.vae import Wan22DuoVAEDecode

    print("Wan 2.2 Duo demo: tiny RANDOM weights, so the video will be noise (this checks the plumbing).")
    start = time.perf_counter()
    make_out_folder(args.out)
    with tempfile.TemporaryDirectory(prefix="wan22duo_demo_") as tmp:
        files = write_models(Path(tmp))
        print(f"wrote random checkpoints to {tmp}")
        (high,) = Wan22DuoExpertLoader().load(str(files["high"]), "auto", "default", "auto", "cpu")
        (low,) = Wan22DuoExpertLoader().load(str(files["low"]), "auto", "default", "auto", "cpu")
        vae_out = Wan22DuoVAELoader().load(str(files["vae"]), "fp32", "cpu")
        (vae,) = vae_out["result"]
        print(f"loaded {high!r}\n       {low!r}\n       {vae_out['ui']['text'][0]}")
        (latent,) = Wan22DuoEmptyLatent().generate(args.width, args.height, args.frames, 1)
        print("prompts: random tensors shaped like umT5-XXL output [1, tokens, 4096] (no text encoder here)")
        out = Wan22DuoSampler().sample(high, random_prompt(12, 1), random_prompt(20, 2), latent, args.seed,
                                       steps=args.steps, low_noise_model=low)
        sampled, switch_step = out["result"]
        print(f"sampled {args.steps} steps at shift 12: high-noise steps 1-{switch_step}, "
              f"low-noise steps {switch_step + 1}-{args.steps}; latent {tuple(sampled['samples'].shape)}")
        (images,) = Wan22DuoVAEDecode().decode(vae, sampled, 0, 64)
    written = [save_video(images, args.out / "demo_t2v.webp")]
    if args.gif:
        written.append(save_video(images, args.out / "demo_t2v.gif"))
    print(f"decoded {images.shape[0]} frames of {images.shape[2]}x{images.shape[1]}; wrote "
          + ", ".join(str(p) for p in written) + f" in {time.perf_counter() - start:.1f} s")
    return written


if __name__ == "__main__":
    main()
