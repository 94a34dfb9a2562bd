"""The committed toy weights (toy/weights): the files match their checksums, fit the size budget, load
through the pack's loaders, and the demo's default run makes a video that passes the toy score.

These check the trained toy, the yardstick of issue 21 (a small T2V-/I2V-A14B-layout MoE trained on
synthetic clips, never Wan 2.2). ``toy/build.py`` writes the files and ``SHA256SUMS``.
"""
import hashlib

import pytest

from wan22duo.toy import build, data, run, score

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_committed_toy_files_match_their_sha256_and_fit_the_budget():
    listed = {}
    for line in (build.WEIGHTS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        listed[name] = digest
    assert set(listed) == set(build.FILES.values()), "SHA256SUMS must list exactly the toy's files"
    total = 0
    for name, digest in listed.items():
        blob = (build.WEIGHTS / name).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == digest, f"{name} differs from its SHA256SUMS entry"
        total += len(blob)
    assert total <= 40 * 1024 * 1024, f"toy weights take {total} bytes; the budget is 40 MB"


def test_committed_vae_reconstructs_held_out_clips():
    psnr = build.vae_psnr(build.HELD_OUT_VAE[:3])
    # the training log states the mean over 12 held-out clips; three of them stay well above noise level
    assert min(psnr) > 22.0, psnr


def test_demo_default_run_passes_the_toy_score(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import demo

    assert demo.main(["--out", str(tmp_path)]) == [tmp_path / "demo_i2v.webp"]
    printed = capsys.readouterr().out
    assert "start image" in printed and "toy quality score" in printed
    assert "(PASS)" in printed, printed


def test_i2v_toy_follows_held_out_captions():
    models = run.load(task="i2v")
    results = []
    for i in range(3):
        seed = data.HELD_OUT_SEED + 5 * i
        caption = data.draw_clip(seed).caption
        images, _ = run.generate(models, caption, seed=seed, steps=20, cfg_high=3.5, cfg_low=3.5,
                                 start_image=run.first_frame(seed))
        results.append(score.score_video(images, caption))
    assert all(r.direction_ok and r.colour_ok for r in results), [r.line() for r in results]


def test_t2v_toy_follows_held_out_captions():
    models = run.load()
    results, switches = [], []
    for seed, caption in zip(*run.held_out(3)):
        images, switch_step = run.generate(models, caption, seed=seed, steps=20)
        results.append(score.score_video(images, caption))
        switches.append(switch_step)
    assert all(r.ok for r in results), [r.line() for r in results]
    assert all(0 < s < 20 for s in switches)  # shift 12, 20 steps, boundary 0.875: both experts run


def test_swapped_experts_score_below_the_real_pair():
    seed = data.HELD_OUT_SEED + 5
    clip = data.draw_clip(seed)
    options = dict(seed=seed, steps=20, cfg_high=3.5, cfg_low=3.5, start_image=run.first_frame(seed))
    right = score.score_video(run.generate(run.load(task="i2v"), clip.caption, **options)[0], clip.caption)
    swapped = score.score_video(run.generate(run.load(task="i2v", swap_experts=True), clip.caption, **options)[0],
                                clip.caption)
    assert right.ok and swapped.score < right.score, (right.line(), swapped.line())
