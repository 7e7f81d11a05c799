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


def test_dev_search_summary_names_every_command_and_each_variant_as_it_ran():
    from benchmarks.learned_search import summary
    def row(name, command, features):
        recipe = variant(name).override(builder={"node_features": features}).record()
        return {"combo": "tfidf:minilm", "train": "3000 img", "variant": name, "seed": 0, "transductive": False,
                "fusion": {"output": "directions"}, "dev_base_rsum": 1.0, "dev_learned_rsum": 2.0,
                "dev_fused_rsum": 3.0, "best_epoch": 0, "seconds": 9, "config": {"recipe": recipe}, "command": command}
    md = summary([row("inductive", "python a.py", ("rank",)), row("inductive", "python b.py", ("rank",)),
                  row("inductive", "python b.py", ("rank", "prior:dba"))], "python b.py")
    assert md.splitlines()[0] == "Command: `python a.py ; python b.py`"
    lines = [x for x in md.splitlines() if x.startswith("- `inductive`")]
    assert len(lines) == 2 and "['rank']" in lines[0] and "'prior:dba'" in lines[1]  # the recipe changed between runs
