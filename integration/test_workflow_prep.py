"""The workflow rewriting and the writer table, without a server (fast; runs before the server tests)."""
import json
from pathlib import Path

import pytest

import native_graphs
import tiny_models
import workflow_prep as prep

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))


@pytest.fixture(scope="module")
def sampling():
    return tiny_models.pack_module("engine.sampling.loop")


def _specs(api):
    return {spec.name: spec for spec in prep.needed_files(api)}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_bundled_workflow_is_rewritten_for_a_short_cpu_run(workflow, sampling):
    api = json.loads(workflow.read_text())
    queued = prep.shrink(api, sampling)
    assert api == json.loads(workflow.read_text()), "shrink must not modify its input"
    classes = {node["class_type"] for node in queued.values()}
    assert not classes & {"CLIPLoader", "CLIPTextEncode"}
    for node_id, node in api.items():
        if node["class_type"] == "CLIPTextEncode":  # same id, same text, umT5's 512 rows
            assert queued[node_id]["inputs"] == {"text": node["inputs"]["text"], "length": 512}
            assert queued[node_id]["class_type"] == prep.CONDITIONING_NODE
        elif {"width", "height", "length"} <= set(node["inputs"]):
            continues = "previous_latent" in node["inputs"]  # an SVI continuation: new frames after 1 + 4k
            windowed = prep.CONTEXT_WINDOWS in {n["class_type"] for n in api.values()}
            length = 4 * node["inputs"]["motion_latents"] + 5 if continues else (17 if windowed else 5)
            assert {k: queued[node_id]["inputs"][k] for k in ("width", "height", "length")} == \
                {"width": 96, "height": 64, "length": length}
        elif node["class_type"] == prep.CONTEXT_WINDOWS:  # windows of 3 latent frames, overlap 1: still split
            assert (queued[node_id]["inputs"]["context_length"], queued[node_id]["inputs"]["context_overlap"]) == (9, 4)
        elif isinstance(node["inputs"].get("length"), int):  # a clip continuing another
            after = queued[node_id]["inputs"]
            assert after["length"] >= 5 and after["length"] % 4 == 1
            assert after["length"] > after.get("overlap", 0) and after.get("overlap") == node["inputs"].get("overlap")
        elif prep.is_duo_sampler(node):
            before, after = node["inputs"], queued[node_id]["inputs"]
            kept = ("seed", "cfg_high", "cfg_low", "shift", "boundary", "sampler", "scheduler", "memory")
            assert {k: after[k] for k in kept if k in before} == {k: before[k] for k in kept if k in before}
            assert 1 <= after["steps"] <= before["steps"]
    for expected in prep.expected_switches(queued, sampling):
        steps = queued[expected.node_id]["inputs"]["steps"]
        if expected.variant == "ti2v_5b":
            assert expected.plan.switch_step == steps
        else:  # the short run still hands over between the experts
            assert 0 < expected.plan.switch_step < steps


def test_expected_frames_follow_the_graph(sampling):
    assert prep.clip_length(None) == prep.clip_length(1) == prep.clip_length(4) == 5
    assert prep.clip_length(5) == 9 and prep.clip_length(8) == 9 and prep.clip_length(9) == 13
    plain = prep.shrink(json.loads((REPO / "workflows/api/t2v_a14b.json").read_text()), sampling)
    assert prep.expected_frames(plain, "62") == 5
    native = prep.shrink(native_graphs.i2v_a14b(), sampling)  # through two KSamplerAdvanced to WanImageToVideo
    assert prep.expected_frames(native, "62") == 5
    join = {"1": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 96, "height": 64, "length": 5}},
            "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["9", 0]}},
            "3": {"class_type": "Wan22DuoI2VExtend", "inputs": {"length": 9, "overlap": 5, "previous_images": ["2", 0],
                                                                 "positive": ["8", 0]}},
            "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 2], "vae": ["9", 0]}},
            "5": {"class_type": "Wan22DuoJoinClips", "inputs": {"first": ["2", 0], "second": ["4", 0], "overlap": 5}},
            "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0]}},
            "8": {"class_type": prep.CONDITIONING_NODE, "inputs": {"text": "x", "length": 512}},
            "9": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}}
    assert prep.expected_frames(join, "6") == 5 + 9 - 5
    assert prep.expected_frames(join, "8") is None  # the conditioning's 512 rows are no frame count


def test_bundled_file_names_map_to_the_right_tiny_files():
    t2v = _specs(json.loads((REPO / "workflows/api/t2v_a14b_lightning.json").read_text()))
    high = t2v["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"]
    assert (high.folder, high.kind, high.variant, high.storage) == ("diffusion_models", "dit", "t2v_a14b", "fp8_scaled")
    lora = t2v["wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"]
    assert (lora.folder, lora.kind, lora.variant) == ("loras", "lora", "t2v_a14b")
    assert t2v["wan_2.1_vae.safetensors"].version == "2.1"
    ti2v = _specs(json.loads((REPO / "workflows/api/ti2v_5b_i2v.json").read_text()))
    assert ti2v["wan2.2_ti2v_5B_fp16.safetensors"].variant == "ti2v_5b"
    assert ti2v["wan2.2_ti2v_5B_fp16.safetensors"].storage == "fp16"
    vae = ti2v["wan2.2_vae.safetensors"]
    assert (vae.version, vae.full_size) == ("2.2", False)  # our loader reads the width from the file
    assert ti2v["wan22duo_first_frame.png"].folder == "input"


def test_svi_workflow_gets_tiny_loras_under_the_svi_names_and_its_join_length(sampling):
    api = json.loads((REPO / "workflows/api/i2v_a14b_svi.json").read_text())
    specs = _specs(api)
    for role in ("high", "low"):
        lora = specs[f"SVI_Wan2.2-I2V-A14B_{role}_noise_lora_v2.0_pro.safetensors"]
        assert (lora.folder, lora.kind, lora.variant) == ("loras", "lora", "i2v_a14b")
    queued = prep.shrink(api, sampling)
    (save,) = [k for k, n in queued.items() if n["class_type"] == "SaveVideo"]
    assert prep.expected_frames(queued, save) == 5 + 9 - 5  # clip 2 repeats the anchor frame and 4 frames of clip 1


def test_disk_workflow_expects_every_clip_appended_without_its_repeated_frames(sampling):
    queued = prep.shrink(json.loads((REPO / "workflows/api/i2v_a14b_svi_disk.json").read_text()), sampling)
    (save,) = [k for k, n in queued.items() if n["class_type"] == "Wan22DuoSaveVideoFromDisk"]
    assert prep.expected_frames(queued, save) == 5 + (9 - 5) + (9 - 5)  # clips 2 and 3 repeat 1 + 4 frames


def test_comfyui_native_loaders_are_covered():
    specs = _specs(native_graphs.i2v_a14b())
    assert specs["wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"].variant == "i2v_a14b"
    assert specs["wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"].variant == "i2v_a14b"
    assert specs["wan_2.1_vae.safetensors"].full_size is False
    ti2v = _specs(native_graphs.ti2v_5b())
    assert ti2v["wan2.2_vae.safetensors"].full_size is True  # ComfyUI builds the 2.2 VAE at full size
    gguf = _specs(native_graphs.i2v_a14b("UnetLoaderGGUF", high="Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf",
                                         low="Wan2.2-I2V-A14B-LowNoise-Q8_0.gguf"))
    high = gguf["Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"]
    assert (high.folder, high.kind, high.variant, high.storage) == ("unet", "gguf", "i2v_a14b", "Q4_K")
    assert gguf["Wan2.2-I2V-A14B-LowNoise-Q8_0.gguf"].storage == "Q8_0"
    # The LoRA above the GGUF expert finds its variant through the GGUF loader.
    assert gguf["wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"].variant == "i2v_a14b"


def test_a_loader_without_a_writer_names_the_node_and_file():
    api = native_graphs.i2v_a14b()
    api["70"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}}
    with pytest.raises(prep.WorkflowPrepError, match=r"node 70 \(CLIPVisionLoader\) reads the file "
                                                     r"'clip_vision_h.safetensors'.*LOADERS"):
        prep.needed_files(api)


def test_a_model_name_without_a_variant_is_refused():
    api = native_graphs.i2v_a14b(high="my_expert.safetensors")
    with pytest.raises(prep.WorkflowPrepError, match=r"node 10 \(UNETLoader\).*'my_expert.safetensors'"):
        prep.needed_files(api)


def test_text_encoder_output_used_elsewhere_is_an_error(sampling):
    api = native_graphs.ti2v_5b()
    api["23"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["20", 0], "stop_at_clip_layer": -1}}
    with pytest.raises(prep.WorkflowPrepError, match=r"node 23 \(CLIPSetLastLayer\).*node 20"):
        prep.shrink(api, sampling)


def test_one_file_for_two_loaders_is_merged_to_what_both_need():
    ours = prep.FileSpec("vae", "wan2.2_vae.safetensors", "vae", version="2.2")
    comfy = prep.FileSpec("vae", "wan2.2_vae.safetensors", "vae", version="2.2", full_size=True)
    assert ours.merged(comfy).full_size and comfy.merged(ours).full_size
    with pytest.raises(prep.WorkflowPrepError, match="two different files"):
        ours.merged(prep.FileSpec("vae", "wan2.2_vae.safetensors", "vae", version="2.1"))


@pytest.mark.parametrize("switch, steps, expected", [(-1, 40, None), (0, 40, (4, 0)), (40, 40, (4, 4)),
                                                      (20, 40, (4, 2)), (1, 40, (4, 1)), (39, 40, (4, 3))])
def test_explicit_switch_steps_keep_their_share(sampling, switch, steps, expected):
    api = json.loads((REPO / "workflows/api/t2v_a14b.json").read_text())
    api["50"]["inputs"].update(switch_step=switch, steps=steps)
    inputs = prep.shrink(api, sampling)["50"]["inputs"]
    if expected is None:
        assert inputs["switch_step"] == -1 and inputs["steps"] == 4
    else:
        assert (inputs["steps"], inputs["switch_step"]) == expected


def test_steps_grow_until_the_switch_is_inside(sampling):
    """At shift 30 the wan grid keeps t >= 875 for the first 5 of 5 steps; 6 steps hand over after 5."""
    api = json.loads((REPO / "workflows/api/t2v_a14b.json").read_text())
    api["50"]["inputs"].update(shift=30.0, steps=40)
    inputs = prep.shrink(api, sampling)["50"]["inputs"]
    assert (inputs["steps"], inputs["switch_step"]) == (6, -1)
    assert prep.plan_for(sampling, "t2v_a14b", True, inputs, 6, 30.0).switch_step == 5
    assert prep.plan_for(sampling, "t2v_a14b", True, inputs, 5, 30.0).switch_step == 5


def test_tiny_model_name_rules():
    assert tiny_models.variant_from_name("wan2.2_ti2v_5B_fp16.safetensors") == "ti2v_5b"
    assert tiny_models.variant_from_name("Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf") == "i2v_a14b"
    assert tiny_models.variant_from_name("wan2.2_t2v_high_noise_14B_fp16.safetensors") == "t2v_a14b"
    assert tiny_models.variant_from_name("umt5_xxl.safetensors") is None
    assert tiny_models.storage_from_name("x_fp8_e4m3fn_scaled.safetensors") == "fp8_scaled"
    assert tiny_models.storage_from_name("x_fp8_e5m2.safetensors") == "fp8_e5m2"
    assert tiny_models.storage_from_name("x_fp8_e4m3fn.safetensors") == "fp8_e4m3fn"
    assert tiny_models.storage_from_name("x_bf16.safetensors") == "bf16"
    assert tiny_models.vae_version_from_name("Wan2_1_VAE_bf16.safetensors") == "2.1"
    assert tiny_models.vae_version_from_name("wan2.2_vae.safetensors") == "2.2"


def _with_model_sampler(graph: dict, shift: float, model_shift) -> dict:
    """native_graphs.i2v_a14b with a MODEL-input Duo sampler on its two ModelSamplingSD3 chains."""
    for node_id in ("13", "14"):
        if model_shift is None:  # bypass the ModelSamplingSD3 nodes
            graph["50" if node_id == "13" else "51"]["inputs"]["model"] = graph[node_id]["inputs"]["model"]
            del graph[node_id]
        else:
            graph[node_id]["inputs"]["shift"] = model_shift
    graph["55"] = {"class_type": "Wan22DuoModelSampler", "inputs": {
        "high_noise_model": ["13" if model_shift is not None else "12", 0],
        "low_noise_model": ["14" if model_shift is not None else "11", 0], "positive": ["40", 0],
        "negative": ["40", 1], "latent": ["40", 2], "seed": 1, "steps": 40, "cfg_high": 3.5, "cfg_low": 3.5,
        "shift": shift, "boundary": -1.0, "switch_step": -1, "sampler": "unipc", "scheduler": "wan",
        "memory": "offload_cpu"}}
    return graph


@pytest.mark.parametrize("shift, model_shift, expected", [(3.0, 7.0, 3.0), (-1.0, 7.0, 7.0), (-1.0, None, 5.0)])
def test_the_run_shift_follows_the_documented_rule(sampling, shift, model_shift, expected):
    graph = _with_model_sampler(native_graphs.i2v_a14b(), shift, model_shift)
    assert prep.run_shift(graph, "55", sampling, "i2v_a14b") == expected
    queued = prep.shrink(graph, sampling)
    (found,) = prep.expected_switches(queued, sampling)
    assert (found.node_id, found.variant, found.has_low, found.shift) == ("55", "i2v_a14b", True, expected)
    assert found.plan.schedule.shift == expected and 0 < found.plan.switch_step < queued["55"]["inputs"]["steps"]
