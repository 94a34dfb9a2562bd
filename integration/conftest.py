"""The real-ComfyUI integration suite: a copy of an unmodified ComfyUI with this pack installed.

Run it with a Python that has ComfyUI's requirements (torch *with* torchvision):

    python -m pytest -q integration --comfyui=/path/to/ComfyUI [--comfyui-gguf=/path/to/ComfyUI-GGUF]

or set ``WAN22DUO_COMFYUI`` / ``WAN22DUO_COMFYUI_GGUF``. Write the options with ``=``: pytest reads a
space-separated value as a test path and loads that tree's conftest files (ComfyUI's ``tests/`` ones);
:func:`pytest_configure` refuses such a run, and one under another ini file than ``integration/pytest.ini``
(which keeps the clone's parent folder off ``sys.path``). Without either option or variable, the ComfyUI 0.3.76 tree in
``../shared/comfyui/`` beside this clone is used. The given trees are never written to: the session
copies ComfyUI to a temporary folder, then installs into its ``custom_nodes/`` a copy of this
repository (under the hyphenated name users give it), ComfyUI-GGUF, and the test-only nodes in
``integration/comfy_test_nodes`` (CONDITIONING made directly, since umT5-XXL cannot be built small).

Fixtures:

* ``comfy_tree``: the copied tree (paths only; nothing imported). Server tests start ``main.py`` in it.
* ``comfy``: ComfyUI imported *in this process* from that tree, on the CPU, with every custom node
  loaded as ComfyUI loads them. ``comfy.node(name)`` is a node class; ``comfy.pack_module("engine.testing.tiny")``
  imports a module of the pack *as ComfyUI loaded it* (so class identities agree with the nodes').
"""
from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_COMFYUI = REPO.parent / "shared" / "comfyui" / "ComfyUI-0.3.76"
PACK_FOLDER = "ComfyUI-Wan22Duo"  # a hyphenated name, as users clone the pack
GGUF_FOLDER = "ComfyUI-GGUF"
TEST_NODES_FOLDER = "wan22duo_test_nodes"
# What a user's clone would not contain, or what is ours alone and must not travel into ComfyUI.
_SKIP = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.pyc", ".pytest_cache", "output", "node_modules",
                               ".whl", ".gl", "out", "artifacts")  # artifacts: the browser test's screenshots


def pytest_addoption(parser):
    group = parser.getgroup("wan22duo-comfyui")
    group.addoption("--comfyui", default=None,
                    help="ComfyUI checkout to test in (default: $WAN22DUO_COMFYUI, else ../shared/comfyui/ComfyUI-0.3.76)")
    group.addoption("--comfyui-gguf", default=None,
                    help="ComfyUI-GGUF checkout (default: $WAN22DUO_COMFYUI_GGUF, else ComfyUI-GGUF beside the ComfyUI tree)")


def pytest_configure(config):
    """Refuse runs that would mix in another ini file or other test trees (see the module doc)."""
    here = Path(__file__).resolve().parent
    if config.inipath is None or Path(config.inipath).resolve() != here / "pytest.ini":
        raise pytest.UsageError(
            f"the integration suite must run with its own {here / 'pytest.ini'} (pytest took {config.inipath}): "
            "run `python -m pytest integration ...` by itself, not together with tests/")
    foreign = sorted(str(f) for f in (Path(getattr(p, "__file__", None) or ".") for p in
                                      config.pluginmanager.get_plugins())
                     if f.name == "conftest.py" and here not in f.resolve().parents)
    if foreign:  # e.g. ComfyUI's tests/conftest.py, loaded because a path after an option looked like a test path
        raise pytest.UsageError(
            f"conftest files from outside integration/ were loaded: {foreign}. Give the trees as --comfyui=PATH "
            "and --comfyui-gguf=PATH (with '='): pytest reads a space-separated PATH as a test path")


def _source_trees(config) -> tuple[Path, Path]:
    comfyui = Path(config.getoption("--comfyui") or os.environ.get("WAN22DUO_COMFYUI") or DEFAULT_COMFYUI)
    gguf = config.getoption("--comfyui-gguf") or os.environ.get("WAN22DUO_COMFYUI_GGUF")
    gguf = Path(gguf) if gguf else comfyui.parent / GGUF_FOLDER
    if not (comfyui / "main.py").is_file() or not (comfyui / "comfy").is_dir():
        raise pytest.UsageError(f"{comfyui} is not a ComfyUI checkout (no main.py and comfy/); pass --comfyui=PATH "
                                "or set WAN22DUO_COMFYUI to the folder that holds ComfyUI's main.py")
    if not (gguf / "nodes.py").is_file():
        raise pytest.UsageError(f"{gguf} is not a ComfyUI-GGUF checkout (no nodes.py); pass --comfyui-gguf=PATH "
                                "or set WAN22DUO_COMFYUI_GGUF")
    return comfyui.resolve(), gguf.resolve()


@dataclass(frozen=True)
class ComfyTree:
    root: Path  # the copied ComfyUI (holds main.py)
    pack: Path  # custom_nodes/ComfyUI-Wan22Duo
    source: Path  # the checkout it was copied from

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_path(self, folder: str, name: str) -> Path:
        """Where a model file named ``name`` goes in ComfyUI's ``models/<folder>``, folder created."""
        path = self.models / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="session")
def comfy_tree(request, tmp_path_factory) -> ComfyTree:
    comfyui, gguf = _source_trees(request.config)
    return make_tree(comfyui, gguf, tmp_path_factory.mktemp("comfyui"))


def make_tree(comfyui: Path, gguf: Path, dest: Path) -> ComfyTree:
    """Copy ComfyUI ``comfyui`` into ``dest/ComfyUI`` with this pack, ComfyUI-GGUF ``gguf`` and the test nodes.

    A plain function so that tools outside pytest (``bench/quality.py --comfyui``) set ComfyUI up the same way.
    """
    root = dest / "ComfyUI"
    shutil.copytree(comfyui, root, ignore=shutil.ignore_patterns(".git", "__pycache__"), symlinks=True)
    for folder in ("custom_nodes", "user", "output", "temp", "input"):
        (root / folder).mkdir(exist_ok=True)
        os.chmod(root / folder, 0o755)
    os.chmod(root, 0o755)
    nodes_dir = root / "custom_nodes"
    pack = nodes_dir / PACK_FOLDER
    shutil.copytree(REPO, pack, ignore=_SKIP)
    shutil.copytree(gguf, nodes_dir / GGUF_FOLDER, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    shutil.copytree(Path(__file__).parent / "comfy_test_nodes", nodes_dir / TEST_NODES_FOLDER,
                    ignore=shutil.ignore_patterns("__pycache__"))
    _make_writable(root)  # the read-only source's modes came along with the copy
    return ComfyTree(root, pack, comfyui)


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


@dataclass
class InProcessComfy:
    tree: ComfyTree
    nodes: object  # ComfyUI's nodes module
    folder_paths: object
    model_management: object
    pack: object  # this pack as ComfyUI imported it

    def node(self, name: str):
        try:
            return self.nodes.NODE_CLASS_MAPPINGS[name]
        except KeyError:
            raise KeyError(f"ComfyUI has no node {name!r}; did a custom node pack fail to import? "
                           "See the log above for 'Cannot import'") from None

    def pack_module(self, name: str):
        """``engine.testing.tiny`` -> the pack's module of that name, as loaded by ComfyUI."""
        return importlib.import_module(f"{self.pack.__name__}.{name}")

    def run(self, name: str, *args, **kwargs):
        """Instantiate node ``name`` and call its FUNCTION; returns what ComfyUI would get (a tuple or dict)."""
        cls = self.node(name)
        return getattr(cls(), cls.FUNCTION)(*args, **kwargs)


@pytest.fixture(scope="session")
def comfy(comfy_tree) -> InProcessComfy:
    """ComfyUI imported from the copied tree into this process, CPU only, custom nodes loaded."""
    return import_comfy(comfy_tree)


def import_comfy(comfy_tree: ComfyTree) -> InProcessComfy:
    """Import ComfyUI from ``comfy_tree`` into this process (CPU only) and load its custom nodes, once."""
    root = str(comfy_tree.root)
    if "comfy" in sys.modules and not str(getattr(sys.modules["comfy"], "__file__", "")).startswith(root):
        raise RuntimeError("another ComfyUI is already imported in this process")
    sys.path.insert(0, root)
    import comfy.options  # noqa: F401  (argument parsing stays off: pytest's argv is not ComfyUI's)
    from comfy.cli_args import args

    args.cpu = True
    args.disable_auto_launch = True
    import comfy.model_management as model_management
    import folder_paths
    import nodes

    failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    missing = [n for n in ("Wan22DuoSampler", "UnetLoaderGGUF", "Wan22DuoTestConditioning")
               if n not in nodes.NODE_CLASS_MAPPINGS]
    if missing:
        raise RuntimeError(f"custom nodes did not load in ComfyUI: {missing} missing (failed builtins: {failed})")
    pack = sys.modules[str(comfy_tree.pack).replace(".", "_x_")]
    return InProcessComfy(comfy_tree, nodes, folder_paths, model_management, pack)
