"""Pure pieces of the recipe benchmarks (gallery_size, cli_parity, common.variant)."""
import pytest

from benchmarks.common import VARIANTS, variant
from benchmarks.gallery_size import galleries
from pillargraph.train import RECIPES


def test_galleries_are_disjoint_consecutive_blocks():
    blocks = galleries(1014, 200)
    assert len(blocks) == 5 and all(len(b) == 200 for b in blocks)
    assert blocks[0][0] == 0 and blocks[-1][-1] == 999  # the last 14 images are left out
    assert [len(b) for b in galleries(1000, 1000)] == [1000]
    assert galleries(1000, 5000) == []


def test_variants_are_recipes_with_changed_fields():
    for name in RECIPES:
        assert variant(name).record() == RECIPES[name].record()
    v = variant("inductive_k8")
    assert v.name == "inductive" and v.builder["k_t2i"] == 8 and v.record()["overrides"] == {"builder": {"k_t2i": 8}}
    assert all(base in RECIPES for base, _ in VARIANTS.values())
    with pytest.raises(ValueError, match="unknown learned variant"):
        variant("best")


def test_recorded_commands_carry_no_machine_paths():
    from benchmarks.common import REPO, command_line
    cmd = command_line("benchmarks/x.py", ["--out", str(REPO / "benchmarks" / "results" / "a"),
                                           "--models", "/scratch/run7/models", "--k", "3", "--out=/tmp/q/z"])
    assert cmd == ("python benchmarks/x.py --out benchmarks/results/a --models SCRATCH/run7/models --k 3 "
                   "--out=SCRATCH/q/z")
