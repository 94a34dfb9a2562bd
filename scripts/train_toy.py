"""Train the toy Wan 2.2 MoE (VAE, T2V and I2V experts) on synthetic clips and write toy/weights/.

    python scripts/train_toy.py [--stage all|vae|latents|t2v_high|t2v_low|i2v_high|i2v_low] [--threads 1]

About 70 minutes on two CPU cores (two expert stages at once, one per core); seeded. See toy/build.py.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packpath import load_pack  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("all", "vae", "latents", "t2v_high", "t2v_low", "i2v_high", "i2v_low"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-checkpoint", type=Path, default=None,
                        help="save the VAE's state dict here as it trains (to stop and resume)")
    parser.add_argument("--vae-image-state", type=Path, default=None,
                        help="skip the VAE's image stage, starting the video stage from this saved state dict")
    args = parser.parse_args(argv)
    load_pack()
    import torch

    from wan22duo.toy import build

    torch.set_num_threads(args.threads)
    if args.stage in ("all", "vae"):
        build.train_vae_stage(lambda m: print(m, flush=True), args.vae_checkpoint, args.vae_image_state)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if args.stage == "latents":
        build.latents_stage(log)
    if args.stage not in ("vae", "latents"):
        every = ("t2v_high", "t2v_low", "i2v_high", "i2v_low")
        build.train_experts_stage(every if args.stage == "all" else (args.stage,), log)


if __name__ == "__main__":
    main()
