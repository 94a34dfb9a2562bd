"""A tiny Wan 2.2 MoE trained here on synthetic videos: a demo that makes a real video and a quality yardstick.

Not a product and never a stand-in for Wan's own numbers. ``data`` draws the clips and captions, ``text`` is a
toy text encoder with umT5's output layout, ``train`` trains the VAE and the experts with the engine's own
modules, ``score`` measures a decoded video against its caption, ``weights`` holds the trained files.
"""
