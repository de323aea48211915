"""Analytical cycle model of MXE.

Numbers a user compares measurements with: the lower bound of a GEMM on the array, the naive
weight-stationary schedule that simulators such as SCALE-Sim assume, and the exact cycles of
the systolic array for a sequence of tiles fed as fast as its ports accept them.
"""

from math import ceil

from mxe.hw.array import array_latency


__all__ = ["lower_bound", "naive_cycles", "array_tile_cycles", "gemm_tiles"]


def lower_bound(m, k, n, config):
    """Cycles to do ``m * k * n`` MACs with every MAC of the array busy every cycle."""
    return ceil(m * k * n / config.macs)


def naive_cycles(m, k, n, config):
    """Load weights, stream, drain, repeat: ``ceil(K/R)·ceil(N/C)·(M + 2R + C − 2)``."""
    r, c = config.rows, config.cols
    return ceil(k / r) * ceil(n / c) * (m + 2 * r + c - 2)


def gemm_tiles(m, k, n, config):
    """The tile sequence of a weight-stationary GEMM: one activation tile of ``m`` rows per
    ``rows x cols`` weight tile, ``ceil(k/rows) * ceil(n/cols)`` of them."""
    return [m] * (ceil(k / config.rows) * ceil(n / config.cols))


def array_tile_cycles(tile_rows, config):
    """Exact cycles of the array for weight tiles each followed by ``tile_rows[t]`` activations.

    Both inputs are offered every cycle; the ports accept as :class:`SystolicArray` documents:
    a weight tile takes ``rows`` cycles and may start once the activations of the tile two
    before it have all gone in; an activation tile may start in the cycle its weight tile's last
    row goes in, right after the previous activation tile. Counted from the cycle the first
    weight row goes in to the cycle the last result row comes out, both included.

    Returns
    -------
    int
    """
    if not tile_rows:
        raise ValueError("tile_rows must name at least one tile")
    if any(not isinstance(t, int) or t < 1 for t in tile_rows):
        raise ValueError(f"tile_rows must be positive integers, not {tile_rows!r}")
    rows = config.rows
    w_end = []    # cycle of the last weight row of tile t
    act_end = []  # cycle of the last activation row of tile t
    for t, m in enumerate(tile_rows):
        w_start = 0 if t == 0 else w_end[t - 1] + 1
        if t >= 2:
            w_start = max(w_start, act_end[t - 2] + 1)
        w_end.append(w_start + rows - 1)
        act_start = w_end[t] if t == 0 else max(w_end[t], act_end[t - 1] + 1)
        act_end.append(act_start + m - 1)
    return act_end[-1] + array_latency(config) + 1
