"""Synthetic API graphs built only from ComfyUI's own Wan nodes (and ComfyUI-GGUF's loader).

They check that the tiny files :mod:`workflow_prep` writes load in ComfyUI's native loaders
(``UNETLoader`` with fp8_scaled and fp16 experts, ``LoraLoaderModelOnly``, ``VAELoader`` with the
Wan 2.1 and the full-size 2.2 VAE, ``LoadImage``) and run through ``WanImageToVideo``,
``Wan22ImageToVideoLatent``, ComfyUI's samplers and ``VAEDecode``, before any bundled workflow
uses those nodes. The usual hand-made graphs: two ``KSamplerAdvanced`` for A14B, one ``KSampler``
for TI2V-5B. File names are the Comfy-Org repackaged ones.
"""
from __future__ import annotations

NEGATIVE = "static, blurry, low quality"


def _text(graph: dict, positive: str) -> None:
    graph["20"] = {"class_type": "CLIPLoader",
                   "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}}
    graph["21"] = {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["20", 0]}}
    graph["22"] = {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["20", 0]}}


def _video(graph: dict, samples: list, prefix: str, fps: float) -> None:
    graph["60"] = {"class_type": "VAEDecode", "inputs": {"samples": samples, "vae": ["30", 0]}}
    graph["61"] = {"class_type": "CreateVideo", "inputs": {"images": ["60", 0], "fps": fps}}
    graph["62"] = {"class_type": "SaveVideo", "inputs": {"video": ["61", 0], "filename_prefix": f"video/{prefix}",
                                                         "format": "auto", "codec": "auto"}}


def _advanced(model: list, latent: list, positive: list, negative: list, start: int, end: int, steps: int,
              first: bool) -> dict:
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if first else "disable", "noise_seed": 42, "steps": steps,
        "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "positive": positive, "negative": negative,
        "latent_image": latent, "start_at_step": start, "end_at_step": end,
        "return_with_leftover_noise": "enable" if first else "disable"}}


def i2v_a14b(loader: str = "UNETLoader", high: str = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
             low: str = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors") -> dict:
    """I2V-A14B: two expert loaders, a LoRA on the high-noise one, WanImageToVideo, 2+2 steps."""
    graph = {}
    name_input = {"UNETLoader": {"weight_dtype": "default"}, "UnetLoaderGGUF": {}}[loader]
    graph["10"] = {"class_type": loader, "inputs": {"unet_name": high, **name_input}}
    graph["11"] = {"class_type": loader, "inputs": {"unet_name": low, **name_input}}
    graph["12"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["10", 0], "lora_name": "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "strength_model": 1.0}}
    graph["13"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["12", 0], "shift": 5.0}}
    graph["14"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["11", 0], "shift": 5.0}}
    _text(graph, "The scene comes to life with gentle motion.")
    graph["30"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}
    graph["31"] = {"class_type": "LoadImage", "inputs": {"image": "native_start.png"}}
    graph["40"] = {"class_type": "WanImageToVideo", "inputs": {
        "positive": ["21", 0], "negative": ["22", 0], "vae": ["30", 0], "width": 1280, "height": 720,
        "length": 81, "batch_size": 1, "start_image": ["31", 0]}}
    graph["50"] = _advanced(["13", 0], ["40", 2], ["40", 0], ["40", 1], 0, 2, 4, first=True)
    graph["51"] = _advanced(["14", 0], ["50", 0], ["40", 0], ["40", 1], 2, 4, 4, first=False)
    _video(graph, ["51", 0], "native_i2v_a14b", 16.0)
    return graph


def ti2v_5b() -> dict:
    """TI2V-5B image-to-video: UNETLoader (fp16), the Wan 2.2 VAE, Wan22ImageToVideoLatent, one KSampler."""
    graph = {"10": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors",
                                                           "weight_dtype": "default"}},
             "13": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["10", 0], "shift": 8.0}}}
    _text(graph, "A red fox trots through fresh snow.")
    graph["30"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}}
    graph["31"] = {"class_type": "LoadImage", "inputs": {"image": "native_start.png"}}
    graph["40"] = {"class_type": "Wan22ImageToVideoLatent", "inputs": {
        "vae": ["30", 0], "width": 1280, "height": 704, "length": 121, "batch_size": 1, "start_image": ["31", 0]}}
    graph["50"] = {"class_type": "KSampler", "inputs": {
        "model": ["13", 0], "seed": 42, "steps": 3, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple",
        "positive": ["21", 0], "negative": ["22", 0], "latent_image": ["40", 0], "denoise": 1.0}}
    _video(graph, ["50", 0], "native_ti2v_5b", 24.0)
    return graph


GRAPHS = {"native_i2v_a14b": i2v_a14b, "native_ti2v_5b": ti2v_5b}
