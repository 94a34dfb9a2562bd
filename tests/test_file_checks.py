"""Strict safetensors headers for the DiT and the VAE, LoRA values, and bounded error messages."""
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from wan22duo.engine.weights import checkpoint, lora
from wan22duo.engine.weights.checkpoint import CheckpointError, detect_dit, load_dit
from wan22duo.engine.weights.lora import LoraError, plan_lora, with_lora
from wan22duo.engine.testing.tiny_lora import write_tiny_lora
from wan22duo.engine.memory.residency import ModelHandle
from wan22duo.engine.weights.safetensors_header import quote
from wan22duo.engine.testing.tiny import write_tiny_dit
from wan22duo.engine.weights.vae_checkpoint import VAEFileError, detect_vae, load_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes.loaders import weight_bytes

SMALL = dict(dim=128, ffn_dim=256, num_layers=1, text_dim=64)


def hand_built(path, entries: dict, data: bytes, metadata=None):
    """A safetensors file written byte by byte, so its header can break any rule."""
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


# Each case breaks one rule of the format; the data section is 32 bytes.
BAD_HEADERS = {
    "overlap": ({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, None, r"tensors 'a' and 'b' overlap"),
    "negative begin": ({"a": f32([4], -16, 0)}, None,
                       r"tensor 'a' has the byte range \[-16, 0\), which is reversed or negative"),
    "reversed": ({"a": f32([0], 16, 8)}, None, r"tensor 'a' has the byte range \[16, 8\), which is reversed"),
    "size disagrees": ({"a": f32([4], 0, 8)}, None,
                       r"tensor 'a' is F32 \[4\] \(16 bytes\) but its byte range \[0, 8\) holds 8"),
    "negative dim": ({"a": f32([-1, 4], 0, 16)}, None, r"entry for 'a': shape \[-1, 4\] has a negative dimension"),
    "float dim": ({"a": f32([4.0], 0, 16)}, None, r"entry for 'a': shape is not a list of integers"),
    "bool offsets": ({"a": {"dtype": "F32", "shape": [], "data_offsets": [False, True]}}, None,
                     r"entry for 'a': data_offsets is not a pair of integers"),
    "beyond the data": ({"a": f32([16], 0, 64)}, None, r"truncated: tensor 'a' ends at byte"),
    "metadata not str": ({"a": f32([4], 0, 16)}, {"format": 1},
                         r"__metadata__ must map strings to strings \(entry 'format'"),
    "metadata not a map": ({"a": f32([4], 0, 16)}, ["pt"], r"__metadata__ must map strings to strings"),
    "entry not an object": ({"a": [0, 16]}, None, r"entry for 'a': not an object"),
    "no dtype": ({"a": {"shape": [4], "data_offsets": [0, 16]}}, None, r"entry for 'a': no dtype"),
    "unknown dtype": ({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 16]}}, None,
                      r"tensor 'a' has dtype 'F4'"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
@pytest.mark.parametrize("reader,error", [(detect_dit, CheckpointError), (load_dit, CheckpointError),
                                          (detect_vae, VAEFileError), (load_vae, VAEFileError)])
def test_headers_that_break_the_format_are_named_by_every_loader(tmp_path, case, reader, error):
    entries, metadata, match = BAD_HEADERS[case]
    path = hand_built(tmp_path / "broken.safetensors", entries, bytes(32), metadata)
    with pytest.raises(error, match=match) as caught:
        reader(path)
    assert str(caught.value).startswith("broken.safetensors")


def test_duplicate_tensor_names_are_refused(tmp_path):
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
          b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(CheckpointError, match="names the tensor 'a' twice"):
        checkpoint.read_header(path)


def test_valid_headers_still_pass_with_gaps_empty_tensors_and_metadata(tmp_path):
    entries = {"empty": f32([0, 3], 16, 16), "a": f32([2], 0, 8), "b": f32([2, 2], 16, 32)}
    header = checkpoint.read_header(hand_built(tmp_path / "ok.safetensors", entries, bytes(32), {"format": "pt"}))
    assert header.metadata == {"format": "pt"}
    assert header.tensors["b"].shape == (2, 2) and header.tensors["b"].end - header.tensors["b"].start == 16


# ---------------------------------------------------------------- the VAE file


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "wan_2.1_vae.safetensors", "2.1", base_dim=8)


def test_truncated_vae_fails_at_load_with_the_file_named(tmp_path, vae_file):
    data = vae_file.read_bytes()
    cut = tmp_path / "wan_2.1_vae.safetensors"
    cut.write_bytes(data[:-100])
    for reader in (detect_vae, load_vae):  # before: detect passed and decode failed with a raw SafetensorError
        with pytest.raises(VAEFileError, match=r"^wan_2\.1_vae\.safetensors is truncated: tensor .* Download it again"):
            reader(cut)


def test_vae_header_length_beyond_the_file_is_a_vae_error(tmp_path, vae_file):
    data = bytearray(vae_file.read_bytes())
    data[:8] = struct.pack("<Q", len(data) + 10)  # was a UnicodeDecodeError
    path = tmp_path / "vae.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(VAEFileError, match="vae.safetensors is truncated: its header alone needs"):
        load_vae(path)


def test_weight_bytes_reads_the_checked_header(tmp_path, vae_file):
    assert weight_bytes(str(vae_file)) == sum(v.numel() * 4 for v in load_vae(vae_file).state_dict().values())
    broken = hand_built(tmp_path / "b.safetensors", BAD_HEADERS["overlap"][0], bytes(32))
    with pytest.raises(ValueError, match="overlap"):
        weight_bytes(str(broken))


# ---------------------------------------------------------------- LoRA values


@pytest.fixture(scope="module")
def dit_path(tmp_path_factory):
    return write_tiny_dit(tmp_path_factory.mktemp("dit") / "tiny_t2v.safetensors", **SMALL)


def handle_for(path):
    path = str(path)
    return ModelHandle(lambda device: load_dit(path, device=device), "cpu", torch.float32,
                       {"config": detect_dit(path), "path": path})


@pytest.mark.parametrize("alpha", [float("nan"), float("inf")])
def test_non_finite_alpha_is_refused_when_the_node_plans_the_lora(dit_path, tmp_path, alpha):
    path = tmp_path / "bad_alpha.safetensors"
    tensors = write_tiny_lora(path, dit_path, "comfy", alpha=4.0, layers=["blocks.0.self_attn.q"])
    tensors["diffusion_model.blocks.0.self_attn.q.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    with pytest.raises(LoraError, match=rf"bad_alpha.safetensors: 'diffusion_model.blocks.0.self_attn.q.alpha' is "
                                        rf"{alpha}, not a finite number"):
        with_lora(handle_for(dit_path), path, 1.0)  # from the header: no tensor data read yet


def test_non_finite_lora_tensor_is_named_before_any_step(dit_path, tmp_path):
    path = tmp_path / "nan_up.safetensors"
    tensors = write_tiny_lora(path, dit_path, "comfy", layers=["blocks.0.ffn.0"])
    tensors["diffusion_model.blocks.0.ffn.0.lora_up.weight"][3, 1] = float("nan")
    save_file(tensors, str(path))
    patched = with_lora(handle_for(dit_path), path, 1.0)  # the header alone is fine
    with pytest.raises(LoraError, match=r"nan_up.safetensors: tensor 'diffusion_model.blocks.0.ffn.0.lora_up.weight' "
                                        r"holds 1 NaN/inf values of"):
        patched.acquire()  # the weights load (as the sampler's first step would): the LoRA is planned on real data


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_strength_is_refused(dit_path, tmp_path, strength):
    path = tmp_path / "ok.safetensors"
    write_tiny_lora(path, dit_path, "comfy")
    with pytest.raises(LoraError, match="strength .* is not a finite number"):
        with_lora(handle_for(dit_path), path, strength)
    with pytest.raises(LoraError, match="strength .* is not a finite number"):
        lora.apply_loras(load_dit(dit_path), [(path, strength)])


# ---------------------------------------------------------------- bounded messages

HUGE = "x" * (1 << 20)  # a 1 MiB tensor name


def test_quote_bounds_what_it_shows():
    assert quote("blocks.0") == "'blocks.0'"
    shown = quote(HUGE)
    assert len(shown) < 120 and shown.endswith(f"({len(HUGE)} characters)")


@pytest.mark.parametrize("what", ["dit", "vae", "lora", "header"])
def test_a_huge_tensor_name_gives_a_short_error(dit_path, tmp_path, what):
    path = tmp_path / "huge.safetensors"
    if what == "header":
        hand_built(path, {HUGE: f32([4], 0, 8)}, bytes(32))
    else:
        save_file({HUGE: torch.zeros(2), "other.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError) as caught:
        if what in ("dit", "header"):
            detect_dit(path)
        elif what == "vae":
            load_vae(path)
        else:
            plan_lora(lora.read_lora(path), load_dit(dit_path), str(path))
    assert 50 < len(str(caught.value)) < 2000, len(str(caught.value))


def test_a_vae_file_the_safetensors_library_rejects_is_a_vae_error(tmp_path, vae_file):
    # Every tensor moved 8 bytes on: the header is consistent, but safetensors (which wants the data packed
    # from offset 0) refuses to read it; the loader says so as a VAEFileError, not a raw SafetensorError.
    raw = vae_file.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    for key, entry in header.items():
        if key != "__metadata__":
            entry["data_offsets"] = [o + 8 for o in entry["data_offsets"]]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    gapped = tmp_path / "gapped.safetensors"
    gapped.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8) + raw[8 + n:])
    assert detect_vae(gapped).version == "2.1"  # the header itself passes the strict checks
    with pytest.raises(VAEFileError, match=r"^gapped.safetensors could not be read \(.*\); the file is damaged"):
        load_vae(gapped)


def test_an_empty_alpha_is_refused(dit_path, tmp_path):
    path = tmp_path / "empty_alpha.safetensors"
    tensors = write_tiny_lora(path, dit_path, "comfy", alpha=4.0, layers=["blocks.0.self_attn.q"])
    tensors["diffusion_model.blocks.0.self_attn.q.alpha"] = torch.zeros(0)
    save_file(tensors, str(path))
    with pytest.raises(LoraError, match=r"'diffusion_model.blocks.0.self_attn.q.alpha' holds no value"):
        with_lora(handle_for(dit_path), path, 1.0)


def test_a_deeply_nested_header_is_not_a_safetensors_file(tmp_path):
    raw = b"[" * 100_000 + b"]" * 100_000  # json's recursion limit, not a crash
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match="not a .safetensors file"):
        detect_dit(path)
    with pytest.raises(VAEFileError, match="not a .safetensors file"):
        detect_vae(path)


def test_long_paths_are_cut_in_the_middle_keeping_the_file_name():
    """Before: cut from the start, so a long folder path hid the one fact needed (which file)."""
    from wan22duo.engine.weights.safetensors_header import clip

    name = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
    path = "/mnt/models/" + "deep/" * 60 + name
    shown = clip(path)
    assert shown.startswith("/mnt/models/deep/") and shown.endswith(f".../{name} ({len(path)} characters)")
    assert len(shown) < 200
    long_name = "x" * 300 + ".gguf"  # a name longer than the limit: its start and its end (the extension)
    assert clip(long_name).startswith("x" * 40) and clip(long_name).endswith(f"x.gguf ({len(long_name)} characters)")
    assert clip("short.gguf") == "short.gguf"
