import pytest
import torch

from pillargraph.device import resolve_device


def test_usable_devices():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None, default="meta") == torch.device("meta")


@pytest.mark.parametrize("name", ["banana", "", "cuda:x", "gpu"])
def test_unknown_names_blame_the_device(name):
    with pytest.raises(ValueError, match=f"device: unknown device {name!r}"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_clear_line(name):
    with pytest.raises(ValueError, match=f"device: '{name}' asked for, but"):
        resolve_device(name)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_index_beyond_the_devices():
    n = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=f"only {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_rerankers_check_the_device_first():
    from pillargraph import SimilarityBundle
    from pillargraph.baselines import KRNN
    b = SimilarityBundle(torch.rand(3, 6), torch.arange(3).repeat_interleave(2))
    with pytest.raises(ValueError, match="device: unknown device 'banana'"):
        KRNN(k1_i2t=2, k1_t2i=2)(b, device="banana")
