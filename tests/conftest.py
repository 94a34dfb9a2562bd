import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from packpath import load_pack  # noqa: E402

load_pack()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls gain nothing from a second thread and lose much when the cores are busy.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
