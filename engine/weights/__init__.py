"""Reading and holding weights: every file format is read here, in one place each.

* ``safetensors_header``: the strict safetensors header parser;
* ``checkpoint``: a DiT file, whatever its format (``load_dit`` / ``detect_dit`` /
  ``describe_file``), and the safetensors DiT reader; ``gguf``: the GGUF DiT reader;
  ``dit_file``: what both share, below both; ``ggml``: the GGML block decoders;
* ``vae_checkpoint``: VAE files; ``lora``: LoRA files and how they patch a model;
  ``fp8``: the fp8 matmul path's check and switch.

Builds ``engine.model`` modules and registers file views with ``engine.memory``.
"""
