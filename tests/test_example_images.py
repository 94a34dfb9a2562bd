"""The example first and last frames the pack draws into ComfyUI's input folder (nodes/example_images.py)."""
import sys
import types

import numpy as np
import pytest
from PIL import Image

from wan22duo.nodes import example_images


def test_first_and_last_frame_differ_where_the_ball_and_sun_move():
    first, last = (np.asarray(example_images.draw(m), dtype=np.int16) for m in (0.0, 1.0))
    assert first.shape == last.shape == (example_images.SIZE[1], example_images.SIZE[0], 3)
    changed = np.abs(first - last).max(axis=2) > 40
    # The ball rolls from the left to the right: both ends of its row change, the trees do not.
    assert 0.02 < changed.mean() < 0.5, changed.mean()
    row = int(example_images.SIZE[1] * 0.62) + 70
    assert changed[row, : example_images.SIZE[0] // 4].any() and changed[row, -example_images.SIZE[0] // 4:].any()
    with pytest.raises(ValueError, match="moment must be in"):
        example_images.draw(1.5)


def test_written_once_and_a_users_file_is_kept(tmp_path):
    written = example_images.write_missing(tmp_path)
    assert sorted(p.name for p in written) == sorted([example_images.FIRST_FRAME, example_images.LAST_FRAME])
    with Image.open(tmp_path / example_images.LAST_FRAME) as image:
        assert image.size == example_images.SIZE
    (tmp_path / example_images.FIRST_FRAME).write_bytes(b"mine")
    (tmp_path / example_images.LAST_FRAME).unlink()
    assert [p.name for p in example_images.write_missing(tmp_path)] == [example_images.LAST_FRAME]
    assert (tmp_path / example_images.FIRST_FRAME).read_bytes() == b"mine"


def test_install_writes_into_comfyuis_input_folder(tmp_path, monkeypatch, caplog):
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_input_directory = lambda: str(tmp_path / "input")
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    assert len(example_images.install()) == 2
    assert (tmp_path / "input" / example_images.FIRST_FRAME).is_file()
    # A folder that cannot be written is logged, not fatal.
    (tmp_path / "file").write_text("x")
    folder_paths.get_input_directory = lambda: str(tmp_path / "file" / "input")
    assert example_images.install() == []
    assert "could not write the example images" in caplog.text
    monkeypatch.delitem(sys.modules, "folder_paths")  # no ComfyUI: nothing happens
    assert example_images.install() == []
