"""Plain helpers shared by the joint-graph reference implementations."""
import numpy as np


def joint_matrix(sim, sqq, sgg):
    sim, sqq, sgg = np.asarray(sim), np.asarray(sqq), np.asarray(sgg)
    return np.block([[sqq, sim], [sim.T, sgg]])


def ranked_list(j, i):
    """Item i first, then the others by decreasing similarity."""
    others = sorted((x for x in range(j.shape[0]) if x != i), key=lambda x: -j[i, x])
    return [i] + others


def fill_unreached_row(scores, reached, base):
    lo = min((scores[g] for g in range(len(scores)) if reached[g]), default=0.0)
    span = max(base.max() - base.min(), np.finfo(float).tiny)
    return np.array([scores[g] if reached[g] else lo - 1 - (base.max() - base[g]) / span
                     for g in range(len(scores))])
