"""Speed of one PillarReranker training step and of the vectorised triplet loss.

Run from the repository root::

    python -m benchmarks.model_speed                      # CPU, small model, batch 64
    python -m benchmarks.model_speed --device cuda --paper --batch 512 --amp

A training step scores the four lists of the paper's objective (i2t lists of
K=32 nodes, t2i lists of K=8, and both mirrored through the other network),
computes :class:`~pillargraph.losses.PillarLoss`, back-propagates and takes an
SGD step. The triplet loss is timed against a per-query Python loop (the
research prototype's) in the same run, so the ratio is machine-independent.

Time: about a minute at the defaults on CPU with 2 cores (estimated: 3 timed steps per variant at the small
size; not recorded); --paper sizes take far longer on CPU (about 28 s a step in results/train_speed_cpu.txt).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import description, mirrored, random_graph_batch, time_it
from pillargraph.testing import triplet_loss_reference
from pillargraph.losses import PillarLoss, triplet_loss
from pillargraph.nn import PillarReranker


def objective(model, loss_fn, b_i2t, b_t2i, m_i2t, m_t2i):
    """The four scored lists of a training step and their loss."""
    s_i2t, s_t2i = model(b_i2t), model(b_t2i)
    s_t2i_mirror, s_i2t_mirror = model(m_i2t, direction="t2i"), model(m_t2i, direction="i2t")
    total, _ = loss_fn(s_i2t, s_t2i, s_t2i_mirror, s_i2t_mirror, y_i2t=b_i2t.y, y_t2i=b_t2i.y,
                       mask_i2t=b_i2t.candidate_mask, mask_t2i=b_t2i.candidate_mask)
    return total


def training_step(model, loss_fn, optimizer, b_i2t, b_t2i, m_i2t, m_t2i, amp: bool, device: str,
                  forward=objective):
    ctx = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with ctx:
        total = forward(model, loss_fn, b_i2t, b_t2i, m_i2t, m_t2i)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return total


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=description(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--features", type=int, default=128, help="pillar features F = 2L")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--paper", action="store_true", help="the paper's size: hidden 768, 24 heads")
    parser.add_argument("--layer", nargs="+", default=["neighbor_attention"],
                        help="layer names to time (neighbor_attention also runs its sparse path)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--compile", action="store_true",
                        help="also time the step with networks and loss under torch.compile")
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def time_inference(b_i2t, args: argparse.Namespace, device: str) -> None:
    """Print the no-grad forward time of the default model on the i2t lists."""
    model = PillarReranker(args.features, hidden_channels=args.hidden, heads=args.heads,
                           num_layers=args.layers).to(device).eval()
    ctx = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if args.amp \
        else contextlib.nullcontext()

    def infer():
        with torch.no_grad(), ctx:
            return model(b_i2t)
    seconds = time_it(infer, repeat=args.repeat, device=device)
    pairs = args.batch * int(b_i2t.candidate_mask.sum())
    print(f"inference   i2t lists (K=32)                   {seconds * 1e3:9.2f} ms  ({pairs / seconds:,.0f} "
          f"query-candidate pairs/s)")


def time_triplet(b_i2t, args: argparse.Namespace, device: str) -> None:
    """Print the vectorised triplet loss against the per-query loop, forward + backward on [512, 32] scores."""
    scores = torch.rand(512, 32, device=device, requires_grad=True)
    y = b_i2t.y.repeat(-(-512 // args.batch), 1)[:512]
    mask = b_i2t.candidate_mask
    assert torch.allclose(triplet_loss(scores, y, mask), triplet_loss_reference(scores, y, mask), atol=1e-5)
    fast = time_it(lambda: triplet_loss(scores, y, mask).backward(), repeat=args.repeat * 4, device=device)
    slow = time_it(lambda: triplet_loss_reference(scores, y, mask).backward(), repeat=args.repeat, device=device)
    print(f"triplet loss [512, 32] fwd+bwd: vectorised {fast * 1e3:.3f} ms, per-query loop {slow * 1e3:.1f} ms, "
          f"ratio {slow / fast:.0f}x")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.paper:
        args.hidden, args.heads = 768, 24
    device = args.device
    torch.manual_seed(0)
    b_i2t = random_graph_batch("i2t", args.batch, 32, args.features, device=device, seed=1)
    b_t2i = random_graph_batch("t2i", args.batch, 8, args.features, device=device, seed=2)
    m_i2t, m_t2i = mirrored(b_i2t), mirrored(b_t2i)
    print(f"device={device} batch={args.batch} F={args.features} hidden={args.hidden} heads={args.heads} "
          f"layers={args.layers} amp={args.amp} threads={torch.get_num_threads()}")

    variants = []
    for layer in args.layer:
        variants.append((layer, dict(layer=layer)))
        if layer == "neighbor_attention":
            variants.append(("neighbor_attention (sparse path)", dict(layer=layer, dense=False)))
    if args.compile:
        variants.append(("neighbor_attention (compiled)", dict(layer="neighbor_attention", compile=True)))
    loss_fn = PillarLoss()
    for name, kw in variants:
        compile_ = kw.pop("compile", False)
        model = PillarReranker(args.features, hidden_channels=args.hidden, heads=args.heads,
                               num_layers=args.layers, **kw).to(device)
        forward = torch.compile(objective) if compile_ else objective  # both networks and the loss
        optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        seconds = time_it(lambda: training_step(model, loss_fn, optimizer, b_i2t, b_t2i, m_i2t, m_t2i,
                                                args.amp, device, forward),
                          repeat=args.repeat * (2 if compile_ else 1), warmup=3 if compile_ else 1, device=device)
        params = sum(p.numel() for p in model.parameters())
        print(f"train step  {name:34s} {seconds * 1e3:9.2f} ms  ({args.batch / seconds:8.0f} items/s, "
              f"{params / 1e6:.2f}M params)")

    # Inference: i2t lists of the default model, no grad.
    time_inference(b_i2t, args, device)
    # Triplet loss: vectorised vs the per-query loop, forward + backward on [512, 32] scores.
    time_triplet(b_i2t, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
