"""Shared pytest fixtures: the run's random seed and the simulator parameter.

Every random test draws from ``MXE_SEED`` (random when unset) combined with its own test ID, so
one number printed in the header reproduces any failure:
``MXE_SEED=<seed> pytest tests/test_array.py -k 4x8``.

A test of the default suite that runs longer than :data:`DEFAULT_TIMEOUT_S` (set-up included)
is stopped by pytest-timeout with every thread's stack, so a hang fails the run with its place
instead of holding it until CI gives up; the ``slow`` tests have no such limit.
"""

import os
import random
import zlib

import pytest

from mxe.sim.runner import SIMULATORS, simulator_missing

BASE_SEED = int(os.environ.get("MXE_SEED") or random.SystemRandom().randrange(1 << 31))
#: Seconds a default-suite test may take; the longest take about three minutes on 2 busy cores.
DEFAULT_TIMEOUT_S = 1200


def pytest_report_header(config):
    return f"MXE_SEED={BASE_SEED} (set it to reproduce this run's random tests)"


#: Tests that build a Verilator model other tests share, and the longest: they run first, then
#: the tests whose ID does not name Verilator, then those that do. With ``-n`` the workers then
#: make different models side by side, and most tests that need a model find it built instead
#: of waiting for the other worker to finish it.
BUILDS_FIRST = (
    "test_conv_unit.py::test_engine_conv_descriptor[tiny]",
    "test_demo.py::test_demo_on_engine",
    "test_engine.py::test_engine_gemm[verilator-small]",
    "test_board_link.py::test_gemm_over_link",
    "test_c_driver.py::test_gemms_on_the_engine[0]",
    "test_engine.py::test_engine_discover[verilator-lean]",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S, method="thread"))
    rank = {name: i for i, name in enumerate(BUILDS_FIRST)}

    def order(item):
        name = item.nodeid.split("/")[-1]
        return rank.get(name, len(rank) + ("verilator" in name))
    items.sort(key=order)           # stable: the others keep their order


@pytest.fixture
def seed(request):
    """A seed for this test, derived from MXE_SEED and the test ID, and printed."""
    value = (BASE_SEED ^ zlib.crc32(request.node.nodeid.encode())) & 0x7FFF_FFFF
    print(f"seed {value} (MXE_SEED={BASE_SEED})")
    return value


@pytest.fixture(params=SIMULATORS)
def sim(request):
    """Each simulator; Icarus is skipped only where it is not installed."""
    missing = simulator_missing(request.param)
    if missing:
        pytest.skip(missing)
    return request.param


@pytest.fixture(scope="module",
                params=["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def onnx_engine(request):
    """One simulator process of the ``tiny`` engine for a module's ONNX cases
    (:class:`mxe.sim.importer.session.EngineSession`)."""
    from engine_benches import CONFIGS
    from mxe.sim.importer.session import EngineSession
    missing = simulator_missing(request.param)
    if missing:
        pytest.skip(missing)
    with EngineSession(request.param, CONFIGS["tiny"]) as session:
        yield session
