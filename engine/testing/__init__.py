"""Fixtures and simulators for tests, the demo and the benchmarks; never imported by product code.

* ``tiny``: random-weight tiny DiT checkpoints with the real key names; ``tiny_gguf``: the
  same as GGUF files; ``tiny_lora``: LoRA files in every key dialect; ``tiny_vae``: tiny VAEs;
* ``stream_sim``: a CPU stand-in for the CUDA stream API, built to expose missing waits.

``tests/test_architecture.py`` fails if a module of ``engine`` (outside this package) or
``nodes`` imports it.
"""
