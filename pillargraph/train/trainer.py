"""Training a :class:`~pillargraph.nn.PillarReranker`: batches, losses, schedule, checkpoints."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..device import resolve_device
from ..graphs.batch import GraphBatch
from ..graphs.builder import PillarGraphBuilder
from ..graphs.dataset import QueryGraphDataset
from ..io import atomic_torch_save, atomic_write_text, ensure_writable_dir
from ..losses import PillarLoss
from ..nn import PillarReranker
from ..rerank import FusionChoice, combine_any, evaluate_any, rerank_scores, select_fusion_weights
from ..version import __version__
from .config import TrainConfig
from .prefetch import prefetched

__all__ = ["Trainer", "TrainResult", "TrainingBatch", "load_checkpoint", "model_from_checkpoint",
           "model_from_state", "check_finite_loss", "setting_flag", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


@dataclass
class TrainingBatch:
    """The four graph batches of one training step (method.md, section 5).

    For caption items ``t`` with images ``i``: ``t2i`` holds the captions'
    graphs, ``i2t`` their images' graphs; ``mirror_t2i`` is the t2i-shaped
    mirror of each image's list with query ``t`` (scored by the t2i network),
    ``mirror_i2t`` the i2t-shaped mirror of each caption's list with query ``i``.
    The mirrors are ``None`` when the alignment loss is off.
    """

    i2t: GraphBatch
    t2i: GraphBatch
    mirror_t2i: Optional[GraphBatch] = None
    mirror_i2t: Optional[GraphBatch] = None

    def to(self, device) -> "TrainingBatch":
        return TrainingBatch(*(None if g is None else g.to(device, non_blocking=True)
                               for g in (self.i2t, self.t2i, self.mirror_t2i, self.mirror_i2t)))


@dataclass
class _Run:
    """Progress of one training run (what ``last.pt`` restores)."""

    start_epoch: int = 0
    step: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    best: Dict[str, Any] = field(default_factory=lambda: {"rsum": -math.inf, "epoch": -1})
    bad_evals: int = 0
    best_state: Optional[Dict[str, Tensor]] = None

    def stopped(self, patience: Optional[int]) -> bool:
        """Whether early stopping has triggered."""
        return patience is not None and self.bad_evals >= patience


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    best_epoch: int
    best_dev_rsum: float
    epochs_run: int
    history: List[Dict[str, Any]] = field(repr=False)
    fusion: Optional[Dict[str, float]] = None
    out_dir: Optional[Path] = None

    def dev_history(self) -> List[Dict[str, Any]]:
        """Per epoch: ``epoch``, ``dev_rsum`` (None where dev was not evaluated) and
        ``train_time_s`` (rounded to 0.1 s), for results files."""
        return [{"epoch": h["epoch"], "dev_rsum": h.get("dev", {}).get("rsum"),
                 "train_time_s": round(h["train_time_s"], 1)} for h in self.history]


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary unpickling).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``map_location`` is not a usable device, or the file is not
            a pillargraph checkpoint.
    """
    path = Path(path)
    if isinstance(map_location, (str, torch.device)):
        map_location = resolve_device(map_location)  # blame the device, not the file
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; pass the checkpoint file (e.g. {path / 'best.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        reason = " ".join(str(err).split())[:200]
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a pillargraph checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def model_from_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> PillarReranker:
    """Rebuild the trained model of a checkpoint, with its builder config and fusion weights.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a pillargraph checkpoint, a missing or invalid
            ``model_config`` / ``builder_config``, or weights whose names or
            shapes do not fit the model the config describes.
    """
    return model_from_state(load_checkpoint(path, map_location), path)


def model_from_state(state: Dict[str, Any], path: Union[str, os.PathLike]) -> PillarReranker:
    """:func:`model_from_checkpoint` of a checkpoint already read with :func:`load_checkpoint`
    (``path`` names it in messages); the caller can read the rest of ``state`` too.

    Raises:
        ValueError: as :func:`model_from_checkpoint`.
    """
    for key in ("model_config", "builder_config", "model"):
        if not isinstance(state.get(key), dict):
            raise ValueError(f"{path}: damaged checkpoint, {key!r} is missing or not a dict")
    try:
        model = PillarReranker.from_config(dict(state["model_config"]))
        builder = PillarGraphBuilder(**state["builder_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: damaged checkpoint, invalid config ({err})") from None
    if builder.num_features != model.to_config()["in_channels"]:
        raise ValueError(f"{path}: damaged checkpoint, the builder makes {builder.num_features} "
                         f"features but the model reads {model.to_config()['in_channels']}")
    mismatch = _state_mismatch(model.state_dict(), state["model"])
    if mismatch:
        raise ValueError(f"{path}: damaged checkpoint, its weights do not fit the model ({mismatch})")
    broken = [k for k, v in state["model"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ValueError(f"{path}: its weights hold NaN or infinite values ({broken[0]!r}"
                         f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}): the run diverged; "
                         f"it would re-rank nothing")
    model.load_state_dict(state["model"])
    model.builder_config = builder.config
    model.fusion_weights = state.get("fusion")
    model.run_info = dict(state.get("run_info") or {})
    return model.eval()


def _state_mismatch(expected: Dict[str, Tensor], saved: Dict[str, Any]) -> str:
    """What differs between two state dicts (names, tensor shapes), on one line; ``''`` if nothing."""
    problems = [f"missing {k!r}" for k in expected if k not in saved]
    problems += [f"unexpected {k!r}" for k in saved if k not in expected]
    problems += [f"{k!r} has shape {list(v.shape)}, the model needs {list(expected[k].shape)}"
                 if isinstance(v, Tensor) else f"{k!r} is not a tensor"
                 for k, v in saved.items()
                 if k in expected and not (isinstance(v, Tensor) and v.shape == expected[k].shape)]
    if not problems:
        return ""
    more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
    return problems[0] + more


#: Command-line flags of the settings whose flag is not ``--`` and the name with dashes.
_FLAGS = {"hidden_channels": "--hidden", "num_layers": "--layers", "use_edge_weight": "--no-edge-weight",
          "alignment": "--alignment (or --no-align)", "mirror_contrastive": "--mirror-contrastive (or --no-align)"}
#: Settings no flag of ``pillargraph train`` sets (named as they are); ``in_channels`` and
#: ``extra_channels`` follow from the graph settings, which are compared first.
_NO_FLAG = ("context_nodes", "include_self", "reciprocal_depth", "in_channels", "extra_channels", "split_norm",
            "attend", "hetero", "mlp_ratio", "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip", "amp",
            "eval_every", "select_fusion")


def setting_flag(name: str) -> str:
    """The ``pillargraph train`` flag of a builder, model or training setting (``'k_t2i'`` -> ``'--k-t2i'``),
    or the name itself for a setting no flag sets."""
    return name if name in _NO_FLAG else _FLAGS.get(name, "--" + name.replace("_", "-"))


def _plain(config: Dict[str, Any]) -> Dict[str, Any]:
    """A settings dict as JSON has it (tuples as lists), so a saved and a live config compare equal."""
    return json.loads(json.dumps(config, default=str))


def check_finite_loss(loss: Tensor, out_dir: Optional[Path] = None) -> None:
    """Stop training at a NaN or infinite loss, before the optimiser step would spread it into the weights.

    Under :class:`~pillargraph.train.distributed.DistributedTrainer` every process
    computes the loss of the whole global batch, so all of them stop together.

    Raises:
        ValueError: the loss is not finite; ``out_dir`` (the run folder, if any)
            keeps the checkpoints of the epochs finished before.
    """
    if bool(torch.isfinite(loss.detach()).all()):
        return
    kept = f"; {out_dir} keeps the epochs finished before" if out_dir is not None else ""
    raise ValueError(f"loss: became {float(loss.detach())} during training, so training stopped before the weights "
                     f"took it{kept}. Lower the learning rate (--lr) or change the loss settings (--tau, "
                     f"--align-tau, the loss weights)")


class Trainer:
    """Trains a re-ranker on a train split, selecting by dev rSum.

    One run lives in ``out_dir``: ``last.pt`` (written atomically after every
    epoch, with optimiser state, so :meth:`fit` resumes after an interruption
    and finishes exactly as an uninterrupted run would), ``best.pt`` (the best
    dev rSum so far, plus the chosen fusion weights at the end), ``config.json``
    and ``metrics.jsonl`` (one JSON line per epoch; TensorBoard events too when
    ``tensorboard`` is installed).

    Reproducibility: the model is initialised from ``config.seed``; each epoch
    re-seeds shuffling, dropout and positive sampling from ``(seed, epoch)``,
    which is what makes resuming exact.

    Args:
        model (PillarReranker): the model to train.
        builder (PillarGraphBuilder): how graphs are built (kept with the checkpoints).
        config (TrainConfig, optional): training options.
        out_dir (str or Path, optional): run folder; ``None`` keeps nothing on disk.
        device (str or torch.device, optional): where to train (default: CPU).
        progress (bool, optional): show a progress bar (default: when stderr is a terminal).
        run_info (dict, optional): what else decided the run (e.g. ``{"recipe": ...}``, see
            :class:`~pillargraph.train.Recipe`), written into ``config.json`` and every checkpoint.
    """

    def __init__(self, model: PillarReranker, builder: PillarGraphBuilder,
                 config: Optional[TrainConfig] = None, out_dir: Union[str, os.PathLike, None] = None,
                 device: Union[str, torch.device, None] = None, progress: Optional[bool] = None,
                 run_info: Optional[Dict[str, Any]] = None) -> None:
        self.config = config or TrainConfig()
        self.run_info = dict(run_info or {})
        self.builder = builder
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = model.to(self.device)
        self.model.builder_config = builder.config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        c = self.config
        self.loss_fn = PillarLoss(contrastive=c.contrastive, triplet=c.triplet, alignment=c.alignment,
                                  mirror_contrastive=c.mirror_contrastive, hinge=c.hinge, tau=c.tau,
                                  margin=c.margin, align_tau=c.align_tau, hinge_margin=c.hinge_margin)
        self.amp = self.device.type == "cuda" if c.amp is None else bool(c.amp)
        self.optimizer = self._make_optimizer()
        self._forward = torch.compile(self.step_loss) if c.compile else self.step_loss
        self._writer = None
        #: whether this trainer writes into and reads from ``out_dir`` (False on the ranks other than 0 of a
        #: distributed run, which get the resumed checkpoint and the best weights from rank 0)
        self.writes_files = True

    # ------------------------------------------------------------ pieces
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)

    def lr_at(self, step: int, total_steps: int) -> float:
        """Linear warm-up, then per-step cosine decay to ``min_lr_ratio * lr``."""
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        span = max(1, total_steps - c.warmup_steps)
        progress = min(1.0, (step - c.warmup_steps) / span)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def prepare(self, train: SimilarityBundle) -> Dict[str, Any]:
        """Build (once) every graph of the train split, for both directions."""
        source = self.builder.source(train)
        return {"source": source,
                "i2t": self.builder.build(source, "i2t"),
                "t2i": self.builder.build(source, "t2i")}

    def make_batch(self, data: Dict[str, Any], captions: Tensor, generator: torch.Generator) -> TrainingBatch:
        """The :class:`TrainingBatch` of the given training captions."""
        source = data["source"]
        i2t_ds: QueryGraphDataset = data["i2t"]
        t2i_ds: QueryGraphDataset = data["t2i"]
        captions = captions.to(source.txt2img.device)
        images = source.txt2img[captions]
        g_t2i = t2i_ds.batch(captions)
        g_i2t = i2t_ds.batch(images)
        if self.config.alignment == 0 and self.config.mirror_contrastive == 0:
            return TrainingBatch(g_i2t, g_t2i)
        m_t2i = self.builder.mirror(source, g_i2t, captions, t2i_ds.pillars[captions], generator)
        m_i2t = self.builder.mirror(source, g_t2i, images, i2t_ds.pillars[images], generator)
        return TrainingBatch(g_i2t, g_t2i, m_t2i, m_i2t)

    def step_loss(self, batch: TrainingBatch) -> tuple:
        """Scores of the four lists and the loss of one step: ``(total, parts)``."""
        m = self.model
        mirrored = batch.mirror_t2i is not None
        return self.loss_fn(m(batch.i2t), m(batch.t2i),
                            m(batch.mirror_t2i) if mirrored else None,
                            m(batch.mirror_i2t) if mirrored else None,
                            y_i2t=batch.i2t.y, y_t2i=batch.t2i.y,
                            mask_i2t=batch.i2t.candidate_mask, mask_t2i=batch.t2i.candidate_mask,
                            base_i2t=batch.i2t.base_score, base_t2i=batch.t2i.base_score)

    @torch.no_grad()
    def evaluate_dev(self, dev: SimilarityBundle, dev_graphs: Dict[str, QueryGraphDataset]) -> Dict[str, float]:
        """Dev metrics of the learned scores alone (fusion weight 1) in the best of ``config.fusion_outputs``
        (ties to the first), plus ``rsum_<output>`` for each output mode."""
        scored = rerank_scores(self.model, dev, self.builder, dev_graphs, device=self.device)
        metrics = {o: evaluate_any(combine_any(dev, scored, 1.0, 1.0, o)) for o in self.config.fusion_outputs}
        best = max(metrics, key=lambda o: (round(metrics[o]["rsum"], 6), -self.config.fusion_outputs.index(o)))
        return {**metrics[best], **{f"rsum_{o}": m["rsum"] for o, m in metrics.items()}}

    # ------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, step: int, history: list, best: dict, bad_evals: int,
               fusion: Optional[dict] = None) -> Dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": __version__,
                "model_config": self.model.to_config(), "builder_config": self.builder.config,
                "train_config": self.config.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "epoch": epoch, "step": step,
                "history": history, "best": best, "bad_evals": bad_evals, "fusion": fusion,
                "run_info": self.run_info}

    @property
    def writing(self) -> bool:
        """Whether checkpoints, logs and TensorBoard events go to ``out_dir``."""
        return self.out_dir is not None and self.writes_files

    def _log(self, record: Dict[str, Any]) -> None:
        if not self.writing:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(key, value, record["epoch"])
            for key, value in record.get("dev", {}).items():
                self._writer.add_scalar(f"dev/{key}", value, record["epoch"])

    def _open_run(self, resume: bool) -> Optional[Dict[str, Any]]:
        if self.out_dir is None:
            return None
        if self.writing:
            ensure_writable_dir(self.out_dir)  # fail before an epoch is spent, not after
        last = self.out_dir / "last.pt"
        state = None
        if last.exists():
            if not resume:
                raise ValueError(f"out_dir: {self.out_dir} already holds a run (last.pt); resume it "
                                 f"or choose another folder")
            state = load_checkpoint(last, map_location=self.device)
            self._check_same_run(state)  # before anything of the run is read into the model or rewritten
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            # keep the log consistent with the checkpoint: drop epochs after it
            if self.writing:
                atomic_write_text(self.out_dir / "metrics.jsonl",
                                  "".join(json.dumps(r) + "\n" for r in state["history"]))
        elif self.writing:
            (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        if not self.writing:
            return state
        atomic_write_text(self.out_dir / "config.json", json.dumps(
            {"version": __version__, **self.run_info, "model": self.model.to_config(),
             "builder": self.builder.config, "train": self.config.to_dict()}, indent=2))
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self._writer = None
        return state

    def _check_same_run(self, state: Dict[str, Any]) -> None:
        """Refuse to resume a run with any other graph, model or training setting (naming the first)."""
        saved = TrainConfig.from_dict(state["train_config"]).to_dict()
        for then, now in ((state.get("builder_config"), self.builder.config),
                          (state.get("model_config"), self.model.to_config()), (saved, self.config.to_dict())):
            then, now = _plain(then or {}), _plain(now)
            key = next((k for k in now if k in then and then[k] != now[k]), None)
            if key is not None:
                raise ValueError(f"{setting_flag(key)}: {json.dumps(then[key])} in the run in {self.out_dir}, "
                                 f"{json.dumps(now[key])} now; resume with the same settings or choose another "
                                 f"--out")
        mismatch = _state_mismatch(self.model.state_dict(), state["model"])
        if mismatch:
            raise ValueError(f"{self.out_dir}: the run's weights do not fit this model ({mismatch}); resume "
                             f"with the same settings or choose another --out")

    # ------------------------------------------------------------ training
    def fit(self, train: SimilarityBundle, dev: SimilarityBundle, resume: bool = True,
            on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None) -> TrainResult:
        """Train, evaluating on ``dev`` and keeping the best model by dev rSum.

        Args:
            train: the training split (its ground truth supervises the losses).
            dev: the model-selection split.
            resume: continue from ``out_dir/last.pt`` when it exists (default:
                True); with ``False`` an existing run is an error, never overwritten.
            on_epoch_end: called with each epoch's log record.

        Returns:
            A :class:`TrainResult`; the model holds the best weights afterwards.
        """
        c = self.config
        run = self._restore(self._open_run(resume))
        data = None  # the training graphs, built when an epoch runs (a finished run only re-selects its fusion)
        dev_graphs = {d: self.builder.build(dev, d) for d in ("i2t", "t2i")}
        total_steps = math.ceil(train.num_texts / c.batch_size) * c.epochs
        for epoch in range(run.start_epoch, c.epochs):
            if run.stopped(c.patience):
                break
            data = self.prepare(train) if data is None else data
            record = self.train_epoch(data, epoch, run, total_steps)
            if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
                record["dev"] = self.evaluate_dev(dev, dev_graphs)
                self._keep_if_best(run, record)
            run.history.append(record)
            self._log(record)
            if self.writing:
                atomic_torch_save(self._state(epoch, run.step, run.history, run.best, run.bad_evals),
                                  self.out_dir / "last.pt")
            if on_epoch_end is not None:
                on_epoch_end(record)
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
        fusion = self._select_fusion(dev, dev_graphs) if c.select_fusion else None
        if self._writer is not None:
            self._writer.close()
        return TrainResult(best_epoch=run.best["epoch"], best_dev_rsum=run.best["rsum"],
                           epochs_run=len(run.history), history=run.history, fusion=fusion, out_dir=self.out_dir)

    def _restore(self, state: Optional[Dict[str, Any]]) -> "_Run":
        """The run's progress: fresh, or from a resumed ``last.pt`` (best weights from ``best.pt``)."""
        run = _Run()
        if state is None:
            return run
        run.start_epoch, run.step, run.history = state["epoch"] + 1, state["step"], list(state["history"])
        run.best, run.bad_evals = dict(state["best"]), state["bad_evals"]
        if run.best["epoch"] >= 0 and self.writing and (self.out_dir / "best.pt").exists():
            run.best_state = load_checkpoint(self.out_dir / "best.pt", self.device)["model"]
        return run

    def train_epoch(self, data: Dict[str, Any], epoch: int, run: "_Run", total_steps: int) -> Dict[str, Any]:
        """One pass over the training captions in a seeded order; returns the epoch's log record."""
        c = self.config
        t0 = time.perf_counter()
        torch.manual_seed(c.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        n_items = data["source"].num_texts
        order = torch.randperm(n_items, generator=gen)
        steps = math.ceil(n_items / c.batch_size)
        self.model.train()
        sums: Dict[str, float] = {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False)
        lr = self.lr_at(run.step, total_steps)
        batches = prefetched(lambda a: self.make_batch(data, order[a:a + c.batch_size], gen).to(self.device),
                             range(0, n_items, c.batch_size))
        for batch in batches:
            lr = self.lr_at(run.step, total_steps)
            loss, parts = self.train_step(batch, lr)
            run.step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if bar is not None:
            bar.close()
        return {"epoch": epoch, "step": run.step, "lr": lr, "train_time_s": time.perf_counter() - t0,
                **{f"loss_{k}": v / steps for k, v in sums.items()}}

    def train_step(self, batch: "TrainingBatch", lr: float) -> Tuple[Tensor, Dict[str, Tensor]]:
        """One optimiser step at learning rate ``lr``; returns the loss and its parts."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, parts = self._forward(batch)
        check_finite_loss(loss, self.out_dir if self.writing else None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss, parts

    def _keep_if_best(self, run: "_Run", record: Dict[str, Any]) -> None:
        """Track the best dev rSum (its weights in memory and in ``best.pt``) and the patience count."""
        if record["dev"]["rsum"] > run.best["rsum"]:
            run.best = {"rsum": record["dev"]["rsum"], "epoch": record["epoch"]}
            run.bad_evals = 0
            run.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.writing:
                atomic_torch_save(self._state(record["epoch"], run.step, run.history + [record], run.best,
                                              run.bad_evals), self.out_dir / "best.pt")
        else:
            run.bad_evals += 1

    def _select_fusion(self, dev: SimilarityBundle, dev_graphs: Dict[str, Any]) -> Dict[str, Any]:
        """Choose the base-fusion weights on dev, store them on the model and in ``best.pt``."""
        choice: FusionChoice = select_fusion_weights(self.model, dev, self.builder, graphs=dev_graphs,
                                                     device=self.device, output=self.config.fusion_outputs)
        fusion = choice.as_dict()
        self.model.fusion_weights = fusion
        if self.writing and (self.out_dir / "best.pt").exists():
            best_ckpt = load_checkpoint(self.out_dir / "best.pt", self.device)
            best_ckpt["fusion"] = fusion
            atomic_torch_save(best_ckpt, self.out_dir / "best.pt")
        return fusion
