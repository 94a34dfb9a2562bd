"""nodes/routes.py: the file-name fallback, the lookup answers, and the route wiring (with
stand-ins for ComfyUI's server, folder_paths and aiohttp, which tests don't have)."""
import asyncio
import json
import sys
import types

import pytest

from wan22duo.nodes import routes


@pytest.mark.parametrize(
    "name, variant, role",
    [
        ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "t2v_a14b", "high_noise"),
        ("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "t2v_a14b", "low_noise"),
        ("wan2.2_i2v_high_noise_14B_fp16.safetensors", "i2v_a14b", "high_noise"),
        ("Wan2_2-I2V-A14B-LOW_bf16.safetensors", "i2v_a14b", "low_noise"),
        ("wan2.2_ti2v_5B_fp16.safetensors", "ti2v_5b", "single"),
        ("video/wan22_5b.safetensors", "ti2v_5b", "single"),
        ("wan2.2_t2v_14B_highnoise.safetensors", "t2v_a14b", "high_noise"),
        ("flux1-dev.safetensors", None, "unknown"),
        ("model_15b.safetensors", None, "unknown"),  # 15b is not 5b
        ("highlight_t2v.safetensors", "t2v_a14b", "unknown"),  # "highlight" is not "high"
    ],
)
def test_guesses_from_the_file_name(name, variant, role):
    assert routes.guess_variant(name) == variant
    assert routes.guess_role(name, variant) == role


def test_describe_carries_the_official_boundary():
    assert routes.describe("t2v_a14b", "a", "name")["boundary"] == 0.875
    assert routes.describe("i2v_a14b", "a", "name")["boundary"] == 0.9
    assert routes.describe("ti2v_5b", "a", "name")["boundary"] is None


def test_lookup_without_a_name_is_a_bad_request():
    status, body = routes.lookup("", lambda name: pytest.fail("must not resolve"))
    assert status == 400 and "name" in body["error"]


def test_lookup_of_a_missing_file_answers_with_the_guess():
    status, body = routes.lookup("wan2.2_i2v_low_noise_14B.safetensors", lambda name: None)
    assert status == 200
    assert body["variant"] is None
    assert "diffusion_models" in body["error"]
    assert body["guess"]["variant"] == "i2v_a14b" and body["guess"]["source"] == "name"


@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b", "ti2v_5b"])
def test_lookup_reads_the_variant_from_the_header(tmp_path, variant):
    from wan22duo.engine.testing.tiny import write_tiny_dit

    # A misleading name: the header must win over it.
    path = write_tiny_dit(tmp_path / "wan2.2_t2v_high_noise.safetensors", variant=variant, storage="bf16")
    status, body = routes.lookup(path.name, lambda name: str(path))
    assert status == 200
    assert body["variant"] == variant and body["source"] == "header"
    assert body["boundary"] == {"t2v_a14b": 0.875, "i2v_a14b": 0.9, "ti2v_5b": None}[variant]
    assert body["role"] == ("single" if variant == "ti2v_5b" else "high_noise")


def test_lookup_of_a_file_that_is_no_dit_reports_the_error(tmp_path):
    path = tmp_path / "wan2.2_i2v_high_noise.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    status, body = routes.lookup(path.name, lambda name: str(path))
    assert status == 200 and body["variant"] is None
    assert "could not read" in body["error"]
    assert body["guess"]["variant"] == "i2v_a14b"


def test_register_routes_is_quiet_without_comfyui(monkeypatch):
    monkeypatch.setitem(sys.modules, "server", None)  # import server -> ImportError
    monkeypatch.setattr(routes, "_registered", False)
    assert routes.register_routes() is False


class _FakeRoutes:
    def __init__(self):
        self.handlers = {}

    def get(self, path):
        def decorate(fn):
            self.handlers[path] = fn
            return fn

        return decorate


def _install_fake_comfy(monkeypatch, listed, full_paths, gguf=()):
    fake_routes = _FakeRoutes()
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=fake_routes))
    folder_paths = types.ModuleType("folder_paths")
    lists = {"diffusion_models": list(listed), "unet_gguf": list(gguf)}  # ComfyUI-GGUF registers unet_gguf
    folder_paths.folder_names_and_paths = {"diffusion_models": ([], set()), "unet_gguf": ([], {".gguf"})}
    folder_paths.get_filename_list = lambda folder: lists.get(folder, [])
    folder_paths.get_full_path = lambda folder, name: full_paths.get(name)
    aiohttp = types.ModuleType("aiohttp")
    web = types.ModuleType("aiohttp.web")
    web.json_response = lambda body, status=200: {"status": status, "text": json.dumps(body)}
    aiohttp.web = web
    for name, module in {"server": server, "folder_paths": folder_paths, "aiohttp": aiohttp, "aiohttp.web": web}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(routes, "_registered", False)
    return fake_routes


def _get(handler, **query):
    request = types.SimpleNamespace(query=query)
    return asyncio.run(handler(request))


def test_route_answers_through_comfyui_server(monkeypatch):
    fake = _install_fake_comfy(monkeypatch, listed=["wan2.2_ti2v_5B_fp16.safetensors"], full_paths={})
    assert routes.register_routes() is True
    assert routes.register_routes() is True  # once only
    handler = fake.handlers[routes.ROUTE]
    assert _get(handler)["status"] == 400
    # Listed but unreadable (full path None here) and unlisted names: 200 with variant null.
    for name in ["wan2.2_ti2v_5B_fp16.safetensors", "../../etc/passwd"]:
        reply = _get(handler, name=name)
        body = json.loads(reply["text"])
        assert reply["status"] == 200 and body["variant"] is None, body


def test_route_reads_a_listed_file(monkeypatch, tmp_path):
    from wan22duo.engine.testing.tiny import write_tiny_dit

    path = write_tiny_dit(tmp_path / "a.safetensors", variant="i2v_a14b", storage="bf16")
    fake = _install_fake_comfy(monkeypatch, listed=["a.safetensors"], full_paths={"a.safetensors": str(path)})
    routes.register_routes()
    body = json.loads(_get(fake.handlers[routes.ROUTE], name="a.safetensors")["text"])
    assert body["variant"] == "i2v_a14b" and body["boundary"] == 0.9


def test_route_reads_a_gguf_header(monkeypatch, tmp_path):
    """ComfyUI's diffusion_models list never holds .gguf files; the route takes the loaders' list."""
    from wan22duo.engine.testing.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "Wan2.2-whatever-Q8_0.gguf", variant="i2v_a14b", qtype="Q8_0")
    name = path.name
    fake = _install_fake_comfy(monkeypatch, listed=[], full_paths={name: str(path)}, gguf=[name])
    routes.register_routes()
    body = json.loads(_get(fake.handlers[routes.ROUTE], name=name)["text"])
    # The name says nothing about the variant: only the header can tell I2V-A14B.
    assert routes.guess_variant(name) is None
    assert body["variant"] == "i2v_a14b" and body["source"] == "header" and body["boundary"] == 0.9, body
    # Not in any list: refused without reading, even though the path exists.
    fake = _install_fake_comfy(monkeypatch, listed=[], full_paths={name: str(path)}, gguf=[])
    routes.register_routes()
    body = json.loads(_get(fake.handlers[routes.ROUTE], name=name)["text"])
    assert body["variant"] is None and "is not a file" in body["error"], body
