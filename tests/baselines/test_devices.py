import pytest
import torch

from pillargraph.baselines import available_rerankers, get_reranker

MINE = ["alpha_qe", "dba", "diffusion", "ecn", "gnn_rerank", "k_reciprocal"]


@pytest.mark.parametrize("name", MINE)
def test_chunk_size_does_not_change_scores(make_bundle, name):
    b = make_bundle(n=7, per=3, seed=11)
    m = get_reranker(name)
    whole, chunked = m(b), m(b, chunk_size=2)
    for d in ("i2t", "t2i"):
        torch.testing.assert_close(chunked[d], whole[d])


@pytest.mark.parametrize("name", MINE)
def test_float32_close_to_float64(make_bundle, name):
    b = make_bundle(n=7, per=3, seed=12)
    ref = get_reranker(name)(b)
    out = get_reranker(name)(b.to(dtype=torch.float32))
    for d in ("i2t", "t2i"):
        assert out[d].dtype == torch.float32
        # rankings agree except among near-ties
        torch.testing.assert_close(out[d].double(), ref[d], rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MINE)
def test_cuda_matches_cpu(make_bundle, name):
    b = make_bundle(n=7, per=3, seed=13)
    cpu = get_reranker(name)(b)
    gpu = get_reranker(name)(b, device="cuda")
    for d in ("i2t", "t2i"):
        assert gpu[d].device.type == "cuda"
        torch.testing.assert_close(gpu[d].cpu(), cpu[d])


def test_all_mine_registered():
    assert set(MINE) <= set(available_rerankers())
