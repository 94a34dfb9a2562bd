"""The pack's exception types show under one stable public name, not the install folder's module path."""
import subprocess
import sys
from pathlib import Path

import pytest

from wan22duo.engine.weights.checkpoint import CheckpointError
from wan22duo.engine.model.conditioning import ConditioningError
from wan22duo.engine.model.keyframes import KeyframeError
from wan22duo.engine.model.continuation import ContinuationError
from wan22duo.engine.model.latents import LatentMismatchError
from wan22duo.engine.weights.lora import LoraError
from wan22duo.engine.memory.estimates import BudgetError
from wan22duo.engine.sampling.loop import SamplingCancelled, SamplingError
from wan22duo.engine.sampling.context_windows import ContextWindowError
from wan22duo.engine.model.vae.model import NonFiniteError
from wan22duo.engine.weights.vae_checkpoint import VAEFileError
from wan22duo.engine.parallel.sequence import ParallelError
from wan22duo.engine.parallel.workers import WorkerError

ROOT = Path(__file__).resolve().parent.parent
ERRORS = [CheckpointError, ConditioningError, LatentMismatchError, LoraError, SamplingCancelled, SamplingError,
          NonFiniteError, VAEFileError, KeyframeError, BudgetError, ParallelError, WorkerError,
          ContinuationError, ContextWindowError]


def comfy_type_name(cls):
    """How ComfyUI 0.3.76's execution.full_type_name spells an exception type in history and errors."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_exception_types_have_the_public_name(cls):
    assert comfy_type_name(cls) == f"wan22duo.{cls.__name__}"


def test_the_name_does_not_depend_on_the_install_folder():
    # Imported the way ComfyUI imports custom nodes: under a name made from the folder's path.
    code = (
        "import importlib, importlib.util, sys\n"
        "name = 'ComfyUI-Wan22Duo_pack_under_test'\n"
        f"spec = importlib.util.spec_from_file_location(name, {str(ROOT / '__init__.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules[name] = module\n"
        "spec.loader.exec_module(module)\n"
        "error = importlib.import_module(name + '.engine.sampling.loop').SamplingError\n"
        "print(error.__module__ + '.' + error.__qualname__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "wan22duo.SamplingError"
