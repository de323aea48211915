"""ONNX's backend node tests of the quantized linear operators on the engine RTL.

The cases are ONNX's own (``onnx.backend.test``, built in memory by the installed onnx): every
test of QLinearMatMul, QLinearConv, MatMulInteger and ConvInteger, run through the backend shim
(:class:`mxe.sim.importer.backend.MXEBackend`) with the operator on the engine RTL, and held to
ONNX's expected outputs bit for bit (type and every value; the backend test runner itself only
asks for closeness). All of them share one simulator process, on the same ``tiny`` build as the
engine benches (Verilator; Icarus behind ``slow``).
"""

import importlib
import warnings

import numpy as np
import pytest


#: The operators, and the modules of onnx.backend.test.case.node holding their cases.
OPERATORS = {"QLinearMatMul": "qlinearmatmul", "QLinearConv": "qlinearconv",
             "MatMulInteger": "matmulinteger", "ConvInteger": "convinteger"}


def _node_cases():
    """ONNX's node test cases of :data:`OPERATORS` (importing only their modules: collecting
    every node test takes ten seconds)."""
    import onnx.backend.test.case.node as node_cases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in OPERATORS.values():
            importlib.import_module(f"onnx.backend.test.case.node.{module}")
    return {case.name: case for case in node_cases._NodeTestCases
            if case.model.graph.node[0].op_type in OPERATORS}


CASES = _node_cases()


def test_every_operator_has_cases():
    """The onnx release has node tests of all four operators (12 in onnx 1.23)."""
    ops = {case.model.graph.node[0].op_type for case in CASES.values()}
    assert ops == set(OPERATORS), ops
    assert len(CASES) >= 12, sorted(CASES)


def test_int8_expectations_saturate():
    """The int8 QLinearMatMul expectations of this onnx release saturate (older releases had
    them wrap): the exact value of some output lies below -128 and the expectation says -128,
    not the wrapped value."""
    import onnx
    checked = 0
    for name, case in CASES.items():
        if not name.startswith("test_qlinearmatmul") or "_int8_" not in name:
            continue
        (a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero), (want,) = \
            case.data_sets[0]
        acc = np.matmul(a.astype(np.int64) - a_zero.astype(np.int64),
                        b.astype(np.int64) - b_zero.astype(np.int64))
        exact = np.rint(acc * (a_scale * b_scale / y_scale).astype(np.float64) + y_zero)
        outside = (exact < -128) | (exact > 127)
        assert outside.any(), f"{name}: no value outside int8, nothing to saturate"
        assert np.array_equal(want[outside], np.clip(exact[outside], -128, 127)), \
            f"{name} (onnx {onnx.__version__}): the expectations wrap instead of saturating"
        checked += 1
    assert checked == 4




@pytest.mark.parametrize("name", sorted(CASES))
def test_node(onnx_engine, name):
    """One ONNX node test on the engine RTL: the operator ran on the engine (not on the host)
    and its outputs equal ONNX's expectations exactly."""
    from mxe.sim.importer.backend import MXEBackend
    case = CASES[name]
    rep = MXEBackend.prepare(case.model, engine=onnx_engine)
    for inputs, expected in case.data_sets:
        got = rep.run(inputs)
        assert [layer["where"] for layer in rep.layers] == ["engine"], rep.layers
        assert rep.layers[0]["counters"].get("CYCLES", 0) > 0, rep.layers
        assert len(got) == len(expected)
        for g, want in zip(got, expected):
            assert g.dtype == want.dtype, f"{name}: {g.dtype}, want {want.dtype}"
            assert g.shape == want.shape, f"{name}: {g.shape}, want {want.shape}"
            bad = np.argwhere(g != want)
            assert not bad.size, (f"{name}: {len(bad)} values differ, first at "
                                  f"{tuple(bad[0])}: {g[tuple(bad[0])]}, want "
                                  f"{want[tuple(bad[0])]}")
