"""Shared pytest fixtures: the run's random seed and the simulator parameter.

Every random test draws from ``MXE_SEED`` (random when unset) combined with its own test ID, so
one number printed in the header reproduces any failure:
``MXE_SEED=<seed> pytest tests/test_array.py -k 4x8``.
"""

import os
import random
import zlib

import pytest

from mxe.sim.runner import SIMULATORS, simulator_missing

BASE_SEED = int(os.environ.get("MXE_SEED") or random.SystemRandom().randrange(1 << 31))


def pytest_report_header(config):
    return f"MXE_SEED={BASE_SEED} (set it to reproduce this run's random tests)"


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


@pytest.fixture(scope="module", params=["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
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
