"""Plain-PyTorch Wan 2.2 engine, grouped by concern (see docs/architecture.md).

Packages, lowest first; each imports only from those before it:
``errors`` (one module) < ``memory`` < ``model`` < ``weights`` < ``sampling`` < ``parallel``;
``testing`` (fixtures) sits on top and no product module imports it.

Nothing in this package imports ComfyUI; the ComfyUI glue lives in ``nodes/`` and
imports from here, never the other way round.
"""
