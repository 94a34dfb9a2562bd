"""NaN/inf into or out of the VAE is a named error, not a black video."""
import pytest
import torch

from wan22duo.engine.model.vae.model import NonFiniteError
from wan22duo.engine.weights.vae_checkpoint import load_vae
from wan22duo.engine.testing.tiny_vae import write_tiny_vae
from wan22duo.nodes.loaders import Wan22DuoVAELoader
from wan22duo.nodes.vae import Wan22DuoVAEDecode, Wan22DuoVAEEncode


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "wan_2.1_vae.safetensors", "2.1", base_dim=8)


def latent():
    return torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))


def test_a_nan_latent_is_refused_before_decoding(vae_path):
    z = latent()
    z[0, 3, 1, 2, 2] = float("nan")
    vae = load_vae(vae_path)
    with pytest.raises(NonFiniteError, match=r"^the latent to decode holds 1 NaN/inf values of 512; .*black"):
        vae.decode(z)
    assert torch.isfinite(vae.decode(latent())).all()  # one cell was enough before: the whole video went NaN


def test_a_nan_frame_is_refused_before_encoding(vae_path):
    video = torch.zeros(1, 3, 5, 32, 32)
    video[0, 1, 4, 7, 7] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^the video to encode holds 1 NaN/inf values"):
        load_vae(vae_path).encode(video)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nan_weights_are_named_on_decode_and_encode(vae_path, dtype):
    vae = load_vae(vae_path, dtype=dtype)
    with torch.no_grad():
        vae.decoder.head[-1].weight[0].fill_(float("nan"))
        vae.encoder.conv1.weight[0].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"decoded from finite latent frame 0 holds .*the VAE's weights") as dec:
        vae.decode(latent())
    with pytest.raises(NonFiniteError, match=r"encoded from finite frames holds .*the VAE's weights") as enc:
        vae.encode(torch.zeros(1, 3, 1, 32, 32))
    for err in (dec, enc):  # the fp16 advice only where fp16 is in use
        assert ("fp16 overflowed" in str(err.value)) == (dtype == torch.float16)


def test_the_nodes_stop_as_well(vae_path):
    handle = Wan22DuoVAELoader().load(str(vae_path), "fp32", "cpu")["result"][0]
    z = latent()
    z[..., 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="the latent to decode"):
        Wan22DuoVAEDecode().decode(handle, {"samples": z})
    pixels = torch.rand(5, 32, 32, 3)
    pixels[2, 0, 0, 0] = float("nan")
    # The encode node's IMAGE input stops at the shared pixel check (as every image input does), before the VAE.
    with pytest.raises(ValueError, match="pixels holds 1 NaN/inf pixel values"):
        Wan22DuoVAEEncode().encode(handle, pixels)


def test_nan_weights_name_the_file_actually_loaded(tmp_path):
    """Before: the message named the usual files (wan_2.1_vae.safetensors or wan2.2_vae.safetensors) whatever was
    loaded; now the loaded file's name."""
    path = write_tiny_vae(tmp_path / "my_finetuned_vae_v3.safetensors", "2.1", base_dim=8)
    vae = load_vae(path)
    with torch.no_grad():
        vae.decoder.head[-1].weight[0].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"Load another copy of the VAE file my_finetuned_vae_v3\.safetensors\.$"):
        vae.decode(latent())
