"""Start and stop a real ComfyUI server (``main.py`` of the copied tree) for the HTTP tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# ~8 s on an idle machine; CI shares 2 cores with nothing, developers with more (WAN22DUO_SERVER_START_TIMEOUT_S
# raises it on a loaded machine: ComfyUI 0.33.0 took over 180 s to start beside niced training runs).
START_TIMEOUT_S = float(os.environ.get("WAN22DUO_SERVER_START_TIMEOUT_S") or 180.0)
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyServer:
    process: subprocess.Popen
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(text[-lines:])

    def get_json(self, path: str, timeout: float = 10.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """SIGTERM to the server's PID, SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT_S)


def start_server(root: Path, log_path: Path, required_nodes=(), timeout: float = START_TIMEOUT_S,
                 extra_args=()) -> ComfyServer:
    """``python main.py --cpu --listen 127.0.0.1 --port P --cache-none`` in ``root``; returns once /object_info answers.

    ``--cache-none`` makes every node of every prompt run: with ComfyUI's default cache a node whose
    inputs equal those of an earlier prompt (the same sampler settings in two workflows) is reused and
    its ui output (the sampler's switch report) is missing from the later prompt's /history.

    Raises RuntimeError with the log's tail when the server exits, does not answer in time, or lacks
    one of ``required_nodes`` (a custom node pack failed to import). The process is stopped then.
    ``extra_args`` go on the command line (a second server of the same tree: its own ``--output-directory``).
    """
    port = free_port()
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--cache-none",
               *extra_args]
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()  # the child holds its own descriptor
    server = ComfyServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        info = _wait_for_object_info(server, timeout)
        missing = [name for name in required_nodes if name not in info]
        if missing:
            raise RuntimeError(f"the server started without the nodes {missing}; a custom node pack failed to "
                               f"import (look for 'Cannot import' in the log):\n{server.log_tail()}")
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_object_info(server: ComfyServer, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"ComfyUI exited with code {code} before answering:\n{server.log_tail()}")
        try:
            return server.get_json("/object_info")
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"ComfyUI did not answer GET /object_info within {timeout:g} s:\n"
                                   f"{server.log_tail()}") from None
            time.sleep(0.5)
