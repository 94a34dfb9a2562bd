"""Spread a batch of jobs over several ComfyUI servers (used by queue_workflow.py; standard library only).

A batch is every combination of the given seeds, prompts and start images (:func:`make_jobs`).
One thread per server takes the next job from a shared list and runs it (``run_job(server, job)``,
which queues the workflow there, waits for it and downloads the files), so a fast server simply
does more jobs. A server that cannot be reached, or stops answering in the middle of a job
(connection refused or reset, a timeout: an ``OSError``), is taken out of the batch and its job goes
back on the list for another server, up to ``retries`` times. A job that ComfyUI refuses or fails
(``failure_types``, e.g. a validation error), or that raises anything else, is not retried: it
would fail on any server. When no
server is left, the jobs still waiting fail with that reason. :func:`summary` gives one line per
job and one per server.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Job:
    """One video of the batch: its number, and what it changes on the workflow (None: keep the workflow's)."""

    index: int
    seed: Optional[int] = None
    prompt: Optional[str] = None
    image: Optional[Path] = None

    @property
    def label(self) -> str:
        parts = [f"job{self.index:03d}"]
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        if self.image is not None:
            parts.append(self.image.stem)
        return "-".join(parts)


@dataclass
class Outcome:
    job: Job
    server: Optional[str] = None  # where it finally ran (or last failed)
    files: list = field(default_factory=list)
    error: Optional[str] = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_seeds(text: str) -> list:
    """``"1,2,5-8"`` -> [1, 2, 5, 6, 7, 8]; a bad part raises ValueError naming it."""
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ValueError(f"--seeds: {part!r} is not a seed or a range like 5-8") from None
        if first < 0 or last < first:
            raise ValueError(f"--seeds: {part!r} is not a non-negative seed or an increasing range")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError(f"--seeds {text!r} lists no seed; expected e.g. 1,2,5-8")
    return seeds


def read_prompts(path: Path) -> list:
    """One prompt per non-empty line of ``path``."""
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts-file {path} holds no prompt (one per line expected)")
    return prompts


def image_folder(path: Path) -> list:
    """The images in folder ``path`` (by name)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"--images {path} is not a folder")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"--images {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return images


def make_jobs(seeds: Sequence = (None,), prompts: Sequence = (None,), images: Sequence = (None,)) -> list:
    """Every combination of image, prompt and seed, numbered from 1."""
    combos = itertools.product(images or (None,), prompts or (None,), seeds or (None,))
    return [Job(i, seed, prompt, image) for i, (image, prompt, seed) in enumerate(combos, start=1)]


def spread(jobs: Sequence[Job], servers: Sequence[str], run_job: Callable[[str, Job], list], retries: int = 2,
           failure_types: tuple = (), log: Callable[[str], None] = print) -> list:
    """Run ``jobs`` over ``servers`` (see the module doc); the outcomes in job order."""
    outcomes = {job.index: Outcome(job) for job in jobs}
    waiting = list(jobs)
    lock = threading.Condition()
    state = {"running": 0, "servers": len(servers)}

    def take() -> Optional[Job]:
        with lock:
            while not waiting and state["running"]:
                lock.wait()  # a running job may come back if its server dies
            if not waiting:
                return None
            state["running"] += 1
            return waiting.pop(0)

    def worker(server: str) -> None:
        while (job := take()) is not None:
            outcome = outcomes[job.index]
            outcome.attempts += 1
            outcome.server = server
            start = time.monotonic()
            dead = False
            try:
                outcome.files = list(run_job(server, job))
                outcome.error = None
            except failure_types as exc:
                outcome.error = f"failed on {server}: {exc}"
            except OSError as exc:
                dead = True
                outcome.error = f"server {server} stopped answering: {exc}"
            except Exception as exc:  # anything else fails this job only; the batch goes on
                outcome.error = f"failed on {server}: {type(exc).__name__}: {exc}"
            outcome.seconds += time.monotonic() - start
            with lock:
                state["running"] -= 1
                if dead:
                    state["servers"] -= 1
                    if outcome.attempts <= retries and state["servers"]:
                        log(f"[{server}] unreachable ({outcome.error}); {job.label} goes to another server")
                        waiting.insert(0, job)
                    else:
                        log(f"[{server}] unreachable; {job.label} is not retried")
                    if not state["servers"]:
                        for left in waiting:
                            outcomes[left.index].error = "no server left to run it"
                        waiting.clear()
                lock.notify_all()
            if dead:
                return

    threads = [threading.Thread(target=worker, args=(s,), name=f"queue-{s}", daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [outcomes[job.index] for job in jobs]


def summary(outcomes: Sequence[Outcome]) -> list:
    """Lines: one per job (where, how long, what it saved or why not), then one per server, then totals."""
    lines = []
    for o in outcomes:
        what = ", ".join(str(f) for f in o.files) if o.ok else o.error
        tries = f", {o.attempts} attempts" if o.attempts > 1 else ""
        lines.append(f"{o.job.label}: {'ok' if o.ok else 'FAILED'} on {o.server or '-'} ({o.seconds:.1f} s{tries}): "
                     f"{what}")
    servers = sorted({o.server for o in outcomes if o.server})
    for server in servers:
        done = [o for o in outcomes if o.ok and o.server == server]
        lines.append(f"{server}: {len(done)} job(s) done, {sum(o.seconds for o in done):.1f} s")
    ok = sum(o.ok for o in outcomes)
    lines.append(f"{ok} of {len(outcomes)} job(s) done, {len(outcomes) - ok} failed")
    return lines
