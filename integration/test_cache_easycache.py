"""bench/cache_easycache.py in a real ComfyUI: its pass counter counts what each cache really skipped.

Untrained toy files (no trained toy needed for the plumbing): at threshold 0 both caches leave the run
as it was (no pass saved, distance 0); at a large threshold both save passes, ours exactly the ones its
report names (``measure`` raises otherwise), and the equal-calls pairing finds an EasyCache row.
"""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="module")
def bench(comfy):
    from packpath import load_pack

    load_pack()
    import cache_easycache

    return cache_easycache


def test_passes_saved_and_distances_of_both_caches(comfy, bench, tmp_path):
    from wan22duo.toy import build, dit
    from wan22duo.toy import vae as toy_vae

    build.save(dit.new_model(seed=1), "t2v_high", "untrained", tmp_path)
    build.save(dit.new_model(seed=2), "t2v_low", "untrained", tmp_path)
    build.save(toy_vae.new_vae(base_dim=4), "vae", "untrained", tmp_path)
    target = bench.Comfy.attach(comfy.nodes, comfy.folder_paths)
    # the bench adds tmp_path to ComfyUI's model folders (process-wide); take it out again for later tests
    folders = comfy.folder_paths.folder_names_and_paths["diffusion_models"][0]
    before = list(folders)
    try:
        rows = bench.measure(target, "t2v", [10], [0.0, 50.0], [0.0, 3.0], clips=1, weights=tmp_path, log=print)
    finally:
        folders[:] = before
    by = {(r.task, r.threshold): r for r in rows}
    full = 2 * 10  # cfg 4 and 3: two passes per step
    for key in (("t2v ours", 0.0), ("t2v EasyCache", 0.0)):
        r = by[key]
        assert (r.calls, r.calls_full, r.reused_steps, r.rel_l2, r.pixel_rms) == (full, full, 0, 0.0, 0.0), key
    ours, easy = by["t2v ours", 50.0], by["t2v EasyCache", 3.0]
    assert ours.reused_steps > 0 and ours.calls == full - 2 * ours.reused_steps and ours.rel_l2 > 0
    assert easy.reused_steps > 0 and easy.calls == full - 2 * easy.reused_steps and easy.rel_l2 > 0
    paired = {a.threshold: b.threshold for a, b in bench.pairs(rows)}
    assert paired[0.0] == 0.0 and paired[50.0] == 3.0
