"""Catalogue of bad inputs and faults for every command (issues 11 and 20).

Each case runs ``pillargraph`` in-process and must end with a non-zero exit
status, exactly one line on stderr that names the problem (the ``expect``
pattern), no traceback, and every file and folder that existed before
untouched (none added either, temporary folders included: ``tempfile`` is
pointed into the workspace). Faults (a full disk, a read-only folder) are
injected into :mod:`pillargraph.io`, so the cases also hold for root, who
ignores file modes. The cases of issue 20 ("hardening, round 3") are marked
with their cause number.
"""
import errno
import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle
from pillargraph.baselines import QueryBank
from pillargraph.cli import main
from pillargraph.data.neighbors import NeighborLists
from pillargraph.data.synthetic import synthetic_splits

from ..helpers.faults import BROKEN_NPZ, fail_with, make_broken

SMALL = ["--num-pillars", "8", "--k-i2t", "8", "--k-t2i", "4", "--overlap-neighbors", "4",
         "--hidden", "16", "--heads", "2", "--epochs", "1", "--batch-size", "64"]
TINY_DEMO = ["--train-images", "30", "--dev-images", "20", "--test-images", "20", *SMALL]


def small(**changes) -> str:
    """:data:`SMALL` as one string, with some flags' values changed (``k_t2i=5`` -> ``--k-t2i 5``)."""
    args = list(SMALL)
    for name, value in changes.items():
        args[args.index("--" + name.replace("_", "-")) + 1] = str(value)
    return " ".join(args)


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (``{ws}`` is the workspace folder) and what the error line says."""
    name: str
    argv: Tuple[str, ...]
    expect: str                                # regex the single stderr line must match
    fault: Optional[Tuple[str, int]] = None    # (step of an atomic write, errno) to inject
    needs_no_cuda: bool = field(default=False)


def case(name, argv, expect, **kw):
    return Case(name, tuple(argv.split()), expect, **kw)


ENOSPC, EACCES, EROFS = errno.ENOSPC, errno.EACCES, errno.EROFS
BUNDLE_ARGS = "train --train {ws}/train.npz --dev {ws}/dev.npz"
CKPT = "--checkpoint {ws}/run/best.pt"

CASES = [
    # ----------------------------------------------------------------- general
    case("no-command", "", r"required: COMMAND"),
    case("unknown-command", "frobnicate", r"invalid choice: 'frobnicate'"),
    # ---------------------------------------------------------------- synthetic
    case("synthetic-out-is-file", "synthetic {ws}/afile", r"afile exists and is not a folder"),
    case("synthetic-exists", "synthetic {ws}/data", r"refusing to overwrite .*train\.npz.*--force"),
    case("synthetic-zero-captions", "synthetic {ws}/new --captions-per-image 0", r"--captions-per-image"),
    case("synthetic-negative-images", "synthetic {ws}/new --train-images -5", r"--train-images"),
    case("synthetic-not-a-number", "synthetic {ws}/new --seed x", r"--seed: invalid int value: 'x'"),
    case("synthetic-disk-full", "synthetic {ws}/new --train-images 5 --dev-images 5 --test-images 5",
         r"cannot write .*No space left on device", fault=("fsync", ENOSPC)),
    case("synthetic-read-only", "synthetic {ws}/new", r"Read-only file system", fault=("mkstemp", EROFS)),
    case("synthetic-parent-is-file", "synthetic {ws}/afile/sub", r"afile is a file, not a folder"),
    # ---------------------------------------------------------------- neighbors
    case("neighbors-missing-input", "neighbors {ws}/nope.npz --k 5 --out {ws}/l.npz", r"not found: .*nope\.npz"),
    case("neighbors-k-zero", "neighbors {ws}/emb.npz --k 0 --out {ws}/l.npz", r"--k: must be positive"),
    case("neighbors-out-not-npz", "neighbors {ws}/emb.npz --k 5 --out {ws}/l.txt", r"--out: expected a \.npz"),
    case("neighbors-out-exists", "neighbors {ws}/emb.npz --k 5 --out {ws}/exists.npz", r"exists; pass --force"),
    case("neighbors-truncated", "neighbors {ws}/broken-truncated.npz --k 5 --out {ws}/l.npz", r"damaged or truncated"),
    case("neighbors-text", "neighbors {ws}/text.npz --k 5 --out {ws}/l.npz", r"not a \.npz"),
    case("neighbors-bad-device", "neighbors {ws}/emb.npz --k 5 --out {ws}/l.npz --device banana",
         r"device: unknown device 'banana'"),
    case("neighbors-faiss-on-bundle", "neighbors {ws}/test.npz --k 5 --out {ws}/l.npz --backend faiss",
         r"--backend faiss: searches embeddings"),
    case("neighbors-bad-backend", "neighbors {ws}/emb.npz --out {ws}/l.npz --backend magic", r"--backend: invalid choice"),
    case("neighbors-disk-full", "neighbors {ws}/emb.npz --k 5 --out {ws}/l.npz",
         r"cannot write .*l\.npz: No space left on device", fault=("fsync", ENOSPC)),
    case("neighbors-no-permission", "neighbors {ws}/emb.npz --k 5 --out {ws}/l.npz", r"Permission denied",
         fault=("mkstemp", EACCES)),
    case("neighbors-missing-out", "neighbors {ws}/emb.npz --k 5", r"required: --out"),
    # -------------------------------------------------------------------- train
    case("train-missing-train", "train --train {ws}/nope.npz --dev {ws}/dev.npz --out {ws}/r1", r"not found: .*nope\.npz"),
    case("train-broken-dev", "train --train {ws}/train.npz --dev {ws}/broken-bad_crc.npz --out {ws}/r1",
         r"broken-bad_crc\.npz.*damaged"),
    case("train-embeddings", "train --train {ws}/emb.npz --dev {ws}/dev.npz --out {ws}/r1",
         r"holds embeddings, not similarities.*pillargraph neighbors"),
    case("train-bad-device", BUNDLE_ARGS + " --out {ws}/r1 --device banana", r"device: unknown device 'banana'"),
    case("train-cuda-on-cpu", BUNDLE_ARGS + " --out {ws}/r1 --device cuda", r"device: 'cuda' asked for",
         needs_no_cuda=True),
    case("train-out-is-file", BUNDLE_ARGS + " --out {ws}/afile", r"afile"),
    case("train-existing-run", BUNDLE_ARGS + " --out {ws}/run " + " ".join(SMALL), r"already holds a run"),
    case("train-zero-epochs", BUNDLE_ARGS + " --out {ws}/r1 --epochs 0", r"epochs"),
    case("train-negative-lr", BUNDLE_ARGS + " --out {ws}/r1 --lr -1", r"lr"),
    case("train-zero-batch", BUNDLE_ARGS + " --out {ws}/r1 --batch-size 0", r"batch_size|batch-size"),
    case("train-zero-hidden", BUNDLE_ARGS + " --out {ws}/r1 --hidden 0", r"hidden"),
    case("train-bad-layer", BUNDLE_ARGS + " --out {ws}/r1 --layer nonsense", r"nonsense"),
    case("train-bad-fusion-output", BUNDLE_ARGS + " --out {ws}/r1 --fusion-outputs fused,rows",
         r"fusion_outputs: unknown output mode\(s\) \['rows'\]"),
    case("train-unwritable-run", BUNDLE_ARGS + " --out {ws}/r1", r"r1.*Read-only file system",
         fault=("mkstemp", EROFS)),
    case("train-train-is-folder", "train --train {ws}/data --dev {ws}/dev.npz --out {ws}/r1", r"is a folder"),
    # ------------------------------------------------------------------- rerank
    case("rerank-missing-checkpoint", "rerank --checkpoint {ws}/nope.pt {ws}/test.npz --out {ws}/o.npz",
         r"checkpoint not found"),
    case("rerank-junk-checkpoint", "rerank --checkpoint {ws}/junk.pt {ws}/test.npz --out {ws}/o.npz",
         r"not a readable checkpoint"),
    case("rerank-no-builder-config", "rerank --checkpoint {ws}/nobuilder.pt {ws}/test.npz --out {ws}/o.npz",
         r"'builder_config' is missing"),
    case("rerank-wrong-shape", "rerank --checkpoint {ws}/badshape.pt {ws}/test.npz --out {ws}/o.npz",
         r"weights do not fit the model .* has shape"),
    case("rerank-bad-device", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz --device banana",
         r"device: unknown device 'banana'"),
    case("rerank-fusion-words", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz --fusion-weight abc",
         r"--fusion-weight: expected W or W_I2T,W_T2I"),
    case("rerank-fusion-three", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz --fusion-weight 1,2,3",
         r"--fusion-weight: expected W or W_I2T,W_T2I"),
    case("rerank-out-exists", "rerank " + CKPT + " {ws}/test.npz --out {ws}/exists.npz", r"exists; pass --force"),
    case("rerank-out-not-npz", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.csv", r"--out: expected a \.npz"),
    case("rerank-broken-bundle", "rerank " + CKPT + " {ws}/broken-empty.npz --out {ws}/o.npz", r"is empty"),
    case("rerank-embeddings", "rerank " + CKPT + " {ws}/emb.npz --out {ws}/o.npz", r"holds embeddings"),
    case("rerank-disk-full", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz",
         r"cannot write .*o\.npz: No space left on device", fault=("fsync", ENOSPC)),
    case("rerank-replace-fails", "rerank " + CKPT + " {ws}/test.npz --out {ws}/exists.npz --force",
         r"cannot write .*exists\.npz: Permission denied", fault=("replace", EACCES)),
    case("rerank-bad-output", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz --output sideways",
         r"--output: invalid choice"),
    # ----------------------------------------------------------------- evaluate
    *[case(f"evaluate-{kind}", f"evaluate {{ws}}/broken-{kind}.npz", rf"broken-{kind}\.npz")
      for kind in BROKEN_NPZ],
    case("evaluate-pickle-named", "evaluate {ws}/broken-pickled_member.npz", r"pickled Python objects"),
    case("evaluate-text-named", "evaluate {ws}/text.npz", r"not a \.npz"),
    case("evaluate-missing", "evaluate {ws}/nope.npz", r"not found: .*nope\.npz"),
    case("evaluate-folder", "evaluate {ws}/data", r"is a folder"),
    case("evaluate-unknown-keys", "evaluate {ws}/unknown-keys.npz", r"unknown key"),
    case("evaluate-folds-negative", "evaluate {ws}/test.npz --folds -1", r"--folds: expected a positive"),
    case("evaluate-folds-zero", "evaluate {ws}/test.npz --folds 0", r"--folds: expected a positive"),
    case("evaluate-folds-too-many", "evaluate {ws}/test.npz --folds 41", r"--folds: expected 1\.\.20"),
    case("evaluate-folds-on-lists", "evaluate {ws}/lists.npz --folds 5", r"--folds: .*needs a dense bundle"),
    case("evaluate-folds-words", "evaluate {ws}/test.npz --folds five", r"--folds: invalid int value"),
    # ----------------------------------------------------------------- baseline
    case("baseline-unknown-method", "baseline magic {ws}/test.npz --out {ws}/b.npz", r"unknown method 'magic'"),
    case("baseline-param-no-equals", "baseline krnn {ws}/test.npz --out {ws}/b.npz --param k1", r"--param"),
    case("baseline-param-unknown", "baseline krnn {ws}/test.npz --out {ws}/b.npz --param k9=1", r"k9"),
    case("baseline-param-not-number", "baseline krnn {ws}/test.npz --out {ws}/b.npz --param k1_i2t=abc", r"k1_i2t"),
    case("baseline-needs-bank", "baseline nnn {ws}/test.npz --out {ws}/b.npz", r"nnn needs a query bank"),
    case("baseline-broken-bank", "baseline nnn {ws}/test.npz --out {ws}/b.npz --bank {ws}/broken-truncated.npz",
         r"broken-truncated\.npz.*damaged"),
    case("baseline-out-exists", "baseline krnn {ws}/test.npz --out {ws}/exists.npz --direction i2t",
         r"output exists: .*exists\.npz"),
    case("baseline-dense-only-on-lists", "baseline qb_norm {ws}/lists.npz --out {ws}/b.npz --bank {ws}/bank.npz",
         r"qb_norm needs a dense bundle"),
    case("baseline-bad-device", "baseline krnn {ws}/test.npz --out {ws}/b.npz --device banana",
         r"device: unknown device 'banana'"),
    case("baseline-chunk-zero", "baseline krnn {ws}/test.npz --out {ws}/b.npz --chunk-size 0", r"chunk_size"),
    case("baseline-overflow", "baseline alpha_qe {ws}/huge.npz --out {ws}/b.npz",
         r"alpha_qe \(i2t\): the re-scored matrix is not finite.*cosine"),
    case("baseline-disk-full", "baseline krnn {ws}/test.npz --out {ws}/b.npz",
         r"cannot write .*b\.i2t\.npz: No space left on device", fault=("fsync", ENOSPC)),
    case("baseline-missing-intra", "baseline alpha_qe {ws}/nointra.npz --out {ws}/b.npz", r"needs the intra-modal"),
    # --------------------------------------------------------------------- demo
    case("demo-out-is-file", "demo --out {ws}/afile " + " ".join(TINY_DEMO), r"afile"),
    case("demo-zero-images", "demo --test-images 0", r"--test-images: expected at least 2"),
    case("demo-bad-device", "demo --device banana " + " ".join(TINY_DEMO), r"device: unknown device 'banana'"),
    case("demo-results-unwritable", "demo --results {ws}/afile/x.json " + " ".join(TINY_DEMO),
         r"afile is a file, not a folder"),
    case("demo-read-only-out", "demo --out {ws}/d1 " + " ".join(TINY_DEMO), r"d1.*Read-only file system",
         fault=("mkstemp", EROFS)),
    # ------------------------------------------------ issue 20: hardening, round 3
    # 1: a checkpoint without dev-selected fusion weights never re-ranks at an assumed weight
    case("rerank-no-fusion-no-dev", "rerank --checkpoint {ws}/nofusion.pt {ws}/test.npz --out {ws}/o.npz",
         r"--checkpoint .*nofusion\.pt: holds no dev-selected fusion weights.*--dev DEV\.npz.*--fusion-weight"),
    case("rerank-no-fusion-dev-gone", "rerank --checkpoint {ws}/devgone.pt {ws}/test.npz --out {ws}/o.npz",
         r"devgone\.pt: holds no dev-selected fusion weights .*, and the run's dev split .*gone\.npz is gone.*--dev"),
    case("rerank-dev-and-fusion-weight", "rerank " + CKPT + " {ws}/test.npz --out {ws}/o.npz --dev {ws}/dev.npz "
         "--fusion-weight 0.5", r"--dev: .*--fusion-weight gives them; pass one"),
    # 2: weights chosen for one output mode are not used for another
    case("rerank-output-without-its-weights", "rerank --checkpoint {ws}/oldfusion.pt {ws}/test.npz --out {ws}/o.npz "
         "--output i2t", r"oldfusion\.pt: holds dev-selected fusion weights for the fused output only, not for "
                         r"--output i2t.*--dev"),
    # 3: resume refuses any changed graph, model or training setting, naming it
    case("train-resume-other-k-t2i", BUNDLE_ARGS + " --out {ws}/run --resume " + small(k_t2i=5),
         r"--k-t2i: 4 in the run in .*run, 5 now; resume with the same settings or choose another --out"),
    case("train-resume-other-hidden", BUNDLE_ARGS + " --out {ws}/run --resume " + small(hidden=32),
         r"--hidden: 16 in the run in .*run, 32 now"),
    case("train-resume-other-node-features", BUNDLE_ARGS + " --out {ws}/run --resume --node-features rank,reciprocal "
         + small(), r"--node-features: \[\"rank\", .*\] in the run in .*run, \[\"rank\", \"reciprocal\"\] now"),
    case("train-resume-other-lr", BUNDLE_ARGS + " --out {ws}/run --resume --lr 0.01 " + small(),
         r"--lr: 0\.001 in the run in .*run, 0\.01 now"),
    # 4: every shard checks the whole input, even a shard that holds no rows (shard 1 of a one-block split)
    *[case(f"neighbors-shard-{name}", f"neighbors {{ws}}/emb-{name}.npz --k 5 --out {{ws}}/l.npz --shard 1/3", expect)
      for name, expect in (("long-txt2img", r"emb-long-txt2img\.npz: txt2img: expected shape \(100,\)"),
                           ("nan", r"emb-nan\.npz: img_emb: contains 1 non-finite value"),
                           ("out-of-range", r"emb-out-of-range\.npz: txt2img: values must lie in \[0, 20\)"))],
    case("neighbors-long-txt2img", "neighbors {ws}/emb-long-txt2img.npz --k 5 --out {ws}/l.npz",
         r"emb-long-txt2img\.npz: txt2img: expected shape \(100,\)"),
    # 5: non-finite or negative learning rates, loss weights, margins and temperatures, at parse time
    *[case(f"train-{flag}-{value}", BUNDLE_ARGS + f" --out {{ws}}/r1 --{flag} {value}",
           rf"argument --{flag}: must be a (positive|non-negative), finite number, got {value}")
      for flag, value in (("tau", "inf"), ("align-tau", "nan"), ("lr", "inf"), ("contrastive", "nan"),
                          ("triplet", "-1.0"), ("margin", "-0.5"), ("hinge-margin", "-2.0"), ("alignment", "inf"))],
    case("demo-lr-nan", "demo --lr nan", r"argument --lr: must be a positive, finite number"),
    case("rerank-nan-weights", "rerank --checkpoint {ws}/nan.pt {ws}/test.npz --out {ws}/o.npz --fusion-weight 1",
         r"nan\.pt: its weights hold NaN or infinite values"),
    # 6: an output that is one of the inputs, also through a link; demo --results follows --force
    case("rerank-out-is-bundle", "rerank " + CKPT + " {ws}/test.npz --out {ws}/test.npz --force",
         r"--out .*test\.npz: is the same file as the input bundle .*test\.npz"),
    case("rerank-out-links-to-bundle", "rerank " + CKPT + " {ws}/test.npz --out {ws}/link-to-test.npz --force",
         r"--out .*link-to-test\.npz: is the same file as the input bundle"),
    case("rerank-out-is-dev", "rerank " + CKPT + " {ws}/test.npz --dev {ws}/dev.npz --out {ws}/dev.npz --force",
         r"is the same file as the input --dev"),
    case("merge-out-is-part", "merge {ws}/part-1.npz {ws}/part-2.npz --out {ws}/part-1.npz --force",
         r"--out .*part-1\.npz: is the same file as the input part"),
    case("merge-out-is-split", "merge {ws}/part-1.npz {ws}/part-2.npz --out {ws}/test.npz --force",
         r"--out .*test\.npz: is the same file as the input split recorded in the parts"),
    case("neighbors-out-is-input", "neighbors {ws}/emb.npz --k 5 --out {ws}/emb.npz --force",
         r"--out .*emb\.npz: is the same file as the input .*emb\.npz"),
    case("baseline-out-is-input", "baseline krnn {ws}/test.npz --out {ws}/link-to-test.npz --direction i2t --force",
         r"--out .*link-to-test\.npz: is the same file as the input bundle"),
    case("baseline-lists-out-is-input", "baseline krnn {ws}/lists.npz --out {ws}/lists.npz --force",
         r"--out .*lists\.npz: is the same file as the input bundle"),
    case("demo-results-exists", "demo --results {ws}/results.json " + " ".join(TINY_DEMO),
         r"--results .*results\.json exists; pass --force to replace it"),
    # 8: the same prior twice, however it is spelt
    case("train-prior-twice", BUNDLE_ARGS + " --out {ws}/r1 --node-features prior:dual_softmax,prior:dual_softmax() "
         + small(), r"'prior:dual_softmax\(\)' repeats 'prior:dual_softmax'"),
    case("train-prior-alias-twice", BUNDLE_ARGS + " --out {ws}/r1 --node-features prior:dsl,prior:dual_softmax "
         + small(), r"'prior:dual_softmax' repeats 'prior:dsl'"),
    # 10: a tampered re-ranking part is named
    case("merge-tampered-part", "merge {ws}/part-1.npz {ws}/part-2-cut.npz --out {ws}/m.npz",
         r"part-2-cut\.npz: .*i2t_learned: expected shape"),
    case("merge-tampered-ids", "merge {ws}/part-1.npz {ws}/part-2-ids.npz --out {ws}/m.npz",
         r"part-2-ids\.npz: .*t2i_node_index: node ids out of range"),
    # 11: checked before the work starts, naming the flag, the file and what the user set
    case("train-dev-lists-too-shallow", BUNDLE_ARGS.replace("{ws}/dev.npz", "{ws}/dev-lists9.npz") + " --out {ws}/r1 "
         + small(), r"--dev .*dev-lists9\.npz: lists: of depth 9 \(i2t\) and 9 \(t2i\) .*R@10 needs depth 11"),
    case("train-reciprocal-lists-too-shallow", BUNDLE_ARGS.replace("{ws}/train.npz", "{ws}/train-lists9.npz")
         + " --out {ws}/r1 --node-features reciprocal " + small(),
         r"--train .*train-lists9\.npz: t2i lists: 9 deep, but node_features 'reciprocal' .* read whole \(40 items\)"),
    case("train-prior-bad-parameter", BUNDLE_ARGS + " --out {ws}/r1 --node-features prior:dual_softmax(temp=1) "
         + small(), r"prior 'prior:dual_softmax\(temp=1\)': dual_softmax: bad parameters \['temp'\]"),
    case("train-fusion-outputs-empty", BUNDLE_ARGS + " --out {ws}/r1 --fusion-outputs , " + small(),
         r"fusion_outputs: empty; name one or more output modes"),
    case("rerank-out-existing-not-npz", "rerank " + CKPT + " {ws}/test.npz --out {ws}/exists.txt",
         r"--out: expected a \.npz file name, got 'exists\.txt'"),
    case("train-bad-setting-new-folder", BUNDLE_ARGS + " --out {ws}/new-run/run --node-features colour " + small(),
         r"unknown group\(s\) \['colour'\]"),
    case("demo-fails-in-training", "demo " + " ".join(TINY_DEMO).replace("--train-images 30", "--train-images 2"),
         r"num_pillars: 8 pillars asked for"),
    case("rerank-bad-bundle-new-folder", "rerank " + CKPT + " {ws}/text.npz --out {ws}/new-rerank/o.npz", r"not a \.npz"),
    # 12: {shard} in --out needs --shard
    case("rerank-shard-placeholder-without-shard", "rerank " + CKPT + " {ws}/test.npz --out {ws}/x-{{shard}}.npz",
         r"--out .*x-\{shard\}\.npz: \{shard\} is filled in with the shard number, which needs --shard"),
]


def _write_workspace(ws):
    train, dev, test = synthetic_splits(40, 20, 20, seed=1)
    for name, b in (("train", train), ("dev", dev), ("test", test), ("exists", test)):
        b.save(ws / f"{name}.npz")
    (ws / "data").mkdir()
    for name, b in (("train", train), ("dev", dev), ("test", test)):
        b.save(ws / "data" / f"{name}.npz")
    NeighborLists.from_bundle(test, 10).save(ws / "lists.npz")
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(20, 8, generator=g), torch.randn(100, 8, generator=g)
    np.savez(ws / "emb.npz", img_emb=img.numpy(), txt_emb=txt.numpy(),
             txt2img=np.arange(20).repeat(5))
    QueryBank(bank_i2t=torch.randn(30, 100, generator=g), bank_t2i=torch.randn(30, 20, generator=g)).save(
        ws / "bank.npz")
    test.replace(sim_i2t=test.sim_i2t * 1e30, sim_i2i=test.sim_i2i * 1e30,
                 sim_t2t=test.sim_t2t * 1e30).save(ws / "huge.npz")
    test.replace(sim_i2i=None, sim_t2t=None).save(ws / "nointra.npz")
    np.savez(ws / "unknown-keys.npz", sim_i2t=test.sim_i2t.numpy(), txt2img=test.txt2img.numpy(),
             colour=np.zeros(3))
    for kind in BROKEN_NPZ:
        make_broken(kind, ws / f"broken-{kind}.npz")
    (ws / "good.npz").unlink(missing_ok=True)  # written by make_broken('truncated')
    (ws / "text.npz").write_text("sim_i2t,txt2img\n0.1,0\n")
    (ws / "afile").write_text("a plain file where a folder is expected\n")
    (ws / "junk.pt").write_bytes(b"not a checkpoint")
    _write_round3_inputs(ws, train, dev, test, img, txt)


def _write_round3_inputs(ws, train, dev, test, img, txt):
    """Inputs of the issue-20 cases: a link to an input, bad embeddings, shallow lists, a results file."""
    (ws / "link-to-test.npz").symlink_to(ws / "test.npz")
    (ws / "exists.txt").write_text("not a .npz\n")
    (ws / "results.json").write_text("{}\n")
    (ws / "tmp").mkdir()  # tempfile's folder during the cases
    bad = img.clone()
    bad[3, 2] = float("nan")
    for name, (i, t2i) in {"long-txt2img": (img, np.arange(20).repeat(6)), "nan": (img, np.arange(20).repeat(5)),
                           "out-of-range": (img, np.arange(20).repeat(5) + 1)}.items():
        np.savez(ws / f"emb-{name}.npz", img_emb=(bad if name == "nan" else i).numpy(), txt_emb=txt.numpy(),
                 txt2img=t2i)
    NeighborLists.from_bundle(dev, 9).save(ws / "dev-lists9.npz")
    NeighborLists.from_bundle(train, 9).save(ws / "train-lists9.npz")


def _write_checkpoints(ws):
    assert main(["train", "--train", str(ws / "train.npz"), "--dev", str(ws / "dev.npz"),
                 "--out", str(ws / "run"), *SMALL]) == 0
    state = torch.load(ws / "run" / "best.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "builder_config"}, ws / "nobuilder.pt")
    info = {k: v for k, v in state["run_info"].items() if k != "dev_split"}
    no_dev = {**state, "run_info": info}  # as checkpoints written before runs recorded their dev split
    torch.save({**no_dev, "fusion": None}, ws / "nofusion.pt")
    torch.save({**state, "fusion": None, "run_info": dict(info, dev_split=str(ws / "gone.npz"))}, ws / "devgone.pt")
    old = {k: v for k, v in state["fusion"].items() if k != "per_output"}
    torch.save({**no_dev, "fusion": dict(old, output="fused")}, ws / "oldfusion.pt")
    name = next(iter(state["model"]))
    torch.save({**state, "model": {**state["model"], name: state["model"][name] * float("nan")}}, ws / "nan.pt")
    state["model"][name] = torch.zeros(3, 1)
    torch.save(state, ws / "badshape.pt")
    _write_parts(ws)


def _write_parts(ws):
    """The two parts of a sharded rerank of test.npz, and two tampered copies of the second."""
    for i in (1, 2):
        assert main(["rerank", "--checkpoint", str(ws / "run" / "best.pt"), str(ws / "test.npz"), "--batch-size",
                     "8", "--shard", f"{i}/2", "--out", str(ws / f"part-{i}.npz")]) == 0
    with np.load(ws / "part-2.npz") as part:
        arrays = dict(part)
    np.savez(ws / "part-2-cut.npz", **dict(arrays, i2t_learned=arrays["i2t_learned"][:, :5]))
    np.savez(ws / "part-2-ids.npz", **dict(arrays, t2i_node_index=arrays["t2i_node_index"] + 1000))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    _write_workspace(root)
    _write_checkpoints(root)
    return root


def snapshot(root):
    """Every file under ``root`` and a hash of its bytes, and every folder (an empty one left behind counts)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line_and_loses_nothing(c, ws, capsys, monkeypatch):
    if c.needs_no_cuda and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    before = snapshot(ws)
    capsys.readouterr()
    monkeypatch.setattr(tempfile, "tempdir", str(ws / "tmp"))  # temporary folders left behind show too
    if c.fault:
        fail_with(monkeypatch, *c.fault)
    argv = [a.format(ws=ws) for a in c.argv]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status not in (0, None), f"exit status {status}; stderr {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert re.search(r"\berror\b", lines[0]), lines[0]
    assert re.search(c.expect, lines[0]), f"{lines[0]!r} does not match {c.expect!r}"
    assert snapshot(ws) == before, "files were changed, added or removed"


def test_catalogue_size():
    """The closing notes of issues 11 and 20 quote this count."""
    assert len(CASES) >= 130


def test_closed_output_pipe_is_quiet(ws):
    """``pillargraph evaluate x.npz | head -2``: the reader goes away; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pillargraph", "evaluate", str(ws / "test.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the command writes anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err.decode()  # like a process ended by SIGPIPE
    assert err.decode().strip() == ""


def test_krnn_on_huge_scores_through_the_cli(ws, capsys):
    """Scores x 1e30 used to come back as all ties (R@1 0.0); now the same figures as unscaled."""
    for name in ("test", "huge"):
        assert main(["baseline", "krnn", str(ws / f"{name}.npz"), "--out", str(ws / f"k-{name}.npz"),
                     "--direction", "i2t", "--param", "k1_i2t=5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("i2t krnn")]
    assert len(rows) == 2 and rows[0] == rows[1], out
