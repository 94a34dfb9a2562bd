"""Wan 2.2 Duo: ComfyUI nodes for Wan 2.2 (T2V-A14B, I2V-A14B, TI2V-5B).

Registration only. Every node lives in ``nodes/``; the plain-PyTorch engine they
wrap lives in ``engine/`` and never imports ComfyUI, so this package imports
without ComfyUI (tests and the demo rely on that).
"""
WEB_DIRECTORY = "./web"

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain file, not as a package: pytest does this when the clone's folder name is not a
    # Python identifier (ComfyUI-Wan22Duo), because the folder holds this __init__.py. There is no package
    # to import the nodes from then; the tests import the pack through scripts/packpath.py instead.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
