"""scripts/queue_workflow.py: the override logic on every bundled API workflow, and talking to a
fake ComfyUI (a real HTTP server on 127.0.0.1 in a thread, with a real websocket upgrade)."""
import base64
import copy
import hashlib
import http.server
import json
import re
import struct
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import queue_workflow as qw  # noqa: E402

API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
# Spec §1.2, verbatim: how the test tells the negative encoder from the positive one.
OFFICIAL_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
LATENT_NODES = ("Wan22DuoEmptyLatent", "Wan22DuoI2VConditioning", "Wan22DuoTI2VLatent",
                "EmptyHunyuanLatentVideo", "WanImageToVideo", "Wan22ImageToVideoLatent",  # ComfyUI's, native workflows
                "Wan22DuoI2VKeyframes", "Wan22DuoTI2VKeyframes")
EXTEND_NODES = ("Wan22DuoI2VExtend", "Wan22DuoTI2VExtend")  # size from the previous clip: length only
SVI_NODES = ("Wan22DuoI2VExtendSVI",)  # one per clip, each with width, height and length (all must agree)
SAMPLERS = ("Wan22DuoSampler", "Wan22DuoModelSampler")


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _only(api, predicate):
    found = [i for i, n in api.items() if predicate(n)]
    assert len(found) == 1, found
    return found[0]


def _changes(before, after):
    assert before.keys() == after.keys()
    changed = {}
    for node_id in before:
        assert before[node_id]["class_type"] == after[node_id]["class_type"]
        a, b = before[node_id]["inputs"], after[node_id]["inputs"]
        assert a.keys() == b.keys()
        changed.update({(node_id, k): b[k] for k in a if a[k] != b[k]})
    return changed


def test_bundled_api_workflows_exist():
    names = {p.stem for p in API_FILES}
    assert {"t2v_a14b", "i2v_a14b", "ti2v_5b_t2v", "ti2v_5b_i2v", "t2v_a14b_lightning"} <= names


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_overrides_change_exactly_the_named_inputs(path):
    api = _load(path)
    original = copy.deepcopy(api)
    has_image = any(n["class_type"] == "LoadImage" for n in api.values())
    overrides = qw.Overrides(prompt="a heron lands on a pier", negative="blurry", seed=7, width=640, height=384,
                             frames=33, steps=20, image="upload/in.png" if has_image else None)
    result = qw.apply_overrides(api, overrides)
    assert api == original, "the input workflow must not be modified"

    # Expected targets, found without the client's graph walking.
    texts = [i for i, n in api.items() if n["class_type"] == "CLIPTextEncode"]
    negative = _only(api, lambda n: n["class_type"] == "CLIPTextEncode" and n["inputs"]["text"] == OFFICIAL_NEGATIVE)
    (positive,) = [i for i in texts if i != negative]
    samplers = sorted((i for i, n in api.items() if n["class_type"] in SAMPLERS), key=int)
    svi = [i for i, n in api.items() if n["class_type"] in SVI_NODES]
    sized = svi if svi else [_only(api, lambda n: n["class_type"] in LATENT_NODES)]
    assert len(svi) != 1 or len(samplers) == 1
    expected = {(positive, "text"): "a heron lands on a pier", (negative, "text"): "blurry"}
    for latent in sized:
        expected.update({(latent, "width"): 640, (latent, "height"): 384, (latent, "length"): 33})
    first_seed = api[samplers[0]]["inputs"]["seed"]
    for sampler in samplers:  # later clips keep their seed offset from the first
        expected[(sampler, "seed")] = 7 + api[sampler]["inputs"]["seed"] - first_seed
        expected[(sampler, "steps")] = 20
    for extend in (i for i, n in api.items() if n["class_type"] in EXTEND_NODES):
        expected[(extend, "length")] = 33
    if has_image:
        ends = {v[0] for n in api.values() for k, v in n["inputs"].items() if k == "end_image"}
        (start,) = [i for i, n in api.items() if n["class_type"] == "LoadImage" and i not in ends]
        expected[(start, "image")] = "upload/in.png"
    assert _changes(original, result) == expected


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_no_overrides_is_identity_and_one_override_touches_one_input(path):
    api = _load(path)
    assert qw.apply_overrides(api, qw.Overrides()) == api
    sampler = min((i for i, n in api.items() if n["class_type"] in SAMPLERS), key=int)
    seed = api[sampler]["inputs"]["seed"] + 1
    changes = _changes(api, qw.apply_overrides(api, qw.Overrides(seed=seed)))
    assert changes[(sampler, "seed")] == seed and all(k == "seed" for _, k in changes)


def _synthetic_i2v():
    """Negative encoder listed first and with the lower id, conditioning passed through an I2V node."""
    return {
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["1", 0]}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["1", 0]}},
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5", "type": "wan"}},
        "4": {"class_type": "Wan22DuoI2VConditioning",
              "inputs": {"positive": ["9", 0], "negative": ["3", 0], "vae": ["2", 0], "start_image": ["5", 0],
                         "width": 1280, "height": 720, "length": 81, "batch_size": 1}},
        "7": {"class_type": "Wan22DuoSampler",
              "inputs": {"high_noise_model": ["6", 0], "positive": ["4", 0], "negative": ["4", 1],
                         "latent": ["4", 2], "seed": 1, "steps": 40}},
    }


def test_prompt_roles_follow_the_links_not_the_ids():
    out = qw.apply_overrides(_synthetic_i2v(), qw.Overrides(prompt="P", negative="N", frames=49))
    assert out["9"]["inputs"]["text"] == "P"
    assert out["3"]["inputs"]["text"] == "N"
    assert out["4"]["inputs"]["length"] == 49


def test_bad_requests_fail_with_plain_messages(tmp_path):
    t2v = _load(ROOT / "workflows" / "api" / "t2v_a14b.json")
    with pytest.raises(qw.WorkflowError, match="text-to-video"):
        qw.apply_overrides(t2v, qw.Overrides(image="x.png"))
    linked = _synthetic_i2v()
    linked["7"]["inputs"]["seed"] = ["8", 0]
    with pytest.raises(qw.WorkflowError, match="seed is linked"):
        qw.apply_overrides(linked, qw.Overrides(seed=3))
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(qw.WorkflowError, match="UI"):
        qw.load_api_workflow(ui)


def test_switch_reports_read_plainly():
    assert qw.describe_switch(26, 40) == "experts switched after step 26 of 40 (26 high-noise + 14 low-noise)"
    assert qw.describe_switch(50, 50) == "all 50 steps on the high-noise (or only) model, no switch"
    assert qw.describe_switch(0, 4) == "all 4 steps on the low-noise expert"


def test_node_errors_are_formatted_one_line_each():
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                  "details": "", "extra_info": {}},
        "node_errors": {"12": {"class_type": "Wan22DuoSampler", "dependent_outputs": ["62"], "errors": [
            {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps",
             "extra_info": {"input_name": "steps", "input_config": {}, "received_value": 0}},
            {"type": "required_input_missing", "message": "Required input is missing", "details": "latent",
             "extra_info": {"input_name": "latent"}},
            {"type": "value_not_in_list", "message": "Value not in list",
             "details": "sampler: 'foo' not in ['unipc', 'euler', 'dpmpp_2m']",
             "extra_info": {"input_name": "sampler", "received_value": "foo"}},
        ]}},
    }
    assert qw.format_node_errors(body) == [
        "node 12 (Wan22DuoSampler): steps: Value 0 smaller than min of 1",
        "node 12 (Wan22DuoSampler): latent: Required input is missing",
        "node 12 (Wan22DuoSampler): sampler: Value not in list: 'foo' not in ['unipc', 'euler', 'dpmpp_2m']",
    ]
    missing_class = {"error": {"type": "invalid_prompt", "details": "Node ID '#5'",
                               "message": "Cannot execute because node Foo does not exist."}, "node_errors": {}}
    assert qw.format_node_errors(missing_class) == ["Cannot execute because node Foo does not exist.: Node ID '#5'"]


# ---------------------------------------------------------------- a fake ComfyUI

VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42 fake video"


def _frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n)
    return head + payload


class FakeComfy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set per server

    def log_message(self, *args):
        pass

    def _reply(self, code, body, kind="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        st = self.server.state
        if self.path == "/prompt":
            st["queued"].append(json.loads(body))
            if st["scenario"] == "invalid":
                return self._reply(400, {
                    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                              "details": "Value 0 smaller than min of 1: steps", "extra_info": {}},
                    "node_errors": {"50": {"class_type": "Wan22DuoSampler", "dependent_outputs": ["62"], "errors": [
                        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                         "details": "steps", "extra_info": {"input_name": "steps", "received_value": 0}}]}}})
            if st["scenario"] == "html":  # a proxy's or another web app's page
                return self._reply(200, b"<!DOCTYPE html><html><body>Login</body></html>", "text/html")
            if st["scenario"] == "no_prompt_id":
                return self._reply(200, {"number": 0, "node_errors": {}})
            return self._reply(200, {"prompt_id": "p-1", "number": 0, "node_errors": {}})
        if self.path == "/upload/image":
            st["uploads"].append(body)
            return self._reply(200, {"name": "in.png", "subfolder": "wan", "type": "input"})
        self._reply(404, {})

    def do_GET(self):
        st = self.server.state
        if self.path.startswith("/ws"):
            return self._websocket(st)
        if self.path == "/history/p-1":
            st["history_polls"] += 1
            if st["history_polls"] < st.get("done_at_poll", 3):  # still running for the first two polls
                return self._reply(200, {})
            status = {"status_str": "success", "completed": True, "messages": []}
            if st["scenario"] == "fails":
                status = {"status_str": "error", "completed": False, "messages": [
                    ["execution_start", {"prompt_id": "p-1"}],
                    ["execution_error", {"prompt_id": "p-1", "node_id": "50", "node_type": "Wan22DuoSampler",
                                         "exception_type": "ValueError",
                                         "exception_message": "Wan 2.1 VAE latent (16 ch) given to TI2V-5B\n"}]]}
            outputs = {"62": {"images": [{"filename": "wan22duo_00001_.mp4", "subfolder": "video", "type": "output"}],
                              "animated": [True]}}
            if st["scenario"] == "bad_history":
                return self._reply(200, {"p-1": {"prompt": [], "outputs": ["62"], "status": status}})
            return self._reply(200, {"p-1": {"prompt": [], "outputs": outputs, "status": status}})
        if self.path == "/queue" and st["scenario"] != "no_queue":
            st["queue_polls"] += 1
            mine = [3, "p-1", {}, {}, ["62"]]
            if st["queue_polls"] == 1:  # first poll: behind one running prompt; then running
                return self._reply(200, {"queue_running": [[2, "other", {}, {}, []]], "queue_pending": [mine]})
            return self._reply(200, {"queue_running": [mine], "queue_pending": []})
        if self.path.startswith("/view?"):
            st["views"].append(self.path)
            return self._reply(200, VIDEO_BYTES, "video/mp4")
        self._reply(404, {})

    def _websocket(self, st):
        if st["scenario"] != "websocket":
            return self._reply(404, {})
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        st["ws_open"].wait(5)  # the client queues after connecting; send the run's events then

        def send(obj):
            self.wfile.write(_frame(1, json.dumps(obj).encode()))

        send({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "x"}})
        send({"type": "execution_start", "data": {"prompt_id": "p-1"}})
        send({"type": "executing", "data": {"node": "50", "display_node": "50", "prompt_id": "p-1"}})
        send({"type": "progress", "data": {"value": 1, "max": 4, "prompt_id": "p-1", "node": "50"}})
        self.wfile.write(_frame(2, b"\x00\x00\x00\x01\x00\x00\x00\x01jpeg-preview"))
        self.wfile.write(_frame(9, b"hi"))
        self.wfile.flush()
        head = self.rfile.read(2)  # the client's pong: masked, payload echoed
        mask = self.rfile.read(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(head[1] & 0x7F)))
        st["pong"] = (head[0] & 0x0F, bool(head[1] & 0x80), payload)
        # A long message (16-bit length) split over two frames.
        executed = json.dumps({"type": "executed", "data": {"node": "50", "prompt_id": "p-1", "output": {
            "wan22duo_switch": [{"switch_step": 2, "steps": 4, "boundary": 0.875, "pad": "x" * 300}]}}}).encode()
        self.wfile.write(_frame(1, executed[:100], fin=False) + _frame(0, executed[100:]))
        send({"type": "executing", "data": {"node": None, "prompt_id": "p-1"}})
        self.wfile.write(_frame(8, struct.pack(">H", 1000)))
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def fake_comfy():
    servers = []

    def start(scenario):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
        server.daemon_threads = True
        server.state = {"scenario": scenario, "queued": [], "uploads": [], "views": [], "history_polls": 0,
                        "queue_polls": 0,
                        "ws_open": threading.Event(), "pong": None}
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _main(args, url, tmp_path):
    return qw.main(args + ["--server", url, "--out", str(tmp_path / "out"), "--poll-interval", "0.02",
                           "--timeout", "10"])


def test_validation_errors_are_printed_plainly(fake_comfy, tmp_path, capsys):
    server, url = fake_comfy("invalid")
    rc = _main([str(ROOT / "workflows/api/t2v_a14b.json"), "--steps", "0", "--no-websocket"], url, tmp_path)
    assert rc == 1
    assert "node 50 (Wan22DuoSampler): steps: Value 0 smaller than min of 1" in capsys.readouterr().err
    queued = server.state["queued"][0]
    assert queued["prompt"]["50"]["inputs"]["steps"] == 0 and queued["client_id"]


def test_polling_run_uploads_the_image_and_downloads_the_video(fake_comfy, tmp_path, capsys):
    server, url = fake_comfy("ok")
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG fake image bytes")
    rc = _main([str(ROOT / "workflows/api/i2v_a14b.json"), "--image", str(image), "--prompt", "waves",
                "--seed", "7", "--no-websocket"], url, tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert b"\x89PNG fake image bytes" in server.state["uploads"][0]
    prompt = server.state["queued"][0]["prompt"]
    loaders = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
    assert [n["inputs"]["image"] for n in loaders] == ["wan/in.png"]
    assert server.state["history_polls"] == 3
    assert "filename=wan22duo_00001_.mp4" in server.state["views"][0] and "type=output" in server.state["views"][0]
    assert (tmp_path / "out" / "wan22duo_00001_.mp4").read_bytes() == VIDEO_BYTES
    # Progress from polling, between "queued" and "saved" (before: nothing at all).
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "queued prompt p-1"
    assert out[1:3] == ["  waiting in the queue (1 prompt ahead)", "  running"]
    assert out[-1].startswith("saved ")


def test_queue_state_reads_the_queue():
    queue = {"queue_running": [[5, "a", {}, {}, []]],
             "queue_pending": [[9, "c", {}, {}, []], [7, "b", {}, {}, []], [8, "mine", {}, {}, []]]}
    assert qw.queue_state(queue, "mine") == "waiting in the queue (2 prompts ahead)"  # a runs, b is earlier
    assert qw.queue_state(queue, "a") == "running"
    assert qw.queue_state(queue, "gone") is None


def test_the_prompt_node_is_found_by_its_link_not_its_class():
    api = _synthetic_i2v()
    # Another text encoder, behind a node that carries conditioning under another name.
    api["9"]["class_type"] = "TextEncodeWanCustom"
    api["20"] = {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["9", 0]}}
    api["4"]["inputs"]["positive"] = ["20", 0]
    out = qw.apply_overrides(api, qw.Overrides(prompt="P", negative="N"))
    assert out["9"]["inputs"]["text"] == "P" and out["3"]["inputs"]["text"] == "N"
    api["20"]["inputs"] = {"conditioning_to": ["9", 0], "conditioning_from": ["3", 0]}  # two ways up: ambiguous
    with pytest.raises(qw.WorkflowError, match=r"no text-encode node \(one with a 'text' input, like CLIPTextEncode\) "
                                               r"feeds the 'positive' input of node 7: the links stop at node 20"):
        qw.apply_overrides(api, qw.Overrides(prompt="P"))


def test_execution_failure_is_reported_with_the_node(fake_comfy, tmp_path, capsys):
    _, url = fake_comfy("fails")
    rc = _main([str(ROOT / "workflows/api/ti2v_5b_t2v.json"), "--no-websocket"], url, tmp_path)
    assert rc == 1
    err = capsys.readouterr().err
    assert "node 50 (Wan22DuoSampler) failed: ValueError: Wan 2.1 VAE latent (16 ch) given to TI2V-5B" in err
    assert not (tmp_path / "out").exists()


def test_websocket_progress_then_download(fake_comfy, tmp_path):
    server, url = fake_comfy("websocket")
    lines = []
    client = qw.ComfyClient(url, timeout=5, log=lines.append)
    real_queue = client.queue

    def queue_then_release(api):
        prompt_id = real_queue(api)
        server.state["ws_open"].set()
        return prompt_id

    client.queue = queue_then_release
    api = qw.load_api_workflow(ROOT / "workflows/api/t2v_a14b_lightning.json")
    paths = qw.run(client, api, tmp_path / "out", poll_interval=0.02, timeout=10)
    assert [p.read_bytes() for p in paths] == [VIDEO_BYTES]
    assert "running node 50 (Wan22DuoSampler)" in lines
    assert "  step 1/4 (node 50)" in lines
    assert "  experts switched after step 2 of 4 (2 high-noise + 2 low-noise)" in lines
    assert server.state["pong"] == (10, True, b"hi")


def test_unreachable_server_is_a_plain_error(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = _main([str(ROOT / "workflows/api/t2v_a14b.json"), "--no-websocket"], f"http://127.0.0.1:{port}", tmp_path)
    assert rc == 3
    assert "cannot talk to ComfyUI" in capsys.readouterr().err


def test_first_last_and_extend_workflows_take_end_image_and_chain_overrides():
    flf = _load(ROOT / "workflows" / "api" / "i2v_a14b_first_last.json")
    (keyframes,) = [n for n in flf.values() if n["class_type"] == "Wan22DuoI2VKeyframes"]
    start_id, end_id = keyframes["inputs"]["start_image"][0], keyframes["inputs"]["end_image"][0]
    out = qw.apply_overrides(flf, qw.Overrides(image="a.png", end_image="b.png"))
    assert out[start_id]["inputs"]["image"] == "a.png" and out[end_id]["inputs"]["image"] == "b.png"
    assert _changes(flf, qw.apply_overrides(flf, qw.Overrides(end_image="b.png"))) == {(end_id, "image"): "b.png"}
    with pytest.raises(qw.WorkflowError, match="no end image"):
        qw.apply_overrides(_load(ROOT / "workflows" / "api" / "i2v_a14b.json"), qw.Overrides(end_image="b.png"))
    extend = _load(ROOT / "workflows" / "api" / "i2v_a14b_extend.json")
    out = qw.apply_overrides(extend, qw.Overrides(seed=100, frames=49, steps=8))
    samplers = sorted((i for i, n in out.items() if n["class_type"] == "Wan22DuoSampler"), key=int)
    assert [out[s]["inputs"]["seed"] for s in samplers] == [100, 101]  # 42, 43 in the file
    assert {out[s]["inputs"]["steps"] for s in samplers} == {8}
    assert {n["inputs"]["length"] for n in out.values() if "length" in n["inputs"]} == {49}


def test_polling_without_a_queue_route_still_finishes(fake_comfy, tmp_path, capsys):
    _, url = fake_comfy("no_queue")  # a server (or proxy) that answers 404 on /queue
    rc = _main([str(ROOT / "workflows/api/t2v_a14b.json"), "--no-websocket"], url, tmp_path)
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "waiting" not in out and "saved " in out


def test_polling_reports_how_long_the_prompt_has_run(fake_comfy):
    server, url = fake_comfy("ok")
    server.state["done_at_poll"] = 5  # two more polls while running
    lines = []
    client = qw.ComfyClient(url, log=lines.append)
    entry = client.wait_polling("p-1", interval=0.02, timeout=10, heartbeat=0.0)
    assert entry["status"]["status_str"] == "success"
    assert lines[:2] == ["  waiting in the queue (1 prompt ahead)", "  running"]
    assert [line for line in lines[2:] if line.startswith("  still running after ")], lines


# ---------------------------------------------------------------- damaged input, odd servers (issue 26, item 7)


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b"\xff\xfe{}", "is not UTF-8"),
    (b'{"1": {"class_type": "KSampler", "inputs": {}},}', "is not valid JSON"),
    (b"[1, 2]", "holds a JSON list"),
    (b"{}", "holds an empty object"),
    (b'{"1": {"class_type": "KSampler"}}', "node 1 (KSampler) has no inputs"),
    (b'{"1": {"class_type": "KSampler", "inputs": [1]}}', "node 1 (KSampler) has inputs of type list"),
    (b'{"1": {"inputs": {}}}', "node '1' has no class_type"),
    (b"[" * 100000 + b"]" * 100000, "nests JSON values"),
    (b'{"1": {"class_type": "X", "inputs": {"a": ' + b"[" * 70 + b"]" * 70 + b"}}}", "more than 64 levels"),
])
def test_damaged_workflow_file_is_named_with_its_problem(tmp_path, capsys, content, problem):
    path = tmp_path / "wf.json"
    path.write_bytes(content)
    with pytest.raises(qw.WorkflowError, match=re.escape(problem)) as info:
        qw.load_api_workflow(path)
    assert str(path) in str(info.value)
    assert qw.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and problem in err and err.count("\n") == 1, err


@pytest.mark.parametrize("scenario, said", [
    ("html", "an HTML page"),
    ("no_prompt_id", "has no prompt_id"),
    ("bad_history", "'outputs' that is not an object"),
])
def test_replies_that_are_not_comfyuis_give_one_line(fake_comfy, tmp_path, capsys, scenario, said):
    _, url = fake_comfy(scenario)
    rc = _main([str(ROOT / "workflows/api/t2v_a14b.json"), "--no-websocket"], url, tmp_path)
    err = capsys.readouterr().err
    assert rc == 3 and "sent an unexpected reply" in err and said in err and err.count("\n") == 1, err


def test_malformed_history_entries_are_refused_and_odd_messages_skipped():
    with pytest.raises(qw.ReplyError, match="is a JSON list"):
        qw.check_history_entry([], "p")
    with pytest.raises(qw.ReplyError, match="'status'"):
        qw.check_history_entry({"status": {"messages": "x"}}, "p")
    entry = {"outputs": {}, "status": {"messages": [["execution_error"], "x", ["execution_error", {"node_id": "5"}]]}}
    assert qw.history_failure(qw.check_history_entry(entry, "p")).startswith("node 5 ")


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("mode", [["--no-websocket"], []])
def test_timeout_bounds_a_server_that_accepts_and_never_answers(silent_server, tmp_path, capsys, mode):
    import time

    start = time.monotonic()
    rc = qw.main([str(ROOT / "workflows/api/t2v_a14b.json"), "--server", silent_server, "--timeout", "1",
                  "--out", str(tmp_path / "out")] + mode)
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == 3 and "within --timeout 1 s" in err, err
    assert elapsed < 3, elapsed  # one second of budget; each wait is cut to what is left of it


def test_server_without_a_scheme_and_bad_server_values(fake_comfy, tmp_path, capsys):
    _, url = fake_comfy("ok")
    host_port = url.split("://", 1)[1]
    assert qw.server_url(host_port) == url and qw.server_url(url + "/") == url
    rc = _main([str(ROOT / "workflows/api/t2v_a14b.json"), "--no-websocket"], host_port, tmp_path)
    assert rc == 0, capsys.readouterr().err
    for bad in ("ftp://host:1", "http://"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            qw.server_url(bad)


def test_missing_image_is_a_missing_file_not_a_server_problem(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # nothing listens there: the check must come before any connection
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for option in ("--image", "--end-image"):
        workflow = "i2v_a14b.json" if option == "--image" else "i2v_a14b_first_last.json"
        rc = _main([str(ROOT / "workflows/api" / workflow), option, str(tmp_path / "gone.png")],
                   f"127.0.0.1:{port}", tmp_path)
        err = capsys.readouterr().err
        assert rc == 2 and f"{option} {tmp_path / 'gone.png'}: no such file" in err and "ComfyUI" not in err, err
