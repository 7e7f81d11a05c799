import pytest
import torch

from pillargraph.train.prefetch import prefetched


def test_prefetched_draws_what_a_plain_loop_draws_in_order():
    def make(gen):
        return lambda i: (i, torch.rand(3, generator=gen))
    one = make(torch.Generator().manual_seed(0))
    plain = [one(i) for i in range(5)]
    ahead = list(prefetched(make(torch.Generator().manual_seed(0)), range(5)))
    assert [i for i, _ in ahead] == list(range(5))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(plain, ahead))
    assert list(prefetched(lambda i: i, [])) == []


def test_prefetched_raises_at_the_failing_item():
    def make(i):
        if i == 2:
            raise ValueError("item 2")
        return i
    got = []
    with pytest.raises(ValueError, match="item 2"):
        for x in prefetched(make, range(4)):
            got.append(x)
    assert got == [0, 1]
