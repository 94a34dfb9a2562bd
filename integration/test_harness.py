"""The harness itself: the copied ComfyUI imports in-process with every custom node loaded."""
import torch


def test_pack_and_gguf_load_in_comfyui(comfy):
    assert comfy.node("Wan22DuoSampler").__module__.startswith(comfy.pack.__name__)
    assert "UnetLoaderGGUF" in comfy.nodes.NODE_CLASS_MAPPINGS
    assert comfy.model_management.get_torch_device() == torch.device("cpu")
    # The pack's engine resolves to the very modules ComfyUI's nodes use.
    tiny = comfy.pack_module("engine.testing.tiny")
    assert tiny.__name__.startswith(comfy.pack.__name__)
    # Model folders point into the copy, never into the read-only source tree.
    for folder in ("diffusion_models", "vae", "loras"):
        for path in comfy.folder_paths.get_folder_paths(folder):
            assert str(path).startswith(str(comfy.tree.root))


def test_conditioning_stand_in_is_shaped_like_umt5(comfy):
    (cond,) = comfy.run("Wan22DuoTestConditioning", text="a cat on a sofa", length=24)
    (context, options), = cond
    assert context.shape == (1, 24, 4096) and options == {}  # 5 words + the end token
    assert bool((context[0, :6] != 0).all()) and bool((context[0, 6:] == 0).all())
    (again,) = comfy.run("Wan22DuoTestConditioning", text="a cat on a sofa", length=24)
    (other,) = comfy.run("Wan22DuoTestConditioning", text="a dog", length=24)
    assert torch.equal(again[0][0], context) and not torch.equal(other[0][0][0, :3], context[0, :3])
