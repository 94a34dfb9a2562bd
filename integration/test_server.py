"""Every bundled API workflow, queued over HTTP on a real ComfyUI server started from the copied tree.

The server is ``python main.py --cpu --listen 127.0.0.1 --port <free port>`` in the tree the
``comfy_tree`` fixture made (this pack, ComfyUI-GGUF and the test-only nodes installed); it is stopped
by its PID when the session ends, whatever the tests did. Each workflow in ``workflows/api/*.json``
(a glob: workflows added later are picked up) is prepared by :mod:`workflow_prep` before queuing:

* tiny random-weight files are written under the exact names its loaders and LoadImage ask for, with
  the pack's writers (:mod:`tiny_models`); a loader the suite cannot write for fails the test with
  the node and file named;
* the text encoder is replaced: ``CLIPLoader(type="wan")`` always builds the full umT5-XXL (5.7B
  parameters) whatever the file holds, so no tiny one can exist; each ``CLIPTextEncode`` becomes the
  test-only ``Wan22DuoTestConditioning`` with the same prompt text, which returns a CONDITIONING shaped
  as umT5's (``[1, 512, 4096]``, zero past the prompt);
* sizes become 96 x 64 pixels and 5 frames; each Duo sampler runs 4 steps (more only if needed so
  that the experts still switch inside the run), with the bundled schedule, solver, shift, boundary,
  CFG, seed and memory policy.

Checks per workflow: the prompt validates and its /history status is success; every saved video is
on disk and decodes to 96 x 64 frames, as many as the graph makes (5 a clip; joined clips less the
overlap); each Duo sampler's ``ui.wan22duo_switch`` report equals
``engine.sampling.loop.plan_switch`` for the settings queued (switch step, steps, boundary, sigmas,
timesteps), and for A14B the switch falls inside the run. The graphs of :mod:`native_graphs`
(ComfyUI's own loaders and samplers only) run the same way, checked for success and the video.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import native_graphs
import tiny_models
import workflow_prep as prep
from comfy_server import start_server

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))
RUN_TIMEOUT_S = 600.0
REQUIRED_NODES = ("Wan22DuoSampler", prep.CONDITIONING_NODE, "UnetLoaderGGUF")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")


def _graphs() -> dict:
    graphs = {f"workflows/api/{path.name}": json.loads(path.read_text()) for path in WORKFLOWS}
    graphs.update({f"native_graphs.{name}": build() for name, build in native_graphs.GRAPHS.items()})
    return graphs


def _queue_client_module():
    spec = importlib.util.spec_from_file_location("wan22duo_queue_workflow", REPO / "scripts" / "queue_workflow.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def engine_sampling():
    return tiny_models.pack_module("engine.sampling.loop")


@pytest.fixture(scope="session")
def prepared_files(comfy_tree, tmp_path_factory) -> dict:
    """Write every file all graphs need (once each); returns graph name -> why it cannot run (if it cannot)."""
    problems, users, specs = {}, {}, {}
    for name, api in _graphs().items():
        try:
            for spec in prep.needed_files(api):
                key = (spec.folder, spec.name)
                specs[key] = specs[key].merged(spec) if key in specs else spec
                users.setdefault(key, []).append(name)
        except prep.WorkflowPrepError as exc:
            problems[name] = str(exc)
    scratch = tmp_path_factory.mktemp("tiny_scratch")
    for key, spec in sorted(specs.items()):
        try:
            prep.write_file(comfy_tree, spec, scratch)
        except tiny_models.NoWriterError as exc:
            for name in users[key]:
                problems.setdefault(name, str(exc))
    return problems


@pytest.fixture(scope="session")
def server(comfy_tree, tmp_path_factory, prepared_files):
    log_path = tmp_path_factory.mktemp("comfy_server") / "server.log"
    running = start_server(comfy_tree.root, log_path, REQUIRED_NODES)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server):
    module = _queue_client_module()
    return module, module.ComfyClient(server.url, timeout=30.0, log=lambda line: None)


def _run(name: str, api: dict, server, client, prepared_files, engine_sampling, comfy_tree):
    """Queue the prepared ``api``; returns (queued graph, its /history entry, the saved video paths)."""
    if name in prepared_files:
        pytest.fail(f"{name}: {prepared_files[name]}")
    queue_module, http = client
    queued = prep.shrink(api, engine_sampling)
    try:
        prompt_id = http.queue(queued)
    except queue_module.ComfyError as exc:
        pytest.fail(f"{name} was refused by /prompt:\n{exc}\n--- server log ---\n{server.log_tail()}")
    entry = http.wait_polling(prompt_id, interval=0.5, timeout=RUN_TIMEOUT_S)
    failure = queue_module.history_failure(entry)
    assert failure is None, f"{name}: {failure}\n--- server log ---\n{server.log_tail()}"
    status = entry.get("status") or {}
    assert status.get("status_str") == "success" and status.get("completed"), f"{name}: /history status {status}"
    videos = []
    for node_id, node_output in (entry.get("outputs") or {}).items():
        for value in node_output.values():
            for record in value if isinstance(value, list) else []:
                if isinstance(record, dict) and record.get("type") == "output" and \
                        str(record.get("filename", "")).lower().endswith(VIDEO_SUFFIXES):
                    path = comfy_tree.root / "output" / record.get("subfolder", "") / record["filename"]
                    _check_video(path, prep.expected_frames(queued, node_id))
                    videos.append(path)
    assert videos, f"{name}: no video among the outputs {entry.get('outputs')}"
    return queued, entry, videos


def _check_video(path: Path, expected_frames) -> None:
    import av

    assert path.is_file() and path.stat().st_size > 0, f"{path} is missing or empty"
    assert expected_frames is not None, f"{path.name}: workflow_prep.expected_frames finds no clip length upstream"
    with av.open(str(path)) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == expected_frames, f"{path.name}: {len(frames)} frames, expected {expected_frames}"
    assert (frames[0].width, frames[0].height) == (prep.WIDTH, prep.HEIGHT), \
        f"{path.name}: {frames[0].width}x{frames[0].height}, expected {prep.WIDTH}x{prep.HEIGHT}"


def _check_switch(name: str, queued: dict, entry: dict, expected) -> dict:
    reports = (entry.get("outputs") or {}).get(expected.node_id, {}).get("wan22duo_switch")
    if not reports or len(reports) != 1:
        events = [m[0] + (f" {m[1].get('nodes')}" if m[0] == "execution_cached" else "")
                  for m in (entry.get("status") or {}).get("messages", [])]
        pytest.fail(f"{name}: node {expected.node_id} reported {reports!r} as wan22duo_switch; outputs of nodes "
                    f"{sorted((entry.get('outputs') or {}))}, events {events}")
    report = reports[0]
    plan = expected.plan
    inputs = queued[expected.node_id]["inputs"]
    if "shift" in report:  # the MODEL sampler names the shift it used (its own, a ModelSamplingSD3's or official)
        assert report["shift"] == pytest.approx(expected.shift, abs=1e-9), \
            f"{name}: the sampler reports shift {report['shift']}, the rule gives {expected.shift}"
    where = f"{name} node {expected.node_id}"
    assert report["steps"] == plan.schedule.steps == inputs["steps"], f"{where}: {report['steps']} steps reported"
    assert report["switch_step"] == plan.switch_step, \
        f"{where}: switch reported after step {report['switch_step']}, plan_switch says {plan.switch_step}"
    if plan.boundary is None:
        assert report["boundary"] is None, f"{where}: TI2V-5B reported boundary {report['boundary']}"
    else:
        assert report["boundary"] == pytest.approx(plan.boundary, abs=1e-12)
    assert report["sigmas"] == pytest.approx([float(s) for s in plan.schedule.sigmas], abs=1e-6), where
    assert report["timesteps"] == pytest.approx([float(t) for t in plan.schedule.timesteps], abs=1e-4), where
    lead = inputs.get("lead_phases")
    if prep.is_link(lead):  # a phase plan: the leading phases, then the experts, split where the plan says
        counts = prep.lead_steps(queued, lead)
        starts = [sum(counts[:n]) for n in range(len(counts) + 1)]
        want = [{"role": f"lead{n + 1}", "start": starts[n], "stop": starts[n + 1]} for n in range(len(counts))]
        want += [{"role": "high", "start": starts[-1], "stop": plan.switch_step},
                 {"role": "low", "start": plan.switch_step, "stop": plan.schedule.steps}]
        got = [{k: s[k] for k in ("role", "start", "stop")} for s in report.get("stages", [])]
        assert got == [s for s in want if s["stop"] > s["start"]], f"{where}: stages {got}"
    if prep.is_link(inputs.get("context_windows")):  # the short video still runs in several windows per step
        windows = report.get("context_windows") or {}
        assert windows.get("latent_frames") == (prep.WINDOWED_LENGTH - 1) // 4 + 1, f"{where}: windows {windows}"
        assert windows.get("windows_per_step", 0) >= 2 and windows.get("length") == (prep.WINDOW_LENGTH - 1) // 4 + 1, \
            f"{where}: windows {windows}"
    return report


def test_workflows_are_found():
    assert WORKFLOWS, f"no API workflows in {REPO / 'workflows' / 'api'}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_bundled_workflow_runs_on_the_server(workflow, server, client, prepared_files, engine_sampling, comfy_tree):
    name = f"workflows/api/{workflow.name}"
    api = json.loads(workflow.read_text())
    queued, entry, _ = _run(name, api, server, client, prepared_files, engine_sampling, comfy_tree)
    expectations = prep.expected_switches(queued, engine_sampling)
    assert expectations, f"{name} has no Wan22Duo sampler"
    for expected in expectations:
        report = _check_switch(name, queued, entry, expected)
        if expected.variant != "ti2v_5b" and queued[expected.node_id]["inputs"]["switch_step"] == -1:
            steps = report["steps"]
            assert 0 < report["switch_step"] < steps, f"{name}: the experts did not switch inside {steps} steps"


@pytest.mark.parametrize("graph", sorted(native_graphs.GRAPHS))
def test_native_graph_runs_on_the_server(graph, server, client, prepared_files, engine_sampling, comfy_tree):
    name = f"native_graphs.{graph}"
    _run(name, native_graphs.GRAPHS[graph](), server, client, prepared_files, engine_sampling, comfy_tree)


def test_server_runs_the_copied_tree(server, comfy_tree):
    """The server runs main.py of the copy (not of the read-only source) with this pack loaded from it."""
    cwd = Path(f"/proc/{server.pid}/cwd")
    if cwd.exists():
        assert cwd.resolve() == comfy_tree.root.resolve()
    info = server.get_json("/object_info/Wan22DuoSampler")["Wan22DuoSampler"]
    assert info["python_module"] == f"custom_nodes.{comfy_tree.pack.name}"


def test_t2v_on_two_parallel_workers_runs_on_the_server(server, client, prepared_files, engine_sampling, comfy_tree):
    """The bundled T2V graph with Wan22DuoParallel(cpu,cpu) on its sampler, twice.

    The workers are spawned from the server's ``main.py`` process (which they must not re-run)
    and import the pack under ComfyUI's module name; the second prompt reuses the same group.
    """
    name = "workflows/api/t2v_a14b.json"
    api = json.loads((REPO / name).read_text())
    sampler = next(k for k, node in api.items() if node["class_type"] == "Wan22DuoSampler")
    api["9000"] = {"class_type": "Wan22DuoParallel", "inputs": {"devices": "cpu,cpu", "cfg_parallel": False}}
    api[sampler]["inputs"]["parallel"] = ["9000", 0]
    reports = []
    for _ in range(2):
        queued, entry, _ = _run(name, api, server, client, prepared_files, engine_sampling, comfy_tree)
        (expected,) = prep.expected_switches(queued, engine_sampling)
        reports.append(_check_switch(name + " + Wan22DuoParallel", queued, entry, expected))
    assert reports[0] == reports[1]
    log = server.log_path.read_text(errors="replace")
    assert log.count("parallel group of 2 ranks on ['cpu', 'cpu'] started") == 1, server.log_tail()  # kept


def test_a_batch_spreads_over_two_servers_and_survives_a_dying_one(server, client, prepared_files, engine_sampling,
                                                                    comfy_tree, tmp_path_factory, capsys):
    """queue_workflow.py with three --server addresses: an address where nothing listens and two real
    ComfyUI servers, the second of which is killed (SIGKILL) while it runs a job.

    Both dead servers' jobs go to the surviving one; all four videos arrive, each in its own folder.
    """
    import threading
    import time

    from comfy_server import free_port

    name = "workflows/api/t2v_a14b.json"
    if name in prepared_files:
        pytest.fail(f"{name}: {prepared_files[name]}")
    work = tmp_path_factory.mktemp("batch")
    workflow = work / "t2v.json"
    workflow.write_text(json.dumps(prep.shrink(json.loads((REPO / name).read_text()), engine_sampling)))
    second = start_server(comfy_tree.root, work / "second.log", REQUIRED_NODES,
                          extra_args=("--output-directory", str(work / "second_output")))
    dead = f"http://127.0.0.1:{free_port()}"
    killed = threading.Event()

    def kill_second_mid_job() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if second.get_json("/queue", timeout=5).get("queue_running"):
                    second.process.kill()
                    killed.set()
                    return
            except OSError:
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_second_mid_job, daemon=True)
    killer.start()
    try:
        queue_module, _ = client
        capsys.readouterr()
        code = queue_module.main([str(workflow), "--server", dead, "--server", server.url, "--server", second.url,
                                  "--seeds", "1-4", "--out", str(work / "out"), "--timeout", str(RUN_TIMEOUT_S)])
        out = capsys.readouterr().out
    finally:
        killer.join(10)
        second.stop()
    assert killed.is_set(), f"the second server never ran a job\n{out}"
    assert code == 0, f"{out}\n--- second server log ---\n{second.log_tail()}"
    lines = out.splitlines()
    for url in (dead, second.url):
        assert any(line.startswith(f"[{url}] unreachable") and "goes to another server" in line for line in lines), out
    assert "4 of 4 job(s) done, 0 failed" in lines, out
    assert f"{server.url}: 4 job(s) done" in out, out
    api = json.loads(workflow.read_text())
    for seed in range(1, 5):
        folder = work / "out" / f"job{seed:03d}-seed{seed}"
        videos = [p for p in folder.iterdir() if p.suffix in VIDEO_SUFFIXES]
        assert len(videos) == 1, (folder, list(folder.iterdir()))
        _check_video(videos[0], prep.expected_frames(api, _video_node(api)))


def _video_node(api: dict) -> str:
    return next(k for k, node in api.items() if node["class_type"] == "SaveVideo")
