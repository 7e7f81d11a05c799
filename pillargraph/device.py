"""Choosing the torch device to compute on, with one clear error for a device that cannot be used."""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["resolve_device"]


def resolve_device(device: Union[str, torch.device, None], default: str = "cpu") -> torch.device:
    """Turn ``'cpu'``, ``'cuda'``, ``'cuda:1'``, a :class:`torch.device` or ``None`` into a usable device.

    Checked before any work starts, so that a typo or a CPU-only build is
    reported as the device's fault (not, say, as an unreadable checkpoint).

    Args:
        device: the device asked for; ``None`` means ``default``.
        default: the device used for ``None`` (default: ``'cpu'``).

    Raises:
        ValueError: an unknown device name, a device type this torch build
            lacks (e.g. ``'cuda'`` on a CPU-only build), or a device index
            beyond the devices present.
    """
    if device is None:
        device = default
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device: unknown device {device!r}; expected e.g. 'cpu', 'cuda' or "
                         f"'cuda:1'") from None
    if dev.type == "cpu" or dev.type == "meta":
        return dev
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"device: {str(dev)!r} asked for, but this torch build has no CUDA "
                             f"support (torch {torch.__version__}); use 'cpu' or install a CUDA build")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"device: {str(dev)!r} asked for, but no CUDA device is visible")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device: {str(dev)!r} asked for, but only {count} CUDA device(s) "
                             f"are visible (cuda:0 to cuda:{count - 1})")
        return dev
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as err:
        reason = " ".join(str(err).split())[:120]
        raise ValueError(f"device: {str(dev)!r} cannot be used here ({reason})") from None
    return dev
