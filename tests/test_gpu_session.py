"""bench/gpu_session.sh, the one command a lent GPU session runs, end to end at tiny shapes on CPU."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(out, *extra, **env):
    return subprocess.run(["bash", "bench/gpu_session.sh", str(out), *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable,
                                                       "OMP_NUM_THREADS": "1", **env})


def test_tiny_session_runs_both_parts_and_writes_their_tables(tmp_path):
    done = run(tmp_path, "--tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    env = (tmp_path / "env.txt").read_text()
    assert "gpu_memory: exit 0" in env and "gpu_suite: exit 0" in env
    memory = (tmp_path / "gpu_memory.md").read_text()
    assert "= resident |" in memory and "DIFFERS" not in memory  # streamed rows equal resident bit for bit
    assert "| a14b |" in memory and "| ti2v_5b |" in memory
    assert "DiT step speed suite" in (tmp_path / "gpu_suite.md").read_text()


def test_a_part_that_fails_or_overruns_fails_the_session(tmp_path):
    done = run(tmp_path, "--tiny", PART1_S="0.3")  # bench_gpu_memory cannot even import torch in 0.3 s
    assert done.returncode == 1
    assert "gpu_memory: exit 124" in (tmp_path / "env.txt").read_text()
    assert "gpu_suite: exit 0" in (tmp_path / "env.txt").read_text()  # the next part still ran
