"""scripts/queue_batch.py: a batch spread over several servers, a dead server's job retried elsewhere.

The servers here are functions (``run_job``) that succeed, refuse, or raise ``OSError`` as a
server that stopped answering does; integration/test_server.py runs a batch on two real ComfyUI
servers and one address where nothing listens.
"""
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import queue_batch as qb  # noqa: E402
import queue_workflow as qw  # noqa: E402


class Refused(Exception):
    pass


def test_jobs_are_every_combination_numbered():
    jobs = qb.make_jobs([1, 2], ["a fox", "a cat"], [None])
    assert [(j.index, j.seed, j.prompt) for j in jobs] == [(1, 1, "a fox"), (2, 2, "a fox"), (3, 1, "a cat"),
                                                           (4, 2, "a cat")]
    assert jobs[3].label == "job004-seed2"
    assert qb.parse_seeds("1, 3-5,9") == [1, 3, 4, 5, 9]
    for bad in ("x", "5-3", "-2", " , "):
        with pytest.raises(ValueError, match="--seeds"):
            qb.parse_seeds(bad)


def test_two_servers_share_the_jobs():
    ran = {"a": [], "b": []}

    def run_job(server, job):
        time.sleep(0.02)
        ran[server].append(job.index)
        return [f"{server}/{job.label}.mp4"]

    outcomes = qb.spread(qb.make_jobs(range(8)), ["a", "b"], run_job, log=lambda line: None)
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    assert sorted(ran["a"] + ran["b"]) == list(range(1, 9)) and ran["a"] and ran["b"]
    assert [o.files for o in outcomes] == [[f"{o.server}/{o.job.label}.mp4"] for o in outcomes]
    assert qb.summary(outcomes)[-1] == "8 of 8 job(s) done, 0 failed"


def test_a_server_that_dies_mid_job_gives_its_job_to_another():
    started = threading.Event()

    def run_job(server, job):
        if server == "dying":
            started.set()
            raise ConnectionResetError("connection reset by peer")
        started.wait(5)  # the dying server has taken a job before this one finishes any
        return [f"{job.label}.mp4"]

    logged = []
    outcomes = qb.spread(qb.make_jobs(range(3)), ["dying", "alive"], run_job, log=logged.append)
    assert all(o.ok and o.server == "alive" for o in outcomes)
    assert sorted(o.attempts for o in outcomes) == [1, 1, 2]
    assert any("[dying] unreachable" in line and "goes to another server" in line for line in logged)
    assert any("2 attempts" in line for line in qb.summary(outcomes))


def test_a_refused_job_is_not_retried_and_no_server_left_fails_the_rest():
    def run_job(server, job):
        if job.seed == 0:
            raise Refused("steps: Value 0 smaller than min of 1")
        raise ConnectionRefusedError("connection refused")

    outcomes = qb.spread(qb.make_jobs(range(4)), ["a", "b"], run_job, failure_types=(Refused,),
                         log=lambda line: None)
    assert not any(o.ok for o in outcomes)
    refused = [o for o in outcomes if o.job.seed == 0][0]
    assert refused.attempts == 1 and "smaller than min" in refused.error
    assert any(o.error == "no server left to run it" for o in outcomes)
    assert qb.summary(outcomes)[-1] == "0 of 4 job(s) done, 4 failed"


def test_an_unexpected_error_fails_its_job_only():
    def run_job(server, job):
        if job.seed == 1:
            raise ValueError("not a ComfyUI reply")
        return ["video.mp4"]

    outcomes = qb.spread(qb.make_jobs(range(3)), ["a"], run_job, log=lambda line: None)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error == "failed on a: ValueError: not a ComfyUI reply" and outcomes[1].attempts == 1


def test_the_client_takes_several_servers_and_a_batch(tmp_path, capsys):
    workflow = ROOT / "workflows" / "api" / "t2v_a14b.json"
    args = qw.parse_args([str(workflow), "--server", "http://a:1", "--server", "http://b:2"])
    assert args.servers == ["http://a:1", "http://b:2"] and qw.is_batch(args)
    assert not qw.is_batch(qw.parse_args([str(workflow)]))
    assert qw.main([str(workflow), "--seeds", "3-4", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == ["job001-seed3: seed 3, prompt None, image None",
                                                    "job002-seed4: seed 4, prompt None, image None"]
    assert qw.main([str(workflow), "--images", str(tmp_path), "--dry-run"]) == 2
    assert "holds no image" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"")
    assert qw.main([str(workflow), "--images", str(tmp_path), "--dry-run"]) == 2
    assert "takes no start image" in capsys.readouterr().err
