"""Inputs only an API call can send get named errors at the node boundary (issue 26, item 6).

``POST /prompt`` takes any JSON and other packs' nodes return anything, so every node input
that is not a widget value is checked for what it is before the engine sees it.
"""
import re

import numpy as np
import pytest
import torch

from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes import _comfy
from wan22duo.nodes.keyframes import Wan22DuoI2VExtend, Wan22DuoKeyframe, Wan22DuoTI2VKeyframes
from wan22duo.nodes.loaders import Wan22DuoExpertLoader, Wan22DuoVAELoader
from wan22duo.nodes.lora import Wan22DuoLoraLoader
from wan22duo.nodes.model_sampler import Wan22DuoModelSampler
from wan22duo.nodes.samplers import Wan22DuoSampler
from wan22duo.nodes.vae import Wan22DuoVAEDecode

TINY = dict(dim=128, ffn_dim=256, num_layers=1)
NUMPY = np.zeros((1, 16, 1, 4, 4), np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    high = write_tiny_dit(d / "t2v_high_noise.safetensors", "t2v_a14b", seed=1, **TINY)
    vae = write_tiny_vae(d / "wan_2.1_vae.safetensors", "2.1")
    return {"high": Wan22DuoExpertLoader().load(str(high), "auto", "default", "auto", "cpu")[0],
            "vae": Wan22DuoVAELoader().load(str(vae), "fp32", "cpu")["result"][0]}


def prompts():
    return [[torch.zeros(1, 4, 4096), {}]], [[torch.zeros(1, 4, 4096), {}]]


def latent():
    return {"samples": torch.zeros(1, 16, 1, 4, 4)}


@pytest.mark.parametrize("value, said", [
    (None, "got nothing (None: is the input connected?)"),
    ("t2v_high_noise.safetensors", "got a str"),
    (NUMPY, "got a numpy ndarray; node values are torch tensors"),
])
def test_wrong_model_inputs_are_named(models, value, said):
    pos, neg = prompts()
    with pytest.raises(ValueError, match="high_noise_model must be a WAN22DUO_MODEL .*" + re.escape(said)):
        Wan22DuoSampler().sample(value, pos, neg, latent(), 0, steps=1)
    if value is not None:  # an optional input: None is "not connected", a valid choice for TI2V-5B
        with pytest.raises(ValueError, match="low_noise_model must be a WAN22DUO_MODEL"):
            Wan22DuoSampler().sample(models["high"], pos, neg, latent(), 0, steps=1, low_noise_model=value)
    with pytest.raises(ValueError, match="high_noise_model must be a ComfyUI MODEL .*Wan22DuoSampler"):
        Wan22DuoModelSampler().sample(value if value is not None else models["high"], pos, neg, latent(), 0, steps=1)
    with pytest.raises(ValueError, match="model must be a WAN22DUO_MODEL"):
        Wan22DuoLoraLoader().load_lora(value, "x.safetensors", 1.0)


@pytest.mark.parametrize("value, said", [
    (None, "latent must be a LATENT .*got nothing"),
    (NUMPY, "latent must be a LATENT .*got a numpy ndarray"),
    (torch.zeros(1, 16, 1, 4, 4), "latent must be a LATENT .*got a Tensor"),
    ({"noise_mask": torch.ones(1)}, r"latent is a LATENT without 'samples' \(its keys: 'noise_mask'\)"),
    ({"samples": NUMPY}, r"latent\['samples'\] must be a torch tensor, got a numpy ndarray"),
    ({"samples": torch.zeros(1, 16, 1, 4, 4), "noise_mask": [1]}, r"latent\['noise_mask'\] must be a torch tensor"),
])
def test_wrong_latent_inputs_are_named(models, value, said):
    pos, neg = prompts()
    with pytest.raises(ValueError, match=said):
        Wan22DuoSampler().sample(models["high"], pos, neg, value, 0, steps=1)
    with pytest.raises(ValueError, match=said.replace("latent", "samples", 1)):
        Wan22DuoVAEDecode().decode(models["vae"], value)
    if value is not None:  # optional: None there means "not connected" (its own message)
        with pytest.raises(ValueError, match=said.replace("latent", "previous_latent", 1)):
            Wan22DuoI2VExtend().extend(pos, neg, models["vae"], 9, 1, previous_latent=value)


def test_wrong_vae_keyframe_and_lora_name_inputs_are_named(models):
    image = torch.rand(1, 32, 32, 3)
    with pytest.raises(ValueError, match="vae must be a WAN22DUO_VAE from Wan22DuoVAELoader, got nothing"):
        Wan22DuoVAEDecode().decode(None, latent())
    with pytest.raises(ValueError, match="vae must be a WAN22DUO_VAE .*got a ModelHandle"):
        Wan22DuoTI2VKeyframes().generate(models["high"], 32, 32, 9, 1, start_image=image)
    with pytest.raises(ValueError, match="keyframes must come from a Wan22DuoKeyframe node .*got a str"):
        Wan22DuoKeyframe().add(image, 4, keyframes="frame 4")
    with pytest.raises(ValueError, match="keyframes must come from a Wan22DuoKeyframe node .*got a list"):
        Wan22DuoKeyframe().add(image, 4, keyframes=[image])
    with pytest.raises(ValueError, match="frame must be a whole number .*got None"):
        Wan22DuoKeyframe().add(image, None)
    with pytest.raises(ValueError, match="lora_name must be a file name from the list, got nothing"):
        Wan22DuoLoraLoader().load_lora(models["high"], None, 1.0)
    with pytest.raises(ValueError, match="the diffusion_models file name must be a file name .*got a int"):
        Wan22DuoExpertLoader().load(7, "auto", "default", "auto", "cpu")
    with pytest.raises(ValueError, match="tile_size must be 0 .*got -64"):
        Wan22DuoVAEDecode().decode(models["vae"], latent(), -64)


@pytest.mark.parametrize("name", ["mps", "xla", "meta", "ipu"])
def test_devices_other_than_cpu_and_cuda_are_refused_with_the_supported_ones(name):
    with pytest.raises(ValueError, match=f"device '{name}' is not supported: the Wan 2.2 Duo loaders run on CPU and "
                                         r"CUDA devices only; choose one of \['auto', 'cpu'"):
        _comfy.resolve_device(name)


def test_auto_on_an_unsupported_comfyui_device_and_non_string_devices(monkeypatch):
    monkeypatch.setattr(_comfy, "default_device", lambda: torch.device("mps"))
    with pytest.raises(ValueError, match=r"device 'auto' \(ComfyUI's device is mps\) is not supported"):
        _comfy.resolve_device("auto")
    with pytest.raises(ValueError, match="device must be a string such as 'cpu' or 'cuda:0', got None"):
        _comfy.resolve_device(None)
    assert _comfy.resolve_device("cpu") == torch.device("cpu")
