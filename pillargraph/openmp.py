"""How the OpenMP threads of torch's CPU kernels wait: passively, unless the user says otherwise.

Every CPU op above a few thousand elements runs as an OpenMP parallel region;
a training step of the default model runs about a thousand of them. By
default GNU OpenMP (the runtime of the Linux torch wheels) lets a thread that
finishes a region spin for a while before it sleeps. On a machine whose cores
are also busy with other processes (a shared workstation, a CI runner) the
spinning thread holds a core that its partner thread needs, and every region
waits for the scheduler: on 2 shared cores a default training step took 6x as
long with 2 threads as with 1 (``benchmarks/results/train_speed_cpu.txt``).
With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once.

:func:`prefer_passive_wait` sets that policy when ``import pillargraph`` runs
before torch is loaded (as in ``pillargraph`` and ``python -m pillargraph``);
GNU OpenMP reads it once, when torch loads it. A policy the user set
(``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is left alone: ``OMP_WAIT_POLICY=ACTIVE``
restores the spinning default, which can be faster on cores that nothing else uses.
"""
from __future__ import annotations

import os
import sys

__all__ = ["prefer_passive_wait", "WAIT_VARIABLES"]

#: Environment variables that choose how GNU OpenMP threads wait.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless a wait policy is set or torch is already loaded.

    Returns:
        Whether the variable was set here.
    """
    if "torch" in sys.modules or any(v in os.environ for v in WAIT_VARIABLES):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
