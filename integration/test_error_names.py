"""A failing Wan22Duo node, run by ComfyUI's own executor: the error carries the pack's public type name.

ComfyUI writes ``exception_type`` as ``module.QualName``; for a pack installed under a hyphenated folder
the module was a path-derived name (``..._x_...ComfyUI-Wan22Duo.engine.sampling.loop``). It must read
``wan22duo.SamplingError`` however the pack was installed.
"""


def _executor(comfy):
    import execution

    class Server:  # what PromptExecutor touches on the server when no client is connected
        client_id = None
        last_node_id = None

        def send_sync(self, *args, **kwargs):
            pass

        def queue_updated(self):
            pass

    # main.py's cache arguments; ComfyUI 0.33 reads "ram_inactive" too (0.3.76 ignores it).
    return execution.PromptExecutor(Server(), cache_type=execution.CacheType.CLASSIC,
                                    cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})


def test_a_sampler_error_is_reported_as_wan22duo_sampling_error(comfy):
    tiny = comfy.pack_module("engine.testing.tiny")
    name = "wan2.2_t2v_high_noise_14B_tiny.safetensors"
    tiny.write_tiny_dit(comfy.tree.model_path("diffusion_models", name), "t2v_a14b", dim=128, ffn_dim=256,
                        num_layers=1)
    prompt = {
        "1": {"class_type": "Wan22DuoExpertLoader", "inputs": {
            "unet_name": name, "role": "auto", "weight_dtype": "default", "compute_dtype": "fp32", "device": "cpu"}},
        "2": {"class_type": "Wan22DuoTestConditioning", "inputs": {"text": "a cat", "length": 8}},
        "3": {"class_type": "Wan22DuoEmptyLatent", "inputs": {"width": 32, "height": 32, "length": 5,
                                                              "batch_size": 1}},
        # The one expert in both inputs, both running steps: the sampler refuses it (SamplingError).
        "4": {"class_type": "Wan22DuoSampler", "inputs": {
            "high_noise_model": ["1", 0], "low_noise_model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
            "latent": ["3", 0], "seed": 0, "steps": 4, "cfg_high": 1.0, "cfg_low": 1.0, "shift": 5.0,
            "boundary": -1.0, "switch_step": -1, "sampler": "euler", "scheduler": "simple", "memory": "release"}},
    }
    executor = _executor(comfy)
    executor.execute(prompt, "p-error-name", {}, ["4"])
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    assert len(errors) == 1, executor.status_messages
    assert errors[0]["node_type"] == "Wan22DuoSampler"
    assert errors[0]["exception_type"] == "wan22duo.SamplingError"
    assert "is connected to both high_noise_model and low_noise_model" in errors[0]["exception_message"]
