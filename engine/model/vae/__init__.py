"""Wan 2.1 and Wan 2.2 causal video VAEs (spec §4): the modules, no file reading.

    vae = load_vae("wan_2.1_vae.safetensors", dtype=torch.float32, device="cpu")   # engine.weights.vae_checkpoint
    z = vae.encode(video)              # [B, 3, 4n+1, H, W] in [-1, 1] -> raw latent [B, 16, n+1, H/8, W/8]
    video = vae.decode(z, tiling=Tiling(512, 64))   # -> [B, 3, 4n+1, H, W] in [-1, 1]

``model`` holds ``WanVAE`` and ``VAEConfig``, ``tiling`` the tile plan, ``layers`` /
``wan21`` / ``wan22`` the two architectures. Reading a VAE file (``load_vae``,
``detect_vae``) is ``engine.weights.vae_checkpoint``; ``engine.testing.tiny_vae`` writes
random-weight files for tests and benchmarks.
"""
