"""LoRA node: one LoRA file on one Wan 2.2 expert (or the TI2V-5B model), chainable."""
from __future__ import annotations

from ..engine.weights.lora import with_lora
from ._comfy import list_files, resolve_path
from .inputs import file_name, model_handle


class Wan22DuoLoraLoader:
    DESCRIPTION = (
        "Applies a LoRA to one Wan 2.2 model: the high-noise or the low-noise A14B expert, or the TI2V-5B "
        "model. Give each expert its own LoRA node (e.g. the Lightning/lightx2v 4-step LoRAs come as a "
        "high_noise and a low_noise file) and chain nodes to stack LoRAs. The input model is left unchanged; "
        "the LoRA is applied when the weights are loaded for sampling: merged into bf16/fp16/fp32 weights, "
        "and run beside fp8 weights (exact; the fp8 weights are untouched and the extra memory is the LoRA's "
        "rank matrices). Reads diffusion_model./lora_unet_/PEFT/diffusers key names, lora_up/down or "
        "lora_A/B with alpha, and diff/diff_b/diff_m full deltas."
    )
    CATEGORY = "Wan22Duo/loaders"
    FUNCTION = "load_lora"
    RETURN_TYPES = ("WAN22DUO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with this LoRA (and any earlier ones in the chain) applied.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("WAN22DUO_MODEL", {
                    "tooltip": "A Wan 2.2 expert or TI2V-5B model from a Wan22Duo loader or another LoRA node.",
                }),
                "lora_name": (list_files("loras"), {
                    "tooltip": "LoRA file (.safetensors) from ComfyUI's models/loras folder. Use the file made "
                               "for this expert: *_high_noise_* on the high-noise model, *_low_noise_* on the "
                               "low-noise model.",
                }),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                    "tooltip": "How strongly the LoRA changes the weights (W + strength * delta). 0 leaves the "
                               "model unchanged; negative values subtract the LoRA.",
                }),
            }
        }

    def load_lora(self, model, lora_name, strength):
        model_handle(model, "model")
        file_name(lora_name, "lora_name")
        if float(strength) == 0.0:
            return (model,)
        return (with_lora(model, resolve_path("loras", lora_name), strength),)


NODE_CLASS_MAPPINGS = {"Wan22DuoLoraLoader": Wan22DuoLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"Wan22DuoLoraLoader": "Wan 2.2 Duo LoRA"}
