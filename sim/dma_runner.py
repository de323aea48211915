"""A thin wrapper around :func:`mxe.sim.runner.run_bench` for the DMA and buffer benches.

``run_bench`` skips ``runner.build()`` when a build directory is already built, but cocotb's
runner only learns its sources' language in ``build()``: ``runner.test()`` then fails with
``AttributeError: ... '_vhdl_sources'`` in every later pytest session. Until ``sim/runner.py`` is
fixed (reported to its owner), this wrapper gives such a runner the source list ``build()``
would have recorded. Once the runner is fixed the patch does nothing.
"""

from pathlib import Path

from mxe.sim import runner as _runner


__all__ = ["run_bench"]

_original_build = _runner._build


def _build(sim, name, make_component, config, build_dir, waves):
    result = _original_build(sim, name, make_component, config, build_dir, waves)
    if not hasattr(result, "_verilog_sources"):
        result._sources = []
        result._vhdl_sources = []
        result._verilog_sources = [str(Path(build_dir) / f"{name}.v")]
    return result


def run_bench(**kwargs):
    """:func:`mxe.sim.runner.run_bench` with the rebuild-skip fix applied."""
    if _runner._build is not _build:
        _runner._build = _build
    return _runner.run_bench(**kwargs)
