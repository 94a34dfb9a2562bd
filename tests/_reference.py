"""Where the ComfyUI 0.3.76 /object_info reference lives: the project's shared/ folder.

CI clones the repository with shared/ beside it; developers' machines have it at
/work/shared. The first that exists wins.
"""
from pathlib import Path

_NAME = "reference/comfyui-0.3.76-object_info.json"
_ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = (_ROOT.parent / "shared" / _NAME, _ROOT / "shared" / _NAME, Path("/work/shared") / _NAME)


def object_info_path() -> Path:
    """The first existing reference file (or the first candidate, for a clear 'missing' error)."""
    return next((p for p in CANDIDATES if p.exists()), CANDIDATES[0])
