"""GGUF experts through the loader nodes: file lists, lazy handles, LoRA node, a two-expert run."""
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from wan22duo.engine.testing import tiny_gguf
from wan22duo.engine.testing.tiny_lora import make_tiny_lora
from wan22duo.engine.sampling.loop import sample
from wan22duo.nodes import loaders
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoTI2VLoader
from wan22duo.nodes.lora import Wan22DuoLoraLoader

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = dict(dim=256, ffn_dim=512, num_layers=1, text_dim=256)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    write = tiny_gguf.write_tiny_gguf
    out = {
        "high": write(d / "Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf", "t2v_a14b", "Q8_0", seed=1, **SIZES),
        "low": write(d / "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf", "t2v_a14b", "Q4_K", seed=2,
                     types={"blocks.0.ffn.2.weight": "Q6_K"}, **SIZES),
        "ti2v": write(d / "Wan2.2-TI2V-5B-Q5_K_M.gguf", "ti2v_5b", "Q5_K", seed=3, **SIZES),
    }
    return {k: str(v) for k, v in out.items()}


def fake_folder_paths(roots: dict, registered: bool):
    """The parts of ComfyUI's folder_paths the loaders use, over real folders.

    diffusion_models spans unet/ and diffusion_models/ as in ComfyUI; ``registered`` adds
    ComfyUI-GGUF's ``unet_gguf`` (the same folders, ``.gguf`` only)."""
    fp = types.ModuleType("folder_paths")
    fp.folder_names_and_paths = {"diffusion_models": (list(roots.values()), {".safetensors", ".sft"})}
    if registered:
        fp.folder_names_and_paths["unet_gguf"] = (list(roots.values()), {".gguf"})

    def walk(base, excluded_dir_names=None):
        found = []
        for dirpath, subdirs, names in os.walk(base):
            subdirs[:] = [s for s in subdirs if s not in (excluded_dir_names or [])]
            found += [os.path.relpath(os.path.join(dirpath, n), base) for n in names]
        return found, {}

    def listing(folder):
        paths, exts = fp.folder_names_and_paths[folder]
        return sorted({n for p in paths for n in walk(p)[0] if os.path.splitext(n)[1].lower() in exts})

    fp.recursive_search = walk
    fp.filter_files_extensions = lambda names, exts: sorted(n for n in names if os.path.splitext(n)[1].lower() in exts)
    fp.get_folder_paths = lambda folder: list(fp.folder_names_and_paths[folder][0])
    fp.get_filename_list = listing
    return fp


@pytest.mark.parametrize("registered", [False, True])
def test_both_folders_are_listed_once(tmp_path, monkeypatch, registered):
    roots = {name: tmp_path / name for name in ("unet", "diffusion_models")}
    for name, files in {"unet": ["a-Q4_K_M.gguf", "same.gguf", "sub/b-Q8_0.gguf", "notes.txt"],
                        "diffusion_models": ["wan2.2_ti2v_5B_fp16.safetensors", "same.gguf", "c.GGUF"]}.items():
        for f in files:
            (roots[name] / f).parent.mkdir(parents=True, exist_ok=True)
            (roots[name] / f).write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "folder_paths", fake_folder_paths({k: str(v) for k, v in roots.items()},
                                                                       registered))
    expected = ["a-Q4_K_M.gguf", "c.GGUF", "same.gguf", os.path.join("sub", "b-Q8_0.gguf"),
                "wan2.2_ti2v_5B_fp16.safetensors"]
    assert loaders.model_files() == sorted(expected)
    for node in (Wan22DuoExpertLoader, Wan22DuoTI2VLoader):
        assert node.INPUT_TYPES()["required"]["unet_name"][0] == sorted(expected)


def test_expert_loader_takes_gguf_files(files):
    (handle,) = Wan22DuoExpertLoader().load(files["high"], "auto", "default", "auto", "cpu")
    assert not handle.loaded and handle.info["role"] == "high_noise" and handle.info["variant"] == "t2v_a14b"
    assert handle.info["weight_bytes"] <= os.path.getsize(files["high"])
    assert handle.info["weight_bytes"] > 0.95 * os.path.getsize(files["high"])
    model = handle.acquire()
    assert model.blocks[0].ffn[0].weight_format.name == "Q8_0"
    (low,) = Wan22DuoExpertLoader().load(files["low"], "auto", "bf16", "auto", "cpu")
    assert low.info["role"] == "low_noise"
    assert low.acquire().blocks[0].ffn[0].weight.dtype == torch.bfloat16  # decoded at load on request


def test_ti2v_loader_and_wrong_node(files):
    (handle,) = Wan22DuoTI2VLoader().load(files["ti2v"], "default", "auto", "cpu")
    assert handle.info["variant"] == "ti2v_5b"
    with pytest.raises(ValueError, match="Wan22DuoTI2VLoader"):
        Wan22DuoExpertLoader().load(files["ti2v"], "auto", "default", "auto", "cpu")
    with pytest.raises(ValueError, match="Wan22DuoExpertLoader"):
        Wan22DuoTI2VLoader().load(files["high"], "default", "auto", "cpu")


def test_lora_node_on_a_gguf_expert_keeps_it_quantized(files, tmp_path):
    shapes = {k: tuple(v.shape) for k, v in tiny_gguf.tiny_state_dict("t2v_a14b", 1, **SIZES).items()}
    lora = tmp_path / "lightx2v_like.safetensors"
    save_file(make_tiny_lora(shapes, "kohya", full_deltas=True, seed=5), str(lora))
    (expert,) = Wan22DuoExpertLoader().load(files["high"], "auto", "default", "fp32", "cpu")
    (patched,) = Wan22DuoLoraLoader().load_lora(expert, str(lora), 1.0)
    model = patched.acquire()
    q = model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.uint8 and len(q.lora_branches) == 1
    base = expert.acquire().blocks[0].norm3.weight
    merged = model.blocks[0].norm3.weight  # a Lightning-style norm diff merges into the F32 tensor
    assert merged.dtype == torch.float32 and not torch.equal(merged, base)


def test_two_gguf_experts_sample_and_offload(files):
    (high,) = Wan22DuoExpertLoader().load(files["high"], "auto", "default", "auto", "cpu")
    (low,) = Wan22DuoExpertLoader().load(files["low"], "auto", "default", "auto", "cpu")
    g = torch.Generator().manual_seed(0)
    latent = torch.zeros(1, 16, 1, 4, 4)
    pos, neg = torch.randn(1, 8, 256, generator=g), torch.zeros(1, 8, 256)
    result = sample(high, low, latent, pos, neg, seed=3, steps=4, memory="offload_cpu")
    assert result.expert_steps["high"] > 0 and result.expert_steps["low"] > 0
    assert torch.isfinite(result.latent).all() and result.latent.abs().max() > 0
    again = sample(high, low, latent, pos, neg, seed=3, steps=4, memory="release")
    assert torch.equal(again.latent, result.latent)


def test_switch_plot_route_reads_gguf_headers(files):
    from wan22duo.nodes.routes import model_info

    info = model_info(files["high"])
    assert info["variant"] == "t2v_a14b" and info["source"] == "header"
    assert model_info(files["ti2v"])["variant"] == "ti2v_5b"
