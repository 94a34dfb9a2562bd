"""A newcomer's first run: the suite works from a clone in any folder, and a broken test install fails."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a clone holds that the test run needs (not .git, a venv or caches).
CLONE_PARTS = ("__init__.py", "pyproject.toml", "engine", "nodes", "scripts", "tests", "web", "workflows",
               "example_workflows")


def _pytest(args, cwd, prelude=""):
    code = f"import sys; {prelude}import pytest; sys.exit(pytest.main({args!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_tests_pass_from_a_clone_in_a_hyphenated_folder(tmp_path):
    # ComfyUI packs are usually cloned as ComfyUI-Something. pytest then imports the clone's __init__.py
    # as a plain module (the folder name is no Python identifier), which must not break collection.
    clone = tmp_path / "ComfyUI-Wan22Duo"
    clone.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "node_modules")
    for part in CLONE_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, clone / part, ignore=ignore)
        else:
            shutil.copy2(source, clone / part)
    done = _pytest(["-q", "-p", "no:cacheprovider", "tests/test_geometry.py", "tests/test_nodes_schema.py"], clone)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "error" not in done.stdout.lower()


def test_the_hyphenated_folder_still_loads_as_a_comfyui_package(tmp_path):
    # ComfyUI imports a custom-node folder under its folder name, hyphen and all.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-Wan22Duo', {str(ROOT / '__init__.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "print([n for n in ('Wan22DuoEmptyLatent', 'Wan22DuoExpertLoader') if n in module.NODE_CLASS_MAPPINGS], "
        "module.WEB_DIRECTORY)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['Wan22DuoEmptyLatent', 'Wan22DuoExpertLoader'] ./web" in done.stdout


def test_a_missing_diffusers_fails_the_run_instead_of_skipping():
    # diffusers is a declared test dependency: without it the parity modules must error, not skip.
    done = _pytest(["-q", "-p", "no:cacheprovider", "--collect-only", "tests/test_dit_parity.py",
                    "tests/test_vae_diffusers.py"], ROOT, prelude="sys.modules['diffusers'] = None; ")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert out.count("diffusers is a declared test dependency (requirements-dev.txt)") >= 2, out[-3000:]
    assert "skipped" not in out
