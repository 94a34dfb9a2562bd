"""Declared test dependencies: a missing one fails the run instead of skipping its tests.

``pytest.importorskip`` would turn a broken test install into a few quiet skips (24
parity tests became 2 skipped modules); diffusers is listed in requirements-dev.txt,
so its absence is an install error to fix, not a reason to test less.
"""
import importlib


def require(name: str):
    """Import and return the test dependency ``name``; raise ImportError with the fix if absent."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"{name} is a declared test dependency (requirements-dev.txt) but cannot be imported ({err}); "
            "install the test tools with `pip install -r requirements-dev.txt` and rerun"
        ) from err
