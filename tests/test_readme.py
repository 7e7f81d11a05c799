"""The README's Python quick start runs as written, on small synthetic splits."""
import re
from pathlib import Path

import pytest

import pillargraph as pg

ROOT = Path(__file__).resolve().parents[1]


def python_quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start: Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_python_quick_start_runs(tmp_path, monkeypatch, capsys):
    train = pg.synthetic_embeddings(120, seed=0, split="train")
    _, dev, test = pg.synthetic_splits(60, 60, 60, seed=0)
    dev.save(tmp_path / "dev.npz")
    test.save(tmp_path / "test.npz")
    monkeypatch.chdir(tmp_path)
    code = python_quick_start().replace('recipe="inductive"', 'recipe=get_recipe("inductive").override('
                                        'train={"epochs": 1}, episode_images=(60,))')
    scope = {"img_emb": train.img_emb, "txt_emb": train.txt_emb, "txt2img": train.txt2img}
    exec("from pillargraph.train import get_recipe\n" + code, scope)
    base, reranked = (float(x) for x in capsys.readouterr().out.split())
    assert 0 < base <= 600 and 0 < reranked <= 600


def cli_quick_start() -> list:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start: command line"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [line.split() for line in lines if line]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_command_line_quick_start_runs(tmp_path, monkeypatch, capsys):
    import numpy as np

    from pillargraph.cli import main

    for name, split, n in (("train", "train", 240), ("dev", "dev", 120)):
        s = pg.synthetic_embeddings(n, seed=0, split=split)
        np.savez(tmp_path / f"{name}.emb.npz", img_emb=s.img_emb.numpy(), txt_emb=s.txt_emb.numpy(),
                 txt2img=s.txt2img.numpy())
    pg.synthetic_splits(60, 60, 120, seed=0)[2].save(tmp_path / "test.npz")
    monkeypatch.chdir(tmp_path)
    commands = cli_quick_start()
    assert [c[:2] for c in commands] == [["pillargraph", "neighbors"], ["pillargraph", "neighbors"],
                                         ["pillargraph", "train"], ["pillargraph", "rerank"],
                                         ["pillargraph", "evaluate"]]
    for argv in commands:
        argv = [{"1000": "120"}.get(a, a) for a in argv[1:]]  # episodes the size of this small split
        if argv[0] == "train":
            argv += ["--epochs", "1", "--episode-images", "120"]
        assert main(argv) == 0, argv
    assert (tmp_path / "test.reranked.npz").exists()
