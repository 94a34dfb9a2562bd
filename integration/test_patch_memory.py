"""EasyCache-patched MODELs run many times in one process: nothing the cache stores outlives a run.

EasyCache's OUTER_SAMPLE wrapper clones its holder for each run and empties it when the run
ends; the wrappers below it store per-step differences in that clone. This test runs
Wan22DuoModelSampler ``RUNS`` times on the same two EasyCache MODELs and counts, after every run,
the tensor elements held by every live cache holder (the patcher's own included) and the
process's resident memory. The holders' count must stay 0; the RSS figures are printed for
bench/results_model_patches.md (not asserted: memory targets are benchmarks, not tests).
"""
from __future__ import annotations

import gc
import logging

import torch

from test_model_patches import experts, models, ours, result, skipped  # noqa: F401  (experts is a fixture)

RUNS = 10


def held_elements() -> tuple[int, int]:
    """(live EasyCache holders, tensor elements they hold) over every object the GC tracks."""
    holders = [o for o in gc.get_objects() if type(o).__name__ == "EasyCacheHolder"]
    total = 0
    for holder in holders:
        values = [holder.x_prev_subsampled, holder.output_prev_subsampled, holder.output_prev_norm,
                  *holder.uuid_cache_diffs.values(), *getattr(holder, "uuid_cache_diffs_audio", {}).values()]
        total += sum(v.numel() for v in values if isinstance(v, torch.Tensor))
    return len(holders), total


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_easycache_holders_hold_nothing_after_each_of_ten_runs(comfy, experts, caplog, record_property):
    caplog.set_level(logging.INFO)
    pair = [result(comfy.run("EasyCache", model=m, reuse_threshold=0.8, start_percent=0.15, end_percent=0.95,
                             verbose=False))[0] for m in models(comfy, experts)]
    rows = []
    for run in range(RUNS):
        caplog.clear()
        ours(comfy, pair, steps=12)
        gc.collect()
        # The cache was at work (it stored and reused differences) in every run, so "holds nothing" means freed.
        assert sum(s for s, _ in skipped(caplog.records, "EasyCache")) > 0
        rows.append((run + 1, *held_elements(), rss_kib()))
    record_property("runs_holders_elements_rss_kib", rows)
    print("\nrun, live EasyCache holders, tensor elements they hold, RSS KiB")
    for row in rows:
        print(*row, sep=", ")
    assert all(elements == 0 for _, _, elements, _ in rows), rows
    assert len({holders for _, holders, _, _ in rows}) == 1, rows  # no holder left behind per run
