"""Import this repository as the package ``wan22duo`` outside ComfyUI.

ComfyUI imports a custom-node folder as a package named after the folder, so the
pack's modules use relative imports (``from ..engine import dit``). Tests, the demo
and the benchmarks have no ComfyUI to do that for them, and the clone's folder name
is arbitrary (it may hold a hyphen), so they register the folder under one fixed
name instead. Everything then imports as ``wan22duo.engine...`` and
``wan22duo.nodes...``, one copy of each module.
"""
import importlib.util
import sys
from pathlib import Path

PACK_NAME = "wan22duo"
ROOT = Path(__file__).resolve().parent.parent


def load_pack():
    """Import the repository root as ``wan22duo`` (once) and return the module."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return module
