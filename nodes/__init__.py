"""ComfyUI glue. Each module exports its own NODE_CLASS_MAPPINGS; they are merged here.

ComfyUI modules (comfy, folder_paths, server, latent_preview) are imported only
inside functions, at the point of use, so these modules import anywhere.
"""
from . import (continuation, context_windows, example_images, frames, keyframes, loaders, lora, model_sampler,
               parallel, routes, samplers, speed, vae)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loaders, samplers, vae, lora, model_sampler, keyframes, continuation, parallel, speed, context_windows,
                frames):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

# The model-info route feeds the web extension's switch plot; a no-op without ComfyUI.
routes.register_routes()
# The example first and last frames the bundled image-to-video workflows load; a no-op without ComfyUI.
example_images.install()
