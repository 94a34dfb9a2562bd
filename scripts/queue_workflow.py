"""Queue a bundled API-format workflow on a running ComfyUI and download the video it makes.

Standard library only. Example::

    python scripts/queue_workflow.py workflows/api/t2v_a14b.json --prompt "a fox in the snow" \\
        --seed 7 --width 832 --height 480 --frames 33 --steps 20 --out out/
    python scripts/queue_workflow.py workflows/api/i2v_a14b.json --image in.png --prompt "..."

The overrides are applied without knowing node ids: the sampler is the node with linked
``positive``/``negative`` inputs and a seed; the prompts are the text-encode nodes (the first
node with a ``text`` input, CLIPTextEncode or any other) found by following the links upstream
from those two inputs (through e.g. the I2V conditioning node); size and frames go on the node
that makes the sampler's latent; ``--image`` is uploaded (POST /upload/image) and set on the
LoadImage node (``--end-image`` on the one feeding an ``end_image`` input, in the first-last-frame
workflows). A workflow with one sampler per clip (i2v_a14b_extend) gets prompts, steps and frames on
every clip and the seed on the first, later clips keeping their seed offsets. Progress comes over
the websocket (/ws): every node and sampling step. Without it (``--no-websocket``, or a proxy that
blocks it) the client polls /queue and /history and reports the prompt's place in the queue, when it
starts running and how long it has run. Validation errors are printed one per line, e.g.
``node 50 (Wan22DuoSampler): steps: Value 0 smaller than min of 1``.

The pure override logic (:func:`apply_overrides` and the ``find_*`` helpers) is importable.
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import mimetypes
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

TEXT_ENCODERS = ("CLIPTextEncode",)
IMAGE_LOADERS = ("LoadImage",)
SIZE_INPUTS = ("width", "height", "length")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
NO_IMAGE_INPUT = (
    "this workflow takes no start image (it is text-to-video); use workflows/api/i2v_a14b.json or "
    "workflows/api/ti2v_5b_i2v.json for image-to-video"
)
NO_END_IMAGE_INPUT = (
    "this workflow takes no end image; use workflows/api/i2v_a14b_first_last.json or "
    "workflows/api/ti2v_5b_first_last.json for first-last-frame video"
)

# ---------------------------------------------------------------- the override logic (pure)


class WorkflowError(ValueError):
    """The workflow does not have the shape an override needs."""


@dataclass(frozen=True)
class Overrides:
    prompt: Optional[str] = None
    negative: Optional[str] = None
    seed: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    steps: Optional[int] = None
    image: Optional[str] = None  # a name ComfyUI knows (after upload), not a local path
    end_image: Optional[str] = None  # the same, for the LoadImage that feeds an ``end_image`` input


def load_api_workflow(path: os.PathLike) -> dict:
    """Read an API-format workflow; a UI-format file is rejected with the way out."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{path} is a UI (editor) workflow; POST /prompt needs the API format. Use the copy in "
            f"workflows/api/, or export with Workflow -> Export (API) in ComfyUI"
        )
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise WorkflowError(f"{path} is not an API-format workflow ({{node id: {{class_type, inputs}}}})")
    return data


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def find_samplers(api: dict) -> list:
    """Ids of every sampler (linked ``positive`` and ``negative`` inputs plus a seed), by node id."""
    found = [
        node_id for node_id, node in api.items()
        if _is_link(node["inputs"].get("positive")) and _is_link(node["inputs"].get("negative"))
        and any(k in node["inputs"] for k in ("seed", "noise_seed"))
    ]
    return sorted(found, key=lambda i: (len(i), i))


def find_sampler(api: dict) -> str:
    """Id of the one sampler: linked ``positive`` and ``negative`` inputs plus a seed."""
    found = find_samplers(api)
    if len(found) != 1:
        raise WorkflowError(f"expected exactly one sampler (positive, negative and seed inputs), found {found}")
    return found[0]


def find_text_encoder(api: dict, sampler_id: str, role: str) -> str:
    """The text-encode node whose conditioning reaches the sampler's ``role`` input.

    Follows the link of the sampler's ``role`` input upstream: through nodes that pass
    conditioning on under the same input name (Wan22DuoI2VConditioning, WanImageToVideo)
    or under their only linked ``*conditioning*`` input, to the first node with a ``text``
    input (CLIPTextEncode, or another text encoder), not by class name alone.
    """
    node_id, seen = sampler_id, set()
    while True:
        inputs = api[node_id]["inputs"]
        link = inputs.get(role)
        if not _is_link(link):
            carried = [v for k, v in inputs.items() if "conditioning" in k.lower() and _is_link(v)]
            link = carried[0] if len(carried) == 1 else None
        if link is None:
            raise WorkflowError(
                f"no text-encode node (one with a 'text' input, like CLIPTextEncode) feeds the {role!r} input of "
                f"node {sampler_id}: the links stop at node {node_id} ({api[node_id]['class_type']}); set the "
                "prompt in the workflow instead")
        node_id = link[0]
        if node_id in seen or node_id not in api:
            raise WorkflowError(f"the {role!r} conditioning of node {sampler_id} leads to a missing node {node_id}")
        seen.add(node_id)
        if api[node_id]["class_type"] in TEXT_ENCODERS or "text" in api[node_id]["inputs"]:
            return node_id


def find_latent_source(api: dict, sampler_id: str, keys: tuple = SIZE_INPUTS) -> str:
    """The node that makes the sampler's latent and holds width, height and length (or ``keys``)."""
    inputs = api[sampler_id]["inputs"]
    link = inputs.get("latent", inputs.get("latent_image"))
    node_id, seen = (link[0] if _is_link(link) else None), set()
    while node_id is not None and node_id in api and node_id not in seen:
        seen.add(node_id)
        node_inputs = api[node_id]["inputs"]
        if all(k in node_inputs and not _is_link(node_inputs[k]) for k in keys):
            return node_id
        upstream = [v for k, v in node_inputs.items() if k in ("samples", "latent") and _is_link(v)]
        node_id = upstream[0][0] if upstream else None
    raise WorkflowError(f"no node with {keys} inputs makes the latent of sampler {sampler_id}")


def find_image_loaders(api: dict, role: Optional[str] = None) -> list:
    """LoadImage nodes; ``role="end"``: those feeding an ``end_image`` input, ``"start"``: the others."""
    loaders = sorted((i for i, n in api.items() if n["class_type"] in IMAGE_LOADERS), key=str)
    if role is None:
        return loaders
    ends = {v[0] for n in api.values() for k, v in n["inputs"].items() if k == "end_image" and _is_link(v)}
    return [i for i in loaders if (i in ends) == (role == "end")]


def _set(api: dict, node_id: str, name: str, value) -> None:
    inputs = api[node_id]["inputs"]
    if _is_link(inputs.get(name)):
        raise WorkflowError(f"node {node_id} ({api[node_id]['class_type']}): {name} is linked, not a value")
    inputs[name] = value


def apply_overrides(api: dict, overrides: Overrides) -> dict:
    """A copy of ``api`` with the given values set; inputs not named by ``overrides`` are untouched."""
    api = copy.deepcopy(api)
    samplers = find_samplers(api)
    if not samplers:
        find_sampler(api)  # raises the plain message
    # Workflows that chain clips (i2v_a14b_extend) have one sampler per clip; every override goes to all.
    for role, text in (("positive", overrides.prompt), ("negative", overrides.negative)):
        if text is not None:
            for encoder in dict.fromkeys(find_text_encoder(api, s, role) for s in samplers):
                _set(api, encoder, "text", text)
    if overrides.seed is not None:
        _set_seeds(api, samplers, int(overrides.seed))
    if overrides.steps is not None:
        for sampler in samplers:
            _set(api, sampler, "steps", int(overrides.steps))
    sizes = {"width": overrides.width, "height": overrides.height, "length": overrides.frames}
    if any(v is not None for v in sizes.values()):
        _set_sizes(api, samplers, sizes)
    for name, role, missing in (("image", "start", NO_IMAGE_INPUT), ("end_image", "end", NO_END_IMAGE_INPUT)):
        value = getattr(overrides, name)
        if value is not None:
            loaders = find_image_loaders(api, role)
            if not loaders:
                raise WorkflowError(missing)
            for node_id in loaders:
                _set(api, node_id, "image", value)
    return api


def _set_seeds(api: dict, samplers: list, seed: int) -> None:
    """The first sampler gets ``seed``; later ones keep their offset from it (distinct noise per clip)."""
    keys = ["seed" if "seed" in api[s]["inputs"] else "noise_seed" for s in samplers]
    old = [api[s]["inputs"][k] for s, k in zip(samplers, keys)]
    for sampler, key, value in zip(samplers, keys, old):
        offset = value - old[0] if all(isinstance(v, int) for v in (value, old[0])) else 0
        _set(api, sampler, key, seed + offset)


def _set_sizes(api: dict, samplers: list, sizes: dict) -> None:
    """Width, height and length on the node making each sampler's latent.

    A clip that continues another (Wan22DuoI2VExtend / Wan22DuoTI2VExtend) takes its size from the
    previous clip, so its latent node has only ``length``.
    """
    full = 0
    for sampler in samplers:
        try:
            node, names = find_latent_source(api, sampler), SIZE_INPUTS
            full += 1
        except WorkflowError:
            if len(samplers) == 1:
                raise
            node, names = find_latent_source(api, sampler, ("length",)), ("length",)
        for name in names:
            if sizes[name] is not None:
                _set(api, node, name, int(sizes[name]))
    if not full:
        raise WorkflowError(f"no node with {SIZE_INPUTS} inputs makes the latent of samplers {samplers}")


# ---------------------------------------------------------------- reading server answers (pure)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_node_errors(body: dict) -> list:
    """One plain line per validation problem in a /prompt error body."""
    lines = []
    for node_id, info in (body.get("node_errors") or {}).items():
        class_type = info.get("class_type", "?")
        for err in info.get("errors", []):
            name = (err.get("extra_info") or {}).get("input_name")
            details = str(err.get("details") or "")
            text = err.get("message", "error")
            if name and details.startswith(f"{name}:"):
                details = details[len(name) + 1:].strip()  # e.g. "unet_name: 'x' not in [...]"
            if details and details != name:
                text += f": {_shorten(details)}"
            lines.append(f"node {node_id} ({class_type}): {name}: {text}" if name else
                         f"node {node_id} ({class_type}): {text}")
    if not lines:
        err = body.get("error")
        if isinstance(err, dict):
            details = err.get("details")
            lines.append(err.get("message", "error") + (f": {_shorten(str(details))}" if details else ""))
        elif err:
            lines.append(str(err))
    return lines


def describe_failure(data: dict) -> str:
    """One line from an ``execution_error`` payload (websocket event or /history status message)."""
    return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
            f"{data.get('exception_type', 'error')}: {str(data.get('exception_message', '')).strip()}")


def describe_switch(switch_step: int, steps: int) -> str:
    """The sampler's report (``ui.wan22duo_switch``) in words."""
    if switch_step >= steps:
        return f"all {steps} steps on the high-noise (or only) model, no switch"
    if switch_step <= 0:
        return f"all {steps} steps on the low-noise expert"
    return (f"experts switched after step {switch_step} of {steps} "
            f"({switch_step} high-noise + {steps - switch_step} low-noise)")


def history_failure(entry: dict) -> Optional[str]:
    """The failure recorded in a finished /history entry, or None when it succeeded."""
    status = entry.get("status") or {}
    for message in status.get("messages", []):
        if message and message[0] == "execution_error":
            return describe_failure(message[1])
        if message and message[0] == "execution_interrupted":
            return f"interrupted at node {message[1].get('node_id')} ({message[1].get('node_type')})"
    if status.get("status_str") == "error":
        return "the prompt failed (no error details in /history)"
    return None


def queue_state(queue: dict, prompt_id: str) -> Optional[str]:
    """Where ``prompt_id`` is in a GET /queue answer: "running", "waiting ... (N ahead)", or None (in neither)."""
    running = queue.get("queue_running") or []
    pending = queue.get("queue_pending") or []
    if any(len(item) > 1 and item[1] == prompt_id for item in running):
        return "running"
    mine = next((item for item in pending if len(item) > 1 and item[1] == prompt_id), None)
    if mine is None:
        return None
    ahead = len(running) + sum(1 for item in pending if item is not mine and item[0] < mine[0])
    return f"waiting in the queue ({ahead} prompt{'' if ahead == 1 else 's'} ahead)"


def output_files(entry: dict) -> list:
    """File records (``filename``, ``subfolder``, ``type``) of a finished /history entry, saved files first."""
    files = []
    for node_output in (entry.get("outputs") or {}).values():
        for value in node_output.values():
            if isinstance(value, list):
                files += [v for v in value if isinstance(v, dict) and "filename" in v]
    saved = [f for f in files if f.get("type") == "output"]
    return saved or files


# ---------------------------------------------------------------- a minimal websocket reader


class WebSocket:
    """Just enough RFC 6455 for ComfyUI's /ws: handshake, read frames, answer pings, close."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "WebSocket":
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise OSError(f"only ws:// is supported, got {url!r}")
        port = parts.port or 80
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request.encode())
        ws = cls(sock)
        head = ws._read_until(b"\r\n\r\n").decode("latin-1")
        status, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if status.split(" ")[1:2] != ["101"] or headers.get("sec-websocket-accept") != accept:
            sock.close()
            raise OSError(f"websocket upgrade refused: {status}")
        return ws

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("websocket closed by the server")
        self._buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        # Client frames must be masked (RFC 6455 §5.3); control payloads are < 126 bytes.
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def recv(self) -> tuple:
        """Next data message as ``(opcode, payload)``: 1 text, 2 binary, 8 close."""
        message, message_opcode = b"", None
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 9:  # ping
                self._send(10, payload)
                continue
            if opcode == 10:  # pong
                continue
            if opcode == 8:
                return 8, payload
            if opcode != 0:
                message_opcode = opcode
            message += payload
            if first & 0x80:  # FIN
                return message_opcode, message

    def close(self) -> None:
        try:
            self._send(8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- HTTP client


class ComfyError(RuntimeError):
    """The server refused or failed the prompt; ``lines`` hold the plain-language reasons."""

    def __init__(self, lines: list):
        super().__init__("\n".join(lines))
        self.lines = lines


class ComfyClient:
    def __init__(self, server: str = "http://127.0.0.1:8188", timeout: float = 30.0,
                 log: Callable[[str], None] = print):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = str(uuid.uuid4())
        self.log = log

    def _request(self, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None):
        request = urllib.request.Request(self.server + path, data=data, headers=headers or {})
        return urllib.request.urlopen(request, timeout=self.timeout)

    def _json(self, path: str, body: Optional[dict] = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self._request(path, data, headers) as response:
            return json.loads(response.read() or b"null")

    def queue(self, api: dict) -> str:
        """POST /prompt; returns the prompt id or raises :class:`ComfyError` with the node errors."""
        try:
            answer = self._json("/prompt", {"prompt": api, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                lines = format_node_errors(json.loads(raw))
            except ValueError:
                lines = [f"HTTP {exc.code}: {raw[:300].decode(errors='replace')}"]
            raise ComfyError(lines or [f"HTTP {exc.code} from /prompt"]) from None
        for line in format_node_errors({"node_errors": answer.get("node_errors")}):
            self.log(f"warning: {line}")  # errors on outputs that will not run
        return answer["prompt_id"]

    def upload_image(self, path: os.PathLike) -> str:
        """POST /upload/image; returns the name to give LoadImage."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: {kind}\r\n\r\n"
        ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        with self._request("/upload/image", body, headers) as response:
            answer = json.loads(response.read())
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def history(self, prompt_id: str) -> Optional[dict]:
        """The /history entry of a finished prompt, or None while it is queued or running."""
        return self._json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def wait_polling(self, prompt_id: str, interval: float = 1.0, timeout: Optional[float] = None,
                     heartbeat: float = 15.0) -> dict:
        """Poll until the prompt's /history entry appears, reporting its place in the queue meanwhile.

        Says when the prompt waits (and behind how many), when it starts running, and
        every ``heartbeat`` seconds how long it has been running (no step counts: those
        come only over the websocket).
        """
        start = time.monotonic()
        state, since, told = None, start, start
        while True:
            entry = self.history(prompt_id)
            if entry is not None:  # ComfyUI writes the entry once the prompt has ended
                return entry
            now = time.monotonic()
            current = self._queue_state(prompt_id)
            if current is not None and current != state:
                state, since, told = current, now, now
                self.log(f"  {state}")
            elif state == "running" and now - told >= heartbeat:
                told = now
                self.log(f"  still running after {now - since:.0f} s")
            if timeout is not None and now - start > timeout:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:g} s")
            time.sleep(interval)

    def _queue_state(self, prompt_id: str) -> Optional[str]:
        try:
            return queue_state(self._json("/queue") or {}, prompt_id)
        except (OSError, ValueError):  # an older or proxied server without /queue: history alone still works
            return None

    def open_websocket(self, idle_timeout: Optional[float] = None) -> Optional[WebSocket]:
        """Connect to /ws before queueing (so no event is missed); None when that is not possible."""
        url = self.server.replace("http://", "ws://", 1) + f"/ws?clientId={self.client_id}"
        try:
            ws = WebSocket.connect(url, timeout=self.timeout)
        except (OSError, ValueError) as exc:
            self.log(f"no websocket ({exc}); following progress by polling /history")
            return None
        # Loading a 14B expert can take minutes without a message, so no short read timeout.
        ws.sock.settimeout(idle_timeout)
        return ws

    def follow(self, ws: WebSocket, prompt_id: str, api: dict) -> Optional[str]:
        """Print progress until the prompt ends; returns an error message or None."""
        while True:
            opcode, payload = ws.recv()
            if opcode == 8:
                raise ConnectionError("websocket closed")
            if opcode != 1:
                continue  # binary frames are latent previews
            message = json.loads(payload)
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "executing":
                node = data.get("node")
                if node is None and data.get("prompt_id") == prompt_id:
                    return None
                if node is not None:
                    self.log(f"running node {node} ({api.get(str(node), {}).get('class_type', '?')})")
            elif kind == "progress":
                self.log(f"  step {data.get('value')}/{data.get('max')} (node {data.get('node')})")
            elif kind == "executed":
                for switch in (data.get("output") or {}).get("wan22duo_switch", []):
                    self.log(f"  {describe_switch(switch.get('switch_step'), switch.get('steps'))}")
            elif kind == "execution_success":
                return None
            elif kind == "execution_error":
                return describe_failure(data)
            elif kind == "execution_interrupted":
                return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"

    def download(self, record: dict, out_dir: os.PathLike) -> Path:
        query = urllib.parse.urlencode({"filename": record["filename"], "subfolder": record.get("subfolder", ""),
                                        "type": record.get("type", "output")})
        target = Path(out_dir) / Path(record["filename"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._request(f"/view?{query}") as response:
            target.write_bytes(response.read())
        return target


def run(client: ComfyClient, api: dict, out_dir: os.PathLike, use_websocket: bool = True,
        poll_interval: float = 1.0, timeout: Optional[float] = None) -> list:
    """Queue ``api``, follow it to the end and download its files. Raises ComfyError on failure."""
    ws = client.open_websocket(timeout) if use_websocket else None
    try:
        prompt_id = client.queue(api)
        client.log(f"queued prompt {prompt_id}")
        failure = None
        if ws is not None:
            try:
                failure = client.follow(ws, prompt_id, api)
            except (OSError, ValueError) as exc:
                client.log(f"websocket lost ({exc}); polling /history")
    finally:
        if ws is not None:
            ws.close()
    if failure:
        raise ComfyError([failure])
    entry = client.wait_polling(prompt_id, poll_interval, timeout)
    failure = history_failure(entry)
    if failure:
        raise ComfyError([failure])
    paths = [client.download(record, out_dir) for record in output_files(entry)]
    if not paths:
        raise ComfyError([f"prompt {prompt_id} finished but produced no files"])
    return paths


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Queue a Wan 2.2 Duo API workflow on ComfyUI and download the video.")
    p.add_argument("workflow", type=Path, help="an API-format workflow, e.g. workflows/api/t2v_a14b.json")
    p.add_argument("--prompt", help="positive prompt: sets the text of the text-encode node (CLIPTextEncode or "
                                    "another node with a text input) linked to the sampler's positive input")
    p.add_argument("--negative", help="negative prompt (default: the workflow's, the official one), set the same "
                                      "way on the node linked to the sampler's negative input")
    p.add_argument("--seed", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--frames", type=int, help="video length in frames (4n+1)")
    p.add_argument("--steps", type=int)
    p.add_argument("--image", type=Path, help="start image for image-to-video workflows (uploaded first)")
    p.add_argument("--end-image", type=Path, help="end image for the first-last-frame workflows (uploaded first)")
    p.add_argument("--server", action="append", default=None,
                   help="ComfyUI address (default http://127.0.0.1:8188); give it several times to spread a batch "
                        "over several servers")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the downloaded files")
    p.add_argument("--no-websocket", action="store_true",
                   help="follow progress by polling /queue and /history (queue place, start, time running; "
                        "no per-step progress)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between /history polls")
    p.add_argument("--dry-run", action="store_true", help="print the workflow that would be queued and stop")
    add_batch_args(p)
    args = p.parse_args(argv)
    args.servers = args.server or ["http://127.0.0.1:8188"]
    args.server = args.servers[0]
    return args


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    try:
        api = load_api_workflow(args.workflow)
        overrides = Overrides(args.prompt, args.negative, args.seed, args.width, args.height, args.frames,
                              args.steps, None)
        if args.image is not None and not find_image_loaders(api, "start"):
            raise WorkflowError(NO_IMAGE_INPUT)
        if args.end_image is not None and not find_image_loaders(api, "end"):
            raise WorkflowError(NO_END_IMAGE_INPUT)
        api = apply_overrides(api, overrides)
    except (WorkflowError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if is_batch(args):
        return batch_main(args, api)
    if args.dry_run:
        if args.image is not None or args.end_image is not None:  # shown as named after the upload
            api = apply_overrides(api, Overrides(image=args.image and args.image.name,
                                                 end_image=args.end_image and args.end_image.name))
        print(json.dumps(api, indent=2, ensure_ascii=False))
        return 0
    client = ComfyClient(args.server)
    try:
        if args.image is not None:
            api = apply_overrides(api, Overrides(image=client.upload_image(args.image)))
        if args.end_image is not None:
            api = apply_overrides(api, Overrides(end_image=client.upload_image(args.end_image)))
        paths = run(client, api, args.out, use_websocket=not args.no_websocket,
                    poll_interval=args.poll_interval, timeout=args.timeout)
    except ComfyError as exc:
        print("ComfyUI refused or failed the workflow:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        print(f"error: cannot talk to ComfyUI at {args.server}: {exc}", file=sys.stderr)
        return 3
    for path in paths:
        print(f"saved {path}")
    return 0


# ---------------------------------------------------------------- a batch over several servers


def add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", help="a batch, one video per seed: 1,2,5-8")
    p.add_argument("--prompts-file", type=Path, help="a batch, one video per prompt: one prompt per line")
    p.add_argument("--images", type=Path, help="a batch, one video per start image in this folder")
    p.add_argument("--retries", type=int, default=2,
                   help="how many times a job whose server dies is given to another server (default 2)")


def is_batch(args: argparse.Namespace) -> bool:
    return len(args.servers) > 1 or any(x is not None for x in (args.seeds, args.prompts_file, args.images))


def batch_main(args: argparse.Namespace, api: dict) -> int:
    """Every combination of seeds, prompts and images, spread over ``args.servers`` (scripts/queue_batch.py).

    Each job's files go to ``<out>/<job label>/``; a summary is printed at the end. The exit
    status is 0 when every job succeeded, 1 otherwise, 2 for bad batch options.
    """
    import threading

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # this file may have been loaded by path (the integration suite does)
        sys.path.insert(0, here)
    import queue_batch

    try:
        seeds = queue_batch.parse_seeds(args.seeds) if args.seeds else [args.seed]
        prompts = queue_batch.read_prompts(args.prompts_file) if args.prompts_file else [args.prompt]
        images = queue_batch.image_folder(args.images) if args.images else [args.image]
        if args.images is not None and not find_image_loaders(api, "start"):
            raise WorkflowError(NO_IMAGE_INPUT)
    except (WorkflowError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = queue_batch.make_jobs(seeds, prompts, images)
    if args.dry_run:
        for job in jobs:
            print(f"{job.label}: seed {job.seed}, prompt {job.prompt!r}, image {job.image}")
        return 0
    printing = threading.Lock()

    def say(line: str) -> None:
        with printing:
            print(line, flush=True)

    def run_job(server: str, job) -> list:
        try:
            return run_one(server, job)
        except urllib.error.HTTPError as exc:  # the server answers, with an error: not a dead server
            raise ComfyError([f"HTTP {exc.code} from {server}: {exc.reason}"]) from None

    def run_one(server: str, job) -> list:
        client = ComfyClient(server, log=lambda line: say(f"[{server}] {job.label}: {line}"))
        job_api = apply_overrides(api, Overrides(prompt=job.prompt, seed=job.seed))
        if job.image is not None:
            job_api = apply_overrides(job_api, Overrides(image=client.upload_image(job.image)))
        if args.end_image is not None:
            job_api = apply_overrides(job_api, Overrides(end_image=client.upload_image(args.end_image)))
        return run(client, job_api, Path(args.out) / job.label, use_websocket=not args.no_websocket,
                   poll_interval=args.poll_interval, timeout=args.timeout)

    say(f"{len(jobs)} job(s) over {len(args.servers)} server(s): {', '.join(args.servers)}")
    outcomes = queue_batch.spread(jobs, args.servers, run_job, retries=args.retries, failure_types=(ComfyError,),
                                  log=say)
    for line in queue_batch.summary(outcomes):
        say(line)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
