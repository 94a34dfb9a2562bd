"""A tiny Wan 2.2 MoE trained here on synthetic videos: a demo that makes a real video and a quality yardstick.

Not a product and never a stand-in for Wan's own numbers. ``data`` draws the clips and captions, ``text`` is a
toy text encoder with umT5's output layout, ``vae`` and ``dit`` train the VAE and the experts with the
engine's own modules, ``build`` runs the training stages, ``score`` measures a decoded video against its
caption, ``run`` samples the toy through the pack's nodes. The trained files are in ``weights/`` (``build``
made them and lists how).
"""
