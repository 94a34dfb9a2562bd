"""Wan 2.2 Duo: ComfyUI nodes for Wan 2.2 (T2V-A14B, I2V-A14B, TI2V-5B).

Registration only. Every node lives in ``nodes/``; the plain-PyTorch engine they
wrap lives in ``engine/`` and never imports ComfyUI, so this package imports
without ComfyUI (tests and the demo rely on that).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
