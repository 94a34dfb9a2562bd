"""The Wan 2.2 networks and the tensors they consume, in plain PyTorch; no file reading.

* ``dit``: the DiT (``WanModel``, ``WanConfig``, the variants); ``attention``: the kernel
  choice; ``ops``: the casting layers that hold stored weights (fp8, GGUF bytes, LoRA
  branches) and cast at use;
* ``geometry``: sizes and frame counts; ``latents``: latent tables and normalisation;
  ``conditioning``: I2V / TI2V conditioning; ``keyframes``: the keyframe layout;
* ``vae``: the Wan 2.1 and 2.2 VAEs.

Imports ``engine.errors`` and ``engine.memory`` (the FFN chunk estimate); never the
weight readers above it (the casting layers declare the ``WeightFormat`` they call).
"""
