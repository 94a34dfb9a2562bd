"""Where the full ComfyUI 0.3.76 /object_info dump lives, when it is at hand: the project's shared/ folder.

The tests need only what is committed (workflows/schema/: the core-node subset and a
digest of every node's schema); with the dump present they also check those files
against it. The first candidate that exists wins.
"""
from pathlib import Path

_NAME = "reference/comfyui-0.3.76-object_info.json"
_ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = (_ROOT.parent / "shared" / _NAME, _ROOT / "shared" / _NAME, Path("/work/shared") / _NAME)


def object_info_path() -> Path:
    """The first existing reference file (or the first candidate, for a clear 'missing' error)."""
    return next((p for p in CANDIDATES if p.exists()), CANDIDATES[0])
