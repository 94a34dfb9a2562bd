"""Frame strips of the trained toy model's output for the template cards: ``workflows/thumbnails/<name>.png``.

    python scripts/toy_strips.py            # render every strip again (about 30 s of CPU per strip)
    python scripts/toy_strips.py --check    # exit 1 if a strip is missing or was made from other toy weights

Each T2V-A14B card gets a strip from the T2V toy, each I2V-A14B card one from the I2V toy (toy/weights,
toy/run.py); the TI2V-5B cards get none (there is no 5B toy). The toy is a Wan 2.2-layout MoE trained here
on 64x64 clips of one coloured shape (toy/data.py): the strips show what the pack's sampler makes of a
trained MoE, they are not Wan 2.2's output, and the card says so. Every strip is one run at the demo's
settings (``scripts/demo.py``: UniPC, 20 steps, shift 12 for T2V and 5 for I2V, the official switch rule,
I2V's start image drawn by the toy's renderer), with its own caption so the cards differ.

Why committed PNGs: sampling takes seconds to minutes per strip on a CPU and float kernels differ between
machines, so ``build_workflows.py`` stays fast and deterministic by composing these files
(``workflow_thumbnails.py``) instead of sampling. ``strips.json`` records each strip's task, caption, seed,
settings, frame numbers, toy score and the SHA-256 of the toy files it came from; the tests check the
strips against it and the committed weights, re-render one strip and compare, and check that each card's
strip region is this PNG. After retraining the toy, run this script and then ``build_workflows.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent
STRIPS = ROOT / "workflows" / "thumbnails"
MANIFEST = STRIPS / "strips.json"
FRAME_COUNT = 5  # frames per strip, evenly spaced over the clip (0, 4, 8, 12, 16 of 17)
STEPS = 20  # the demo's settings (scripts/demo.py)
SAMPLER = "unipc"
CFG = {"t2v": (4.0, 3.0), "i2v": (3.5, 3.5)}  # (high, low): the official defaults per task, as the demo


class Strip(NamedTuple):
    name: str  # the workflow (template_cards.Card.name)
    task: str  # "t2v" or "i2v": which toy
    caption: str
    seed: int = 0


SPECS = (
    Strip("t2v_a14b", "t2v", "a red disc moves right over a gray background"),
    Strip("t2v_a14b_lightning", "t2v", "a yellow square moves left over a black background"),
    Strip("t2v_a14b_lightning_3stage", "t2v", "a blue disc moves down over a white background"),
    Strip("t2v_a14b_long_windows", "t2v", "a green square moves up over a gray background"),
    Strip("t2v_a14b_native", "t2v", "a blue square moves right over a black background"),
    Strip("t2v_a14b_gguf", "t2v", "a yellow disc moves left over a white background"),
    Strip("i2v_a14b", "i2v", "a red disc moves right over a gray background"),
    Strip("i2v_a14b_first_last", "i2v", "a green disc moves down over a black background"),
    Strip("i2v_a14b_extend", "i2v", "a blue square moves left over a white background"),
    Strip("i2v_a14b_svi", "i2v", "a yellow square moves up over a gray background"),
    Strip("i2v_a14b_native", "i2v", "a red square moves right over a white background"),
    Strip("i2v_a14b_svi_disk", "i2v", "a green disc moves left over a gray background"),
)


def spec(name: str) -> Optional[Strip]:
    """The strip of workflow ``name``, or None (TI2V-5B: no toy)."""
    return next((s for s in SPECS if s.name == name), None)


def strip_path(name: str) -> Path:
    return STRIPS / f"{name}.png"


def weight_files(task: str) -> dict:
    """{role: file name} of the toy files a ``task`` strip is made from."""
    from packpath import load_pack

    load_pack()
    from wan22duo.toy.build import FILES

    return {"high": FILES[f"{task}_high"], "low": FILES[f"{task}_low"], "vae": FILES["vae"]}


def committed_sums() -> dict:
    """{file name: sha256} from toy/weights/SHA256SUMS."""
    lines = (ROOT / "toy" / "weights" / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {name.strip(): digest for digest, name in (line.split(None, 1) for line in lines if line.strip())}


def pixels_sha256(path: Path) -> str:
    """SHA-256 of a PNG's decoded RGB pixels and size (not its bytes, which vary with the zlib build)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def frame_numbers(frames: int) -> list:
    return [round(i * (frames - 1) / (FRAME_COUNT - 1)) for i in range(FRAME_COUNT)]


def render(s: Strip, models: dict):
    """(strip as a Pillow image ``FRAME_COUNT`` frames wide, frame numbers, toy score) for strip ``s``."""
    import torch
    from PIL import Image
    from wan22duo.toy import run, score

    cfg_high, cfg_low = CFG[s.task]
    options = {"start_image": run.start_frame_for(s.caption, s.seed)} if s.task == "i2v" else {}
    images, _ = run.generate(models, s.caption, seed=s.seed, steps=STEPS, sampler=SAMPLER,
                             cfg_high=cfg_high, cfg_low=cfg_low, **options)
    picks = frame_numbers(images.shape[0])
    strip = torch.cat([images[i] for i in picks], dim=1)
    image = Image.fromarray((strip.clamp(0, 1) * 255).round().byte().numpy())
    return image, picks, score.score_video(images, s.caption)


def check() -> list:
    """Problems with the committed strips: missing, edited, or made from toy files other than the committed ones."""
    problems = []
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.is_file() else {}
    sums = committed_sums()
    for s in SPECS:
        entry = manifest.get(s.name)
        path = strip_path(s.name)
        if entry is None or not path.is_file():
            problems.append(f"{path.relative_to(ROOT)}: missing (or not in strips.json)")
            continue
        if (entry["task"], entry["caption"], entry["seed"]) != (s.task, s.caption, s.seed):
            problems.append(f"{s.name}: strips.json has {entry['task']} {entry['caption']!r} seed {entry['seed']}")
        if pixels_sha256(path) != entry["pixels_sha256"]:
            problems.append(f"{path.relative_to(ROOT)}: pixels differ from strips.json")
        for role, file in weight_files(s.task).items():
            if entry["weights"].get(file) != sums.get(file):
                problems.append(f"{s.name}: made from {file} {str(entry['weights'].get(file))[:12]}, "
                                f"committed {str(sums.get(file))[:12]} (the toy was retrained)")
    extra = sorted(set(manifest) - {s.name for s in SPECS})
    problems += [f"strips.json: {name} is no card's strip" for name in extra]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--check", action="store_true", help="only check the committed strips")
    parser.add_argument("--only", default="", help="comma-separated workflow names to render (default: all)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    if args.check:
        problems = check()
        print("\n".join(problems) if problems else "toy strips up to date")
        return 1 if problems else 0
    from packpath import load_pack

    load_pack()
    import torch
    from wan22duo.toy import run

    torch.manual_seed(0)
    only = {n for n in args.only.split(",") if n}
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.is_file() else {}
    sums = committed_sums()
    STRIPS.mkdir(parents=True, exist_ok=True)
    for task in ("t2v", "i2v"):
        todo = [s for s in SPECS if s.task == task and (not only or s.name in only)]
        if not todo:
            continue
        models = run.load(task=task)
        for s in todo:
            image, picks, result = render(s, models)
            path = strip_path(s.name)
            image.save(path, optimize=True)
            manifest[s.name] = {
                "task": s.task, "caption": s.caption, "seed": s.seed, "steps": STEPS, "sampler": SAMPLER,
                "cfg": list(CFG[s.task]), "frames": picks, "size": f"{image.width}x{image.height}",
                "score": result.line(), "weights": {f: sums[f] for f in weight_files(task).values()},
                "pixels_sha256": pixels_sha256(path),
            }
            print(f"{path.relative_to(ROOT)}: {s.caption!r} -> toy quality {result.line()}")
    manifest = {s.name: manifest[s.name] for s in SPECS if s.name in manifest}
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
