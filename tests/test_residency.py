"""Lazy model handles and the memory policies (which expert sits where, when)."""
import gc
import weakref

import pytest
import torch
from torch import nn

from wan22duo.engine.memory.residency import ModelHandle, Residency


class FakeAccelModule(nn.Module):
    """A weightless module whose .to() only records where it was sent.

    Lets the tests move experts to "cuda:0"/"cuda:1" on a CPU-only machine; the handle
    tracks the location itself.
    """

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.moves = []

    def to(self, device):
        self.moves.append(str(device))
        return self


def counting_handle(label, device="cuda:0"):
    loads = []

    def load(dev):
        loads.append(str(dev))
        return FakeAccelModule(label)

    return ModelHandle(load, device, info={"name": label}), loads


def test_handle_is_lazy_and_reloads_after_release():
    handle, loads = counting_handle("high")
    assert not handle.loaded and loads == []
    module = handle.acquire()
    assert handle.loaded and handle.location == torch.device("cuda:0") and loads == ["cuda:0"]
    assert handle.acquire() is module and loads == ["cuda:0"]  # no second load
    assert handle.release() and not handle.loaded and handle.location is None
    handle.acquire()
    assert loads == ["cuda:0", "cuda:0"]


def test_offload_cpu_moves_the_idle_expert_off_the_device():
    high, _ = counting_handle("high")
    low, _ = counting_handle("low")
    res = Residency("offload_cpu", {"high": high, "low": low})
    res.use("high")
    assert high.location == torch.device("cuda:0") and not low.loaded  # low not loaded before it is needed
    res.use("low")
    assert high.location == torch.device("cpu") and low.location == torch.device("cuda:0")
    res.finish()
    assert high.location == low.location == torch.device("cpu")
    res.use("high")  # next run: back from RAM, not from the file
    assert high.location == torch.device("cuda:0") and low.location == torch.device("cpu")


def test_release_drops_the_idle_expert_and_reloads_lazily():
    high, high_loads = counting_handle("high")
    low, low_loads = counting_handle("low")
    res = Residency("release", {"high": high, "low": low})
    res.use("high")
    res.use("low")
    assert not high.loaded and low.loaded
    res.finish()
    assert not high.loaded and not low.loaded
    res.use("high")
    assert len(high_loads) == 2 and len(low_loads) == 1


def test_keep_both_moves_nothing():
    high, _ = counting_handle("high")
    low, _ = counting_handle("low")
    res = Residency("keep_both", {"high": high, "low": low})
    res.use("high")
    res.use("low")
    res.finish()
    assert high.location == low.location == torch.device("cuda:0")


@pytest.mark.parametrize("policy", ["offload_cpu", "release"])
def test_experts_on_their_own_devices_never_move(policy):
    high, _ = counting_handle("high", "cuda:0")
    low, _ = counting_handle("low", "cuda:1")
    res = Residency(policy, {"high": high, "low": low})
    res.use("high")
    res.use("low")
    assert high.location == torch.device("cuda:0") and low.location == torch.device("cuda:1")
    assert high.acquire().moves == []


def test_placement_overrides_the_handle_device():
    high, loads = counting_handle("high", "cuda:0")
    low, _ = counting_handle("low", "cuda:0")
    res = Residency("offload_cpu", {"high": high, "low": low}, {"low": "cuda:1"})
    res.use("high")
    res.use("low")
    assert high.location == torch.device("cuda:0") and low.location == torch.device("cuda:1")


def test_release_also_drops_an_expert_parked_in_ram():
    high, _ = counting_handle("high")
    low, _ = counting_handle("low")
    Residency("offload_cpu", {"high": high, "low": low}).use("high")
    high.offload()  # parked in RAM by an earlier offload_cpu run
    Residency("release", {"high": high, "low": low}).use("low")
    assert not high.loaded


def test_release_really_frees_a_cpu_module():
    handle = ModelHandle(lambda dev: nn.Linear(64, 64).to(dev), "cpu")
    ref = weakref.ref(handle.acquire())
    Residency("release", {"high": handle, "low": ModelHandle(lambda dev: nn.Linear(2, 2), "cpu")}).use("low")
    gc.collect()
    assert ref() is None and not handle.loaded


def test_module_handle_cannot_release_so_it_offloads():
    handle = ModelHandle.from_module(FakeAccelModule("wrapped"), device="cuda:0")
    assert handle.location == torch.device("cuda:0")
    assert handle.release() is False
    assert handle.loaded and handle.location == torch.device("cpu")


def test_derive_applies_the_transform_on_every_load():
    base, _ = counting_handle("base", "cpu")
    derived = base.derive(lambda m: setattr(m, "patched", True), role="high_noise")
    assert derived.info["role"] == "high_noise" and not base.loaded
    assert derived.acquire().patched
    derived.release()
    assert derived.acquire().patched


def test_config_comes_from_info_without_loading():
    handle, loads = counting_handle("high")
    handle.info["config"] = "cfg"
    assert handle.config == "cfg" and loads == []


def test_bad_policy_and_empty_handle_are_rejected():
    with pytest.raises(ValueError, match="unknown memory policy 'lazy'"):
        Residency("lazy", {})
    with pytest.raises(ValueError, match="needs a load_fn"):
        ModelHandle(None)
