"""Plain-PyTorch Wan 2.2 engine: DiT, VAEs, schedules, samplers, checkpoint loading.

Nothing in this package imports ComfyUI; the ComfyUI glue lives in ``nodes/`` and
imports from here, never the other way round.
"""
