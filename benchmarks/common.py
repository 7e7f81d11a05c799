"""Helpers shared by the benchmark scripts: progress lines, peak memory, random query-graph batches, a timer,
the learned re-ranker's named settings, trained models kept on disk, seed statistics and figures."""
from __future__ import annotations

import json
import os
import re
import resource
import shlex
import statistics
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from pillargraph.bundle import SimilarityBundle
from pillargraph.data import caption_proxy_bundle, caption_proxy_embeddings, episode_partition, resolve_text_encoder
from pillargraph.data.text_encoders import TEXT_ENCODERS
from pillargraph.graphs import IMAGE, TEXT, GraphBatch
from pillargraph.io import atomic_write, atomic_write_text
from pillargraph.nn import PillarReranker
from pillargraph.train import RECIPES, Recipe, get_recipe, load_checkpoint, model_from_state

__all__ = ["portable_path", "portable_file", "log", "peak_rss_gib", "command_line", "ENCODERS", "parse_combo", "parse_list", "ProxyTrain", "f30k_split",
           "random_graph_batch", "mirrored", "time_it", "VARIANTS", "variant", "recipe_for", "model_dir",
           "claim_model_dir", "load_finished", "mean_std", "save_figure", "PROXY_NOTE",
           "write_results", "description"]

#: The line every caption-proxy results file and figure carries.
PROXY_NOTE = "Caption proxy (real captions, text-to-text retrieval): NOT image-text results"

#: Caption-proxy encoder names a combo ``CROSS:INTRA`` may use (``bm25`` as CROSS only).
ENCODERS = tuple(TEXT_ENCODERS)


def log(msg: str) -> None:
    """One timestamped progress line on stdout; tagged with the rank under torchrun with several processes."""
    rank = os.environ.get("RANK")
    tag = f" rank {rank}" if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    print(f"[{time.strftime('%H:%M:%S')}{tag}] {msg}", flush=True)


def peak_rss_gib(who: str = "self") -> float:
    """Peak resident memory so far in GiB: of this process (``'self'``) or of the largest child process it
    has waited for (``'children'``). Linux reports ``ru_maxrss`` in KiB."""
    scope = {"self": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    if who not in scope:
        raise ValueError(f"who: expected 'self' or 'children', got {who!r}")
    return resource.getrusage(scope[who]).ru_maxrss / 2 ** 20


#: The repository root (paths under it are recorded relative to it).
REPO = Path(__file__).resolve().parents[1]
#: How a recorded command names a folder outside the repository (a scratch folder of the machine that ran it).
SCRATCH = "SCRATCH"


def portable_file(path: Union[str, Path]) -> str:
    """A file or folder as a results file records it: relative to the repository root when it lies under it,
    else ``SCRATCH/<its last two parts>`` (no machine's folders in a results file); a relative path is taken
    from the working directory."""
    path = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return "/".join([SCRATCH, *path.parts[-2:]])


def portable_path(arg: str) -> str:
    """A command-line argument as a results file records it: every absolute path in it, whole or after an
    ``=`` or a comma (``--out=/abs/x``, ``NAME=/abs/a,/abs/b``), written by :func:`portable_file`; the rest of
    the argument unchanged."""
    return "".join(portable_file(piece) if piece.startswith("/") else piece for piece in re.split(r"([=,])", arg))


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The shell-quoted command that ran ``script`` (``'benchmarks/NAME.py'``) with ``argv`` (default: this
    process's arguments), as results files record it: run from the repository root, with repository-relative
    paths (:func:`portable_path`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + " ".join(shlex.quote(portable_path(a)) for a in [script, *args])


def parse_combo(combo: str, flag: str = "--combo") -> Tuple[str, str]:
    """``'CROSS:INTRA'`` as ``(cross, intra)``, names from :data:`ENCODERS`; the intra encoder must compare by
    cosine (``bm25`` is a query-document scorer, cross-modal only). ValueError naming ``flag`` otherwise."""
    parts = [p.strip() for p in combo.strip().split(":")]
    if len(parts) != 2 or not all(p in ENCODERS for p in parts):
        raise ValueError(f"{flag}: expected CROSS:INTRA pairs of {list(ENCODERS)}, got {combo!r}")
    if resolve_text_encoder(parts[1]).similarity != "cosine":
        raise ValueError(f"{flag}: {parts[1]!r} is a query-document scorer, not a symmetric similarity, so it "
                         f"can only be CROSS, got {combo!r}")
    return parts[0], parts[1]


def parse_list(text: str, flag: str, cast: Callable[[str], Any] = str) -> List[Any]:
    """A comma-separated option as a list of distinct ``cast`` values; ValueError naming ``flag`` when it is
    empty, repeats an item or an item does not cast."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        values = [cast(x) for x in items]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated {getattr(cast, '__name__', 'value')}s, "
                         f"got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{flag}: expected one or more distinct items, got {text!r}")
    return values


class ProxyTrain:
    """The Flickr30K-train caption proxy of one combo (see :func:`parse_combo`), cut to its first ``train_images``
    images, in the form
    ``pillargraph train`` would read it for a recipe; and the Flickr30K dev bundle.

    ``form='dense'``: one dense bundle (what a ``.npz`` bundle gives the CLI; the recipe's episodes are cut
    from it by :func:`pillargraph.data.as_episodes`, as the CLI does). ``form='lists'``: top-``lists_k`` lists,
    searched within the recipe's episodes (:func:`pillargraph.data.episode_partition`, seed ``episode_seed``),
    what ``pillargraph neighbors --episode-images`` writes. ``'auto'``: dense up to 5,000 images.
    """

    def __init__(self, combo: str, train_images: int, form: str = "auto", lists_k: int = 100,
                 episode_seed: int = 0) -> None:
        if form not in ("auto", "dense", "lists"):
            raise ValueError(f"form: expected auto, dense or lists, got {form!r}")
        cross, intra = parse_combo(combo)
        t0 = time.perf_counter()
        self.emb = caption_proxy_embeddings("f30k_train", cross, intra)
        if train_images < self.emb.num_images:
            self.emb = self.emb.subset(torch.arange(train_images))
        self.form = ("dense" if self.emb.num_images <= 5000 else "lists") if form == "auto" else form
        self.lists_k, self.episode_seed = lists_k, episode_seed
        self.combo = f"{cross}:{intra}"
        self.dev = caption_proxy_embeddings("f30k_dev", cross, intra).bundle()
        self._cache: Dict[Tuple[int, ...], Any] = {}
        log(f"data {combo}: train {self.emb.num_images} x {self.emb.num_texts} ({self.form}), dev "
            f"{self.dev.num_images}x{self.dev.num_texts}, {time.perf_counter() - t0:.0f}s, "
            f"peak RSS {peak_rss_gib():.1f} GiB")

    def train_for(self, recipe: Recipe) -> Any:
        """The training split as the CLI would read it for ``recipe`` (built once per episode sizes)."""
        key = tuple(recipe.episode_images) if self.form == "lists" else ()
        if key not in self._cache:
            t0 = time.perf_counter()
            if self.form == "dense":
                self._cache[key] = self.emb.bundle()
            else:
                parts = episode_partition(self.emb.num_images, key, self.episode_seed) if key else None
                self._cache[key] = self.emb.lists(self.lists_k, episodes=parts)
            log(f"  train split {self._cache[key]!r}: {time.perf_counter() - t0:.0f}s, "
                f"peak RSS {peak_rss_gib():.1f} GiB")
        return self._cache[key]

    def model_info(self, name: str, recipe: Recipe, seed: int, dev_images: int) -> Dict[str, Any]:
        """What a model trained on this split is (the ``data.json`` of :func:`claim_model_dir`): combo, recipe
        name and record, seed, training images and form, episode seed and the Flickr30K dev images it was
        selected on."""
        return {"combo": self.combo, "recipe_name": name, "recipe": recipe.record(), "seed": seed,
                "train_images": self.emb.num_images, "train_form": self.label(recipe),
                "episode_seed": self.episode_seed, "dev": {"split": "f30k_dev", "images": dev_images}}

    def label(self, recipe: Recipe) -> str:
        """How results tables name the training data of ``recipe``."""
        episodes = (f"episodes of {','.join(map(str, recipe.episode_images))}" if recipe.episode_images
                    else "whole split")
        form = "dense" if self.form == "dense" else f"lists k={self.lists_k}"
        return f"{self.emb.num_images} img, {form}, {episodes}"


def f30k_split(combo: str, split: str, limit: Optional[int] = None) -> SimilarityBundle:
    """A combo's Flickr30K ``split`` (``'dev'`` or ``'test'``) caption proxy without embeddings, cut to its first
    ``limit`` images and their captions when given (smoke runs), as ``caption_proxy.py --limit`` cuts it."""
    cross, intra = parse_combo(combo)
    bundle = caption_proxy_bundle(f"f30k_{split}", cross=cross, intra=intra)
    return bundle.subset(torch.arange(limit)) if limit and bundle.num_images > limit else bundle


def random_graph_batch(direction: str, b: int, k: int, f: int, density: float = 0.3,
                       device: str = "cpu", seed: int = 0) -> GraphBatch:
    """Random features and a random row-stochastic adjacency with self loops (the builder's output shape)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, k, f, generator=g)
    raw = torch.rand(b, k, k, generator=g) * (torch.rand(b, k, k, generator=g) < density) + torch.eye(k)
    adj = raw / raw.sum(-1, keepdim=True)
    query_type, cand_type = (IMAGE, TEXT) if direction == "i2t" else (TEXT, IMAGE)
    node_type = torch.full((k,), cand_type, dtype=torch.long)
    node_type[0] = query_type
    candidate_mask = torch.arange(k) > 0
    y = (torch.rand(b, k, generator=g) < 0.1) & candidate_mask
    y[:, 1] = True
    batch = GraphBatch(direction=direction, x=x, adj=adj, node_type=node_type, candidate_mask=candidate_mask,
                       query_index=torch.arange(b), node_index=torch.randint(0, 10 * b, (b, k), generator=g),
                       base_score=torch.rand(b, k, generator=g).sort(-1, descending=True).values, y=y)
    return batch.to(device)


def mirrored(batch: GraphBatch) -> GraphBatch:
    """The same graphs with the node types swapped, as the structure-alignment loss scores them."""
    return replace(batch, node_type=1 - batch.node_type)


def time_it(fn: Callable[[], object], repeat: int, warmup: int = 2, device: Optional[str] = None) -> float:
    """Median seconds per call of ``fn``."""
    sync = torch.cuda.synchronize if device is not None and str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# ------------------------------------------------------------------ learned re-ranker settings
#: Dev-search variants: a recipe of :mod:`pillargraph.train.recipes` (the one home of the learned re-ranker's
#: settings) and the fields a variant changes. A variant named like a recipe is that recipe unchanged.
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    **{name: (name, {}) for name in RECIPES},
    "inductive_k8": ("inductive", {"builder": {"k_t2i": 8}}),
    "inductive_aqe": ("inductive", {"builder": {"node_features": ("rank", "prior:alpha_qe")}}),
    "inductive_dba": ("inductive", {"builder": {"node_features": ("rank", "prior:dba")}}),
    "inductive_aqe_dba": ("inductive", {"builder": {"node_features": ("rank", "prior:alpha_qe", "prior:dba")}}),
    "inductive_whole": ("inductive", {"episode_images": 0}),
    "transductive_aqe": ("transductive", {"builder": {"node_features": (
        "rank", "reciprocal", "prior:dual_softmax(temperature=0.1)", "prior:gnn_rerank(k1=10, k2=3)",
        "prior:alpha_qe")}}),
    "transductive_aqe_dba": ("transductive", {"builder": {"node_features": (
        "rank", "reciprocal", "prior:dual_softmax(temperature=0.1)", "prior:gnn_rerank(k1=10, k2=3)",
        "prior:alpha_qe", "prior:dba")}}),
    "inductive_fused": ("inductive", {"train": {"fusion_outputs": ("fused", "directions")}}),
    "transductive_whole": ("transductive", {"episode_images": 0}),
    "paper_episodes": ("paper", {"episode_images": 1000}),
    "transductive_skip": ("transductive", {"model": {"feature_skip": 1.0}}),
    "transductive_h256": ("transductive", {"model": {"hidden_channels": 256}}),
    "transductive_l3": ("transductive", {"model": {"num_layers": 3}}),
    "transductive_k48": ("transductive", {"builder": {"k_i2t": 48, "k_t2i": 48}}),
}


def variant(name: str) -> Recipe:
    """The recipe of a named dev-search variant (a recipe name, or one of :data:`VARIANTS`); ``NAME@eN+M``
    is variant ``NAME`` with episodes of N and M images (``@e0``: the whole split)."""
    if "@e" in name:
        base, sizes = name.split("@e", 1)
        try:
            episodes = [int(x) for x in sizes.split("+")]
        except ValueError:
            raise ValueError(f"variant {name!r}: expected NAME@eN[+N...] with whole numbers") from None
        return variant(base).override(episode_images=episodes)
    if name not in VARIANTS:
        raise ValueError(f"unknown learned variant {name!r}; expected some of {sorted(VARIANTS)}")
    base, changes = VARIANTS[name]
    return get_recipe(base).override(**changes)


def recipe_for(name: str, epochs: Optional[int] = None) -> Recipe:
    """:func:`variant` ``name``, trained for ``epochs`` when given (else the recipe's own epochs)."""
    recipe = variant(name)
    return recipe.override(train={"epochs": epochs}) if epochs is not None else recipe


# ------------------------------------------------------------------ trained models on disk
def model_dir(root: Union[str, os.PathLike], combo: str, recipe: str, seed: int) -> Path:
    """The run folder of one trained model: ``ROOT/CROSS-INTRA/RECIPE/seedS``; a model trained on several combos
    at once (``combo`` ``'A+B+...'``, see ``transfer_mixed.py``) lives in ``ROOT/CROSS-INTRA+CROSS-INTRA.../...``."""
    folder = "+".join("-".join(parse_combo(c)) for c in combo.split("+"))
    return Path(root) / folder / recipe / f"seed{seed}"


def claim_model_dir(root: Union[str, os.PathLike], combo: str, recipe: str, seed: int,
                    data: Dict[str, Any], flag: str = "--save-models") -> Path:
    """The run folder of :func:`model_dir`, with ``data.json`` saying what the model is trained on (combo,
    recipe record, seed, training images, dev split...). A folder that already holds a run keeps it only when
    its ``data.json`` says the same (the trainer then resumes or reuses it); otherwise ValueError naming ``flag``
    and the first setting that differs, before anything is trained."""
    path = model_dir(root, combo, recipe, seed)
    plain = json.loads(json.dumps(data, default=str))
    meta = path / "data.json"
    if meta.exists():
        then = json.loads(meta.read_text())
        key = next((k for k in sorted(set(then) | set(plain)) if then.get(k) != plain.get(k)), None)
        if key is not None:
            raise ValueError(f"{flag}: {path} holds a model of another run ({key}: {json.dumps(then.get(key))} "
                             f"there, {json.dumps(plain.get(key))} now); choose another folder")
    elif (path / "last.pt").exists():
        raise ValueError(f"{flag}: {path} holds a run without data.json (not written by a benchmark); "
                         f"choose another folder")
    else:
        atomic_write_text(meta, json.dumps(plain, indent=1) + "\n")
    return path


def load_finished(path: Union[str, os.PathLike]) -> Optional[Tuple[PillarReranker, Dict[str, Any]]]:
    """The model of a finished run folder (``best.pt`` with its dev-selected fusion, which the trainer writes
    last) and the checkpoint's state, or ``None`` when the run is missing or unfinished."""
    best = Path(path) / "best.pt"
    if not best.exists():
        return None
    state = load_checkpoint(best)
    if not state.get("fusion"):
        return None
    return model_from_state(state, best), state


# ------------------------------------------------------------------ reporting
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def write_results(out: Union[str, Path], payload: Dict[str, Any], markdown: str) -> None:
    """A results file pair, each written atomically: ``OUT.json`` (``payload``; what JSON cannot hold written as
    ``str``) and ``OUT.md`` (``markdown``)."""
    out = Path(out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown)


def description(doc: str) -> str:
    """A script's ``--help`` description from its module docstring: its first paragraph (what it measures) and
    the paragraph that starts with ``Time:`` (about how long a default run takes on 2 cores), without RST markup,
    each wrapped to 100 columns for ``argparse.RawDescriptionHelpFormatter``; ValueError without a ``Time:``
    paragraph."""
    paragraphs = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
    time_par = next((p for p in paragraphs if p.startswith("Time:")), None)
    if time_par is None:
        raise ValueError("benchmark docstring: no paragraph starting with 'Time:'")
    plain = [re.sub(r":\w+:`~?([^`]+)`", r"\1", p).replace("``", "") for p in (paragraphs[0], time_par)]
    return "\n\n".join(textwrap.fill(p, width=100) for p in plain)


def save_figure(fig: Any, path: Union[str, os.PathLike], dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    finally:
        plt.close(fig)
