"""Node schemas: well-formed INPUT_TYPES / RETURN_TYPES, the public API of common.md, unique ids."""
import inspect
import json
from pathlib import Path

import pytest

from wan22duo import nodes
from wan22duo.nodes import _comfy, context_windows, keyframes, loaders, model_sampler, samplers, speed, vae

# Every ComfyUI 0.3.76 node id (with schema digests), committed so this runs on any machine.
NODE_IDS = Path(__file__).resolve().parent.parent / "workflows" / "schema" / "comfyui-0.3.76-node-digests.json"
OURS = {**loaders.NODE_CLASS_MAPPINGS, **samplers.NODE_CLASS_MAPPINGS, **vae.NODE_CLASS_MAPPINGS,
        **model_sampler.NODE_CLASS_MAPPINGS, **keyframes.NODE_CLASS_MAPPINGS, **speed.NODE_CLASS_MAPPINGS,
        **context_windows.NODE_CLASS_MAPPINGS}
CATEGORIES = {"Wan22Duo/loaders", "Wan22Duo/sampling", "Wan22Duo/latent", "Wan22Duo/vae", "Wan22Duo/keyframes"}
SOCKETS = {"WAN22DUO_MODEL", "WAN22DUO_VAE", "WAN22DUO_KEYFRAMES", "WAN22DUO_PARALLEL", "WAN22DUO_STEP_CACHE",
           "WAN22DUO_PHASES", "WAN22DUO_CONTEXT_WINDOWS", "MODEL", "CONDITIONING", "LATENT", "IMAGE", "INT", "FLOAT", "STRING", "BOOLEAN"}


@pytest.fixture(autouse=True)
def model_files(monkeypatch):
    """Pretend ComfyUI's model folders hold files, so file combos are populated."""
    fake = {"diffusion_models": ["wan2.2_t2v_high_noise_14B_fp16.safetensors"], "vae": ["wan_2.1_vae.safetensors"]}
    monkeypatch.setattr(_comfy, "list_files", lambda folder: fake[folder])


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}, cls
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            yield section, name, entry


@pytest.mark.parametrize("node_id", sorted(OURS))
def test_inputs_are_well_formed(node_id):
    cls = OURS[node_id]
    for section, name, entry in _inputs(cls):
        assert isinstance(entry, tuple) and len(entry) == 2, (node_id, name)
        kind, options = entry
        assert options.get("tooltip", "").strip(), f"{node_id}.{name} has no tooltip"
        if isinstance(kind, list):
            assert kind, f"{node_id}.{name}: empty combo"
            assert all(isinstance(v, str) for v in kind)
            if "default" in options:
                assert options["default"] in kind, (node_id, name)
            continue
        assert kind in SOCKETS, (node_id, name, kind)
        if kind in ("INT", "FLOAT"):
            lo, hi, default = options["min"], options["max"], options["default"]
            assert lo <= default <= hi, (node_id, name)
            assert isinstance(default, int if kind == "INT" else float), (node_id, name)
            assert options.get("step", 1) > 0


@pytest.mark.parametrize("node_id", sorted(OURS))
def test_outputs_category_and_function(node_id):
    cls = OURS[node_id]
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert all(t in SOCKETS for t in cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert cls.CATEGORY in CATEGORIES
    assert cls.DESCRIPTION.strip()
    function = getattr(cls, cls.FUNCTION)
    params = inspect.signature(function).parameters
    for _, name, _ in _inputs(cls):
        assert name in params, f"{node_id}.{cls.FUNCTION} does not take input {name!r}"
    optional = {name for section, name, _ in _inputs(cls) if section == "optional"}
    for name in optional:
        assert params[name].default is None, f"optional input {name!r} needs a None default"
    assert node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert nodes.NODE_CLASS_MAPPINGS[node_id] is cls


def test_ids_collide_with_nothing_in_comfyui_or_the_wrapper():
    core = set(json.loads(NODE_IDS.read_text(encoding="utf-8")))
    assert len(core) > 400  # the reference file really lists ComfyUI's nodes
    for node_id in OURS:
        assert node_id.startswith("Wan22Duo")
        assert node_id not in core
        assert not node_id.startswith("WanVideo")


def _required(node_id):
    return OURS[node_id].INPUT_TYPES()["required"]


def test_sampler_public_api_order_and_official_defaults():
    req = _required("Wan22DuoSampler")
    assert list(req) == ["high_noise_model", "positive", "negative", "latent", "seed", "steps", "cfg_high", "cfg_low",
                         "shift", "boundary", "switch_step", "sampler", "scheduler", "memory"]
    # Official T2V-A14B settings (spec §1.2): 40 steps, shift 12, guide scale (low 3.0, high 4.0).
    defaults = {k: v[1].get("default") for k, v in req.items()}
    assert defaults["steps"] == 40 and defaults["shift"] == 12.0
    assert (defaults["cfg_high"], defaults["cfg_low"]) == (4.0, 3.0)
    assert defaults["boundary"] == -1.0 and defaults["switch_step"] == -1
    assert req["sampler"][0] == ["unipc", "euler", "dpmpp_2m"] and defaults["sampler"] == "unipc"
    assert req["scheduler"][0] == ["wan", "simple"] and defaults["scheduler"] == "wan"
    assert req["memory"][0] == ["offload_cpu", "release", "keep_both"] and defaults["memory"] == "offload_cpu"
    assert req["high_noise_model"][0] == "WAN22DUO_MODEL"
    assert OURS["Wan22DuoSampler"].INPUT_TYPES()["optional"]["low_noise_model"][0] == "WAN22DUO_MODEL"
    assert OURS["Wan22DuoSampler"].RETURN_TYPES == ("LATENT", "INT")
    assert OURS["Wan22DuoSampler"].RETURN_NAMES == ("latent", "switch_step")


def test_model_sampler_public_api_mirrors_the_sampler():
    """Same input names and order as Wan22DuoSampler; MODEL sockets; shift -1 = from the MODEL / official."""
    req = _required("Wan22DuoModelSampler")
    assert list(req) == list(_required("Wan22DuoSampler"))
    assert req["high_noise_model"][0] == "MODEL"
    assert OURS["Wan22DuoModelSampler"].INPUT_TYPES()["optional"]["low_noise_model"][0] == "MODEL"
    assert req["shift"][1]["default"] == -1.0 and req["shift"][1]["min"] == -1.0
    for name in ("seed", "steps", "cfg_high", "cfg_low", "boundary", "switch_step", "sampler", "scheduler", "memory"):
        assert req[name] == (req[name][0], {**_required("Wan22DuoSampler")[name][1], "tooltip": req[name][1]["tooltip"]})
    assert OURS["Wan22DuoModelSampler"].RETURN_TYPES == ("LATENT", "INT")
    assert OURS["Wan22DuoModelSampler"].RETURN_NAMES == ("latent", "switch_step")


def test_loader_public_api():
    req = _required("Wan22DuoExpertLoader")
    assert list(req) == ["unet_name", "role", "weight_dtype", "compute_dtype", "device"]
    assert req["role"][0] == ["auto", "high_noise", "low_noise"]
    assert req["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e5m2", "bf16", "fp16", "fp32"]
    assert req["compute_dtype"][0] == ["auto", "bf16", "fp16", "fp32"]
    assert req["device"][0][:2] == ["auto", "cpu"]
    assert list(_required("Wan22DuoTI2VLoader")) == ["unet_name", "weight_dtype", "compute_dtype", "device"]
    vae_req = _required("Wan22DuoVAELoader")
    assert list(vae_req) == ["vae_name", "dtype", "device"]
    assert vae_req["dtype"][0] == ["fp32", "bf16", "fp16"] and vae_req["dtype"][1]["default"] == "fp32"
    for node_id in ("Wan22DuoExpertLoader", "Wan22DuoTI2VLoader"):
        assert OURS[node_id].RETURN_TYPES == ("WAN22DUO_MODEL",)
    assert OURS["Wan22DuoVAELoader"].RETURN_TYPES == ("WAN22DUO_VAE",)


@pytest.mark.parametrize("node_id, width, height, length, step", [
    ("Wan22DuoEmptyLatent", 1280, 720, 81, 16),  # T2V-A14B official size and frame count (spec §1.2)
    ("Wan22DuoI2VConditioning", 1280, 720, 81, 16),
    ("Wan22DuoTI2VLatent", 1280, 704, 121, 32),  # TI2V-5B: 1280*704, 121 frames
])
def test_latent_node_defaults(node_id, width, height, length, step):
    req = _required(node_id)
    assert req["width"][1]["default"] == width and req["width"][1]["step"] == step
    assert req["height"][1]["default"] == height and req["height"][1]["step"] == step
    assert req["length"][1]["default"] == length and req["length"][1]["step"] == 4
    assert req["batch_size"][1]["default"] == 1


def test_latent_and_vae_node_inputs():
    assert list(_required("Wan22DuoI2VConditioning")) == [
        "positive", "negative", "vae", "start_image", "width", "height", "length", "batch_size"]
    assert OURS["Wan22DuoI2VConditioning"].RETURN_TYPES == ("CONDITIONING", "CONDITIONING", "LATENT")
    assert list(_required("Wan22DuoTI2VLatent")) == ["vae", "width", "height", "length", "batch_size"]
    assert list(OURS["Wan22DuoTI2VLatent"].INPUT_TYPES()["optional"]) == ["start_image"]
    decode = _required("Wan22DuoVAEDecode")
    assert list(decode) == ["vae", "samples", "tile_size", "tile_overlap"]
    assert decode["tile_size"][1]["default"] == 0 and decode["tile_overlap"][1]["default"] == 64
    assert OURS["Wan22DuoVAEDecode"].RETURN_TYPES == ("IMAGE",)
    assert list(_required("Wan22DuoVAEEncode")) == ["vae", "pixels"]
    assert OURS["Wan22DuoVAEEncode"].RETURN_TYPES == ("LATENT",)


def test_file_lists_are_empty_without_comfyui(monkeypatch):
    monkeypatch.undo()  # the real helper: no folder_paths here
    assert _comfy.list_files("diffusion_models") == []
    assert _comfy.default_device().type == "cpu"
    assert _comfy.interrupt_check() is None


def test_keyframe_node_inputs():
    """Issue 14's nodes: input order and defaults (a public API once workflows store them)."""
    types = lambda node_id: OURS[node_id].INPUT_TYPES()  # noqa: E731
    assert list(_required("Wan22DuoI2VKeyframes")) == [
        "positive", "negative", "vae", "width", "height", "length", "batch_size"]
    assert list(types("Wan22DuoI2VKeyframes")["optional"]) == ["start_image", "end_image", "keyframes"]
    assert list(_required("Wan22DuoTI2VKeyframes")) == ["vae", "width", "height", "length", "batch_size"]
    assert list(types("Wan22DuoTI2VKeyframes")["optional"]) == ["start_image", "end_image", "keyframes"]
    assert list(_required("Wan22DuoKeyframe")) == ["image", "frame"]
    assert list(_required("Wan22DuoI2VExtend")) == ["positive", "negative", "vae", "length", "overlap"]
    assert list(_required("Wan22DuoTI2VExtend")) == ["vae", "length", "overlap"]
    for node_id, length, overlap_step in (("Wan22DuoI2VExtend", 81, 1), ("Wan22DuoTI2VExtend", 121, 4)):
        req = _required(node_id)
        assert list(types(node_id)["optional"]) == ["previous_images", "previous_latent", "end_image", "keyframes"]
        assert req["length"][1]["default"] == length and req["length"][1]["step"] == 4
        assert (req["length"][1]["min"] - 1) % 4 == 0  # the length grid is 4n+1
        assert req["overlap"][1]["default"] == 5 and req["overlap"][1]["step"] == overlap_step
    assert list(_required("Wan22DuoJoinClips")) == ["first", "second", "overlap"]
    assert OURS["Wan22DuoJoinClips"].RETURN_TYPES == ("IMAGE",)
    assert OURS["Wan22DuoKeyframe"].RETURN_TYPES == ("WAN22DUO_KEYFRAMES",)
    for node_id in ("Wan22DuoI2VKeyframes", "Wan22DuoTI2VKeyframes"):
        req = _required(node_id)
        want = (1280, 720, 81, 16) if node_id.startswith("Wan22DuoI2V") else (1280, 704, 121, 32)
        assert (req["width"][1]["default"], req["height"][1]["default"], req["length"][1]["default"],
                req["width"][1]["step"]) == want


def test_speed_inputs_are_appended_to_both_samplers():
    """Issue 23: step_cache and lead_phases come after every existing input (names and order stay public API)."""
    assert list(OURS["Wan22DuoSampler"].INPUT_TYPES()["optional"]) == [
        "low_noise_model", "gpu_budget", "parallel", "step_cache", "lead_phases", "context_windows"]
    assert list(OURS["Wan22DuoModelSampler"].INPUT_TYPES()["optional"]) == ["low_noise_model", "step_cache",
                                                                          "lead_phases", "context_windows"]
    assert list(_required("Wan22DuoStepCache")) == ["threshold", "warmup_steps"]
    for node_id, model_type in (("Wan22DuoPhase", "WAN22DUO_MODEL"), ("Wan22DuoModelPhase", "MODEL")):
        assert list(_required(node_id)) == ["model", "cfg", "steps"]
        assert _required(node_id)["model"][0] == model_type
        assert list(OURS[node_id].INPUT_TYPES()["optional"]) == ["lead_phases"]
        assert OURS[node_id].RETURN_TYPES == ("WAN22DUO_PHASES",)


def test_context_windows_node_and_input():
    """Issue 24: one optional context_windows input appended to both samplers, fed by Wan22DuoContextWindows."""
    for node_id in ("Wan22DuoSampler", "Wan22DuoModelSampler"):
        assert OURS[node_id].INPUT_TYPES()["optional"]["context_windows"][0] == "WAN22DUO_CONTEXT_WINDOWS"
    req = _required("Wan22DuoContextWindows")
    assert list(req) == ["context_length", "context_overlap", "schedule", "fuse", "causal_anchor", "freenoise"]
    assert req["context_length"][1]["default"] == 81 and req["context_length"][1]["step"] == 4
    assert req["schedule"][0] == ["uniform", "static"] and req["fuse"][0] == ["pyramid", "overlap_linear", "flat"]
    assert OURS["Wan22DuoContextWindows"].RETURN_TYPES == ("WAN22DUO_CONTEXT_WINDOWS",)
