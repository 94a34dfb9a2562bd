"""One stable, public name for the pack's exception types.

ComfyUI records a failed node's ``exception_type`` as ``module.QualName`` (history, the
websocket's ``execution_error``, the UI's error dialog). The module of a pack class is
whatever name ComfyUI imported the pack's folder under, a path-derived name such as
``custom_nodes.ComfyUI-Wan22Duo.engine.sampling.loop``, which says nothing to a user and
changes with the install folder. Every exception the pack raises on purpose is
therefore shown under the package name instead: ``wan22duo.SamplingError``.
"""
PUBLIC_MODULE = "wan22duo"


def public(cls: type) -> type:
    """Class decorator: report ``cls`` as ``wan22duo.<name>`` wherever its module is printed."""
    cls.__module__ = PUBLIC_MODULE
    return cls
