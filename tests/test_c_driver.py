"""The C headers and driver of ``mxe export c`` (docs/c-driver.md), for real.

- The exported C compiles without a warning as ``-std=c99 -Wall -Wextra -pedantic`` (and
  as C++), and so do the examples of docs/c-driver.md.
- Every macro of the headers holds the value of the Python table it comes from, and every
  command encoder gives the words of :mod:`mxe.sim.commands` (random fields, out-of-range values
  masked, signed fields negative).
- The driver's paths the engine cannot reach (no MXE at the address, an unknown version, a
  version 1 engine, no GEMM unit, a wait that times out in cycles or in polls) against a mock
  register file.
- The driver on the engine: ``tests/c_driver_harness.cpp`` links it into a Verilator model of
  the ``tiny`` engine with an AXI4 memory (random backpressure) and runs a job: random GEMMs
  through the GEMM descriptor (``mxe_gemm``) and as LOAD/MATMUL/STORE streams (``mxe_run``,
  encoded by the generated encoders), checked against the golden model
  (:func:`mxe.sim.model.matmul`, :func:`~mxe.sim.model.postprocess_columns`) with the memory image
  (a stray write fails) and the counters; then the refusals (bad opcode, zero dimensions, a
  window violation, a descriptor that does not fit, DECERR, SLVERR, a timeout, a full queue)
  with their error codes, ERR_CMD_INDEX and ERR_ADDR.

The Verilator build (about 45 s) is kept in ``build/c_driver/<configuration>`` and rebuilt
(incrementally) when the gateware or the C changes. Reproduce a failure with the printed seed:
``MXE_SEED=<seed> pytest tests/test_c_driver.py``.
"""

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mxe.hw
from mxe.c_export import DRIVER_DIR, DRIVER_FILES, HEADER_FILES
from mxe.cli import main
from mxe.hw.config import EngineConfig
from mxe.hw.generate import TOPS, to_verilog
from mxe.hw.isa import FIELDS, ErrorCode, Opcode
from mxe.hw.regmap import CAPABILITIES, CONFIG_REGISTERS, COUNTERS, ID_MAGIC, REGISTERS, VERSION
from mxe.sim import commands as cmds
from mxe.sim.driver import pack_operands, plan_gemm
from mxe.sim.engine_model import encode_elems
from mxe.sim.gemm_model import descriptor as descriptor_commands, expand, schedule
from mxe.sim.model import Requant, matmul, postprocess_columns
from mxe.sim.runner import VERILATOR_OPT_FAST, build_root, simulator_missing, verilator_root

CONFIG = EngineConfig.preset("tiny")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
HARNESS = Path(__file__).parent / "c_driver_harness.cpp"
MEM_BASE = 0x8000_0000
MEM_SIZE = 1 << 19


def _cc():
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    pytest.skip("no C compiler (cc) on PATH")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("c")
    assert main(["export", "c", "--preset", "tiny", "-o", str(out)]) == 0
    return out


def _compile_and_run(directory, name, source):
    (directory / f"{name}.c").write_text(source)
    exe = directory / name
    subprocess.run([_cc(), *CFLAGS, f"-I{directory}", "-o", str(exe), str(directory / f"{name}.c"),
                    str(directory / "mxe.c")], check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


# The export and the headers ----------------------------------------------------------------

def test_export_writes_the_four_files(tmp_path, capsys):
    assert main(["export", "c", "--preset", "tiny", "--rows", "8", "-o", str(tmp_path)]) == 0
    names = {Path(line).name for line in capsys.readouterr().out.split()}
    assert names == {*HEADER_FILES, *DRIVER_FILES}
    for name in DRIVER_FILES:
        assert (tmp_path / name).read_bytes() == (DRIVER_DIR / name).read_bytes()
    assert "#define MXE_CONFIG_ROWS 8u" in (tmp_path / "mxe_regs.h").read_text()


def test_export_refuses_a_bad_configuration(tmp_path, capsys):
    assert main(["export", "c", "--rows", "0", "-o", str(tmp_path)]) == 2
    assert "rows" in capsys.readouterr().err


def test_compiles_without_warnings(exported):
    """mxe.c (with every header) as C99 with -Wall -Wextra -pedantic, and as C++ where a C++
    compiler is at hand."""
    builds = [[_cc(), *CFLAGS]]
    if shutil.which("c++"):
        builds.append(["c++", "-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-pedantic",
                       "-Werror"])
    for flags in builds:
        result = subprocess.run([*flags, "-c", "-o", os.devnull, str(exported / "mxe.c")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def _sign(value, width):
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def test_header_values_and_encoders(exported, seed):
    """Every macro against its table; every encoder against mxe.sim.commands."""
    rng = np.random.default_rng(seed)
    expected, prints = {}, []

    def check(macro, value):
        expected[macro] = value
        prints.append(f'    printf("{macro} %lld\\n", (long long)({macro}));')

    check("MXE_REGMAP_VERSION", VERSION)
    check("MXE_ID_MAGIC", ID_MAGIC)
    for reg in REGISTERS:
        check(f"MXE_REG_{reg.name}", reg.offset)
        if len(reg.fields) > 1 or reg.fields[0].width < 32:
            for f in reg.fields:
                prefix = f"MXE_{reg.name}_{f.name.upper()}"
                check(f"{prefix}_SHIFT", f.lsb)
                check(f"{prefix}_WIDTH", f.width)
                check(f"{prefix}_MASK", f.mask)
    for code in ErrorCode:
        check(f"MXE_ERRCODE_{code.name}", code.value)
    for op in Opcode:
        check(f"MXE_OPCODE_{op.name}", op.value)
    for opcode, fields in FIELDS.items():
        for name, lsb, width, _signed, _doc in fields:
            check(f"MXE_CMD_{opcode}_{name.upper()}_LSB", lsb)
            check(f"MXE_CMD_{opcode}_{name.upper()}_WIDTH", width)
    for f in dataclasses.fields(EngineConfig):
        value = getattr(CONFIG, f.name)
        if not isinstance(value, str):
            check(f"MXE_CONFIG_{f.name.upper()}", int(value))
    for name in ("elem_bytes", "acc_elem_bytes", "axi_bytes", "spad_row_elems", "macs"):
        check(f"MXE_CONFIG_{name.upper()}", getattr(CONFIG, name))

    # Encoders: random values over the whole 32-bit argument, so masking and sign are tested.
    words = []
    for opcode, fields in FIELDS.items():
        args = [f for f in fields if f[0] != "opcode"]
        for _ in range(4):
            raw = [int(rng.integers(-(1 << 31), 1 << 31)) if s else int(rng.integers(0, 1 << 32))
                   if rng.random() < 0.3 else int(rng.integers(0, 1 << w))
                   for _n, _l, w, s, _d in args]
            values = {n: (_sign(v, w) if s else v & ((1 << w) - 1))
                      for (n, _l, w, s, _d), v in zip(args, raw)}
            words.append(cmds.to_words(cmds.encode(opcode, **values)))
            call = ", ".join(f"(int32_t){v}" if s else f"{v}u"
                             for (_n, _l, _w, s, _d), v in zip(args, raw))
            call = call.replace("(int32_t)-2147483648", "(int32_t)(-2147483647 - 1)")
            prints.append(f"    cmd = mxe_cmd_{opcode.lower()}({call});")
            prints.append('    printf("words %lu %lu %lu %lu\\n", (unsigned long)cmd.w[0], '
                          '(unsigned long)cmd.w[1], (unsigned long)cmd.w[2], '
                          '(unsigned long)cmd.w[3]);')
            prints.append('    printf("opcode %lu\\n", (unsigned long)mxe_cmd_opcode(&cmd));')
            words.append(Opcode[opcode].value)
    source = "\n".join(["#include <stdio.h>", '#include "mxe.h"', "",
                        "uint32_t mxe_read32(void *ctx, uint32_t offset)",
                        "{", "    (void)ctx; (void)offset;", "    return 0;", "}",
                        "void mxe_write32(void *ctx, uint32_t offset, uint32_t value)",
                        "{", "    (void)ctx; (void)offset; (void)value;", "}", "",
                        "int main(void)", "{", "    struct mxe_cmd cmd;", *prints,
                        '    printf("strings %s %s\\n", MXE_CONFIG_DATAFLOW, '
                        'MXE_CONFIG_MULTIPLIER);', "    return 0;", "}", ""])
    out = _compile_and_run(exported, "check_headers", source).splitlines()
    got = {}
    encoded = []
    for line in out:
        key, *rest = line.split()
        if key == "words":
            encoded.append([int(v) for v in rest])
        elif key == "opcode":
            encoded.append(int(rest[0]))
        elif key == "strings":
            assert rest == [CONFIG.dataflow, CONFIG.multiplier]
        else:
            got[key] = int(rest[0])
    assert got == expected
    assert encoded == words


MOCK = r"""
#include <stdio.h>
#include "mxe.h"

/* A register file that is not an engine: reads return what was put there; CYCLES advances by
 * 10 per read unless frozen. */
static uint32_t regs[1024];
static int frozen;

uint32_t mxe_read32(void *ctx, uint32_t offset)
{
    (void)ctx;
    if (offset == MXE_REG_CYCLES_LO && !frozen)
        regs[offset / 4] += 10;
    return regs[offset / 4];
}

void mxe_write32(void *ctx, uint32_t offset, uint32_t value)
{
    (void)ctx;
    if (offset != MXE_REG_STATUS && offset != MXE_REG_CTRL)
        regs[offset / 4] = value;
}

static unsigned polls;
static void count_poll(void *ctx)
{
    (void)ctx;
    polls++;
}

int main(void)
{
    struct mxe_dev dev;
    struct mxe_gemm gemm = {4, 4, 4, 0, 4, 64, 4, 128, 16, 0, false, false, NULL};
    struct mxe_cmd fence = mxe_cmd_fence();
    int rc;
    mxe_init(&dev, NULL);
    printf("undiscovered %s\n", mxe_strerror(mxe_gemm(&dev, &gemm, 100)));
    regs[MXE_REG_ID / 4] = 0x12345603u;
    printf("magic %s\n", mxe_strerror(mxe_discover(&dev)));
    regs[MXE_REG_ID / 4] = MXE_ID_MAGIC << MXE_ID_MAGIC_SHIFT | (MXE_REGMAP_VERSION + 1u);
    printf("newer %s\n", mxe_strerror(mxe_discover(&dev)));
    regs[MXE_REG_ID / 4] = MXE_ID_MAGIC << MXE_ID_MAGIC_SHIFT | 1u;
    regs[MXE_REG_CFG_CMD_QUEUE_DEPTH / 4] = 8;
    regs[MXE_REG_CFG_ACC_WIDTH / 4] = 40;
    regs[MXE_REG_CFG_INPUT_WIDTH / 4] = 12;
    regs[MXE_REG_CFG_AXI_DATA_WIDTH / 4] = 64;
    regs[MXE_REG_CFG_AXI_ADDR_WIDTH / 4] = 32;
    rc = mxe_discover(&dev);
    printf("v1 %s %d %d %u %u %u\n", mxe_strerror(rc), dev.config.gemm_unit,
           dev.config.perf_counters, dev.config.elem_bytes, dev.config.acc_elem_bytes,
           dev.config.axi_bytes);
    regs[MXE_REG_ID / 4] = MXE_ID_VALUE;
    regs[MXE_REG_CAPABILITIES / 4] = MXE_CAPABILITIES_PERF_COUNTERS_MASK;
    rc = mxe_discover(&dev);
    printf("lean %s %d %d %d\n", mxe_strerror(rc), dev.config.gemm_unit,
           dev.config.perf_counters, dev.config.unaligned_dma);
    regs[MXE_REG_ID / 4] = MXE_ID_MAGIC << MXE_ID_MAGIC_SHIFT | 3u;
    rc = mxe_discover(&dev);
    printf("v3 %s %d %d\n", mxe_strerror(rc), dev.config.gemm_unit, dev.config.unaligned_dma);
    regs[MXE_REG_ID / 4] = MXE_ID_VALUE;
    printf("nogemm %s\n", mxe_strerror(mxe_gemm(&dev, &gemm, 100)));
    regs[MXE_REG_CAPABILITIES / 4] |= MXE_CAPABILITIES_GEMM_UNIT_MASK;
    mxe_discover(&dev);
    gemm.k = 0;
    rc = mxe_gemm(&dev, &gemm, 100);
    printf("zero %s %u\n", mxe_strerror(rc), dev.pushed);
    gemm.k = 65536;
    printf("wide %s\n", mxe_strerror(mxe_gemm(&dev, &gemm, 100)));
    printf("window %s %s\n", mxe_strerror(mxe_set_window(&dev, 4096, 4096)),
           mxe_strerror(mxe_set_window(&dev, 0, 0x100000001ull)));
    regs[MXE_REG_STATUS / 4] = MXE_STATUS_BUSY_MASK;
    printf("busy %s\n", mxe_strerror(mxe_set_window(&dev, 0, 4096)));
    printf("running %s\n", mxe_strerror(mxe_run(&dev, &fence, 1, 100)));
    regs[MXE_REG_STATUS / 4] = 0;
    dev.poll = count_poll;
    rc = mxe_wait_done(&dev, 1000);
    printf("wait %s %u\n", mxe_strerror(rc), polls);
    frozen = 1;
    polls = 0;
    dev.max_polls = 5;
    rc = mxe_wait_done(&dev, 1000);
    printf("polls %s %u\n", mxe_strerror(rc), polls);
    regs[MXE_REG_CMD_LEVEL / 4] = 8;
    rc = mxe_push(&dev, &fence, 1, 100);
    printf("full %s %u\n", mxe_strerror(rc), dev.pushed);
    regs[MXE_REG_STATUS / 4] = MXE_ERRCODE_BAD_DIM << MXE_STATUS_ERROR_SHIFT;
    regs[MXE_REG_ERR_CMD_INDEX / 4] = 17;
    rc = mxe_push(&dev, &fence, 1, 100);
    printf("stopped %s %s %u\n", mxe_strerror(rc), mxe_errcode_name(dev.error.code),
           dev.error.cmd_index);
    printf("names %s %s %s\n", mxe_errcode_name(MXE_ERRCODE_DMA_WINDOW), mxe_errcode_name(99),
           mxe_strerror(-99));
    return 0;
}
"""


def test_driver_paths_on_a_mock(exported):
    out = dict(line.split(" ", 1) for line in
               _compile_and_run(exported, "mock", MOCK).splitlines())
    assert out == {
        "undiscovered": "MXE_ERR_NODEV",
        "magic": "MXE_ERR_NODEV",
        "newer": "MXE_ERR_VERSION",
        # Version 1 had no CAPABILITIES register and every feature; 12-bit operands take 2
        # bytes, 40-bit sums 8.
        "v1": "MXE_OK 1 1 2 8 8",
        "lean": "MXE_OK 0 1 0",
        # Version 3 had unaligned DMA without a CAPABILITIES bit for it.
        "v3": "MXE_OK 0 1",
        "nogemm": "MXE_ERR_UNSUPPORTED",
        "zero": "MXE_ERR_INVAL 0",
        "wide": "MXE_ERR_INVAL",
        "window": "MXE_ERR_INVAL MXE_ERR_INVAL",
        "busy": "MXE_ERR_BUSY",
        "running": "MXE_ERR_BUSY",
        # 10 cycles per poll: the wait ends after 1000 cycles, poll() between the polls.
        "wait": "MXE_ERR_TIMEOUT 100",
        "polls": "MXE_ERR_TIMEOUT 4",
        "full": "MXE_ERR_TIMEOUT 0",
        "stopped": "MXE_ERR_ENGINE BAD_DIM 17",
        "names": "DMA_WINDOW UNKNOWN MXE_ERR_UNKNOWN",
    }


def test_docs_examples_compile(exported, tmp_path):
    """The C of docs/c-driver.md: the hooks as mxe.h declares them, the GEMM example as a
    file, the command stream in a function."""
    page = (Path(__file__).parent.parent / "docs" / "c-driver.md").read_text()
    hooks, example, stream = re.findall(r"```c\n(.*?)```", page, re.S)
    header = " ".join((exported / "mxe.h").read_text().split())
    for declaration in hooks.strip().splitlines():
        assert declaration in header
    (tmp_path / "example.c").write_text(example)
    (tmp_path / "stream.c").write_text(
        '#include "mxe.h"\n\nint stream_example(void);\n\nint stream_example(void)\n{\n'
        "    struct mxe_dev dev;\n    int rc;\n    mxe_init(&dev, 0);\n" + stream
        + "    return rc;\n}\n")
    for name in ("example.c", "stream.c"):
        result = subprocess.run([_cc(), *CFLAGS, f"-I{exported}", "-c",
                                 "-o", os.devnull, str(tmp_path / name)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


# The driver on the engine ------------------------------------------------------------------

def _dispatch_source():
    """The body of the harness's encode(): one generated encoder call per command name."""
    lines = []
    for opcode, fields in FIELDS.items():
        args = ", ".join(f"{'int32_t(' if s else ''}args.u32(\"{n}\", 0u){')' if s else ''}"
                         for n, _l, _w, s, _d in fields if n != "opcode")
        lines.append(f'if (name == "{opcode}") {{ *cmd = mxe_cmd_{opcode.lower()}({args}); '
                     f'return true; }}')
    return "\n".join(lines) + "\n"


def _verilator_env():
    root = verilator_root()
    return dict(os.environ, VERILATOR_ROOT=str(root),
                PATH=os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")]),
                # The wheel's verilated.mk leaves the precompiled-header flag empty; the
                # model's hot code is optimized as the cocotb benches' is.
                MAKEFLAGS=(os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include"
                           + f" OPT_FAST={VERILATOR_OPT_FAST}"))


def _hash(*parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()[:16]


def _update(path, data):
    """Write ``data`` to ``path`` unless it holds that already (make then sees no change)."""
    data = data if isinstance(data, bytes) else data.encode()
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


@pytest.fixture(scope="module")
def harness(exported):
    """The harness executable, in build/c_driver/<configuration>. Rebuilt when the gateware or
    the C changes; make then recompiles only what changed (the driver alone: a few seconds)."""
    missing = simulator_missing("verilator")
    if missing:
        pytest.skip(missing)
    cc = _cc()
    sources = {name: (exported / name).read_bytes() for name in (*HEADER_FILES, *DRIVER_FILES)}
    sources[HARNESS.name] = HARNESS.read_bytes()
    sources["encode_dispatch.inc"] = _dispatch_source().encode()
    hw = _hash(*(p.name.encode() + p.read_bytes()
                 for p in sorted(Path(mxe.hw.__file__).parent.rglob("*.py"))))
    wanted = {"hw": hw, "c": _hash(*sources.items(), verilator_root(), VERILATOR_OPT_FAST)}
    build = build_root() / "c_driver" / CONFIG.dir_key()
    src, exe = build / "src", build / "obj" / "harness"
    src.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = build / "stamp.json"
        built = json.loads(stamp.read_text()) if stamp.exists() else {}
        if built == wanted and exe.exists():
            return exe
        stamp.unlink(missing_ok=True)
        for name, data in sources.items():
            _update(src / name, data)
        if built.get("hw") != hw or not (src / "mxe_engine.v").exists():
            _update(src / "mxe_engine.v", to_verilog(TOPS["engine"][0](CONFIG), name="mxe_engine"))
        # The driver is compiled as firmware would compile it, then linked in.
        subprocess.run([cc, *CFLAGS, "-O2", "-c", "-o", str(src / "mxe.o"), str(src / "mxe.c")],
                       check=True)
        result = subprocess.run(
            [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build",
             "-j", "2", "-Wno-fatal", "-Wno-WIDTH", "-O2", "--x-assign", "0",
             "--x-initial", "0", "--top-module", "mxe_engine", "-CFLAGS", f"-I{src}",
             "-Mdir", str(build / "obj"), "-o", "harness", str(src / "mxe_engine.v"),
             str(src / HARNESS.name), str(src / "mxe.o")],
            capture_output=True, text=True, env=_verilator_env())
        if result.returncode:
            pytest.fail(f"harness build failed:\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-3000:]}")
        stamp.write_text(json.dumps(wanted))
    return exe


class Job:
    """A harness job: the lines to run and, for each line that prints, where its output
    goes."""

    def __init__(self, base=MEM_BASE, size=MEM_SIZE):
        self.lines = [f"memory base={base:#x} size={size}"]
        self.outputs = 0

    def _line(self, action, prints, **args):
        def text(v):
            return str(int(v) if isinstance(v, (bool, np.integer)) else v)
        self.lines.append(" ".join([action, *(f"{k}={text(v)}" for k, v in args.items())]))
        if prints:
            self.outputs += 1
            return self.outputs - 1
        return None

    def do(self, action, **args):
        """An action that prints a line; returns its index in the results."""
        return self._line(action, True, **args)

    def quiet(self, action, **args):
        self._line(action, False, **args)

    def enc(self, command):
        """Queue a command for run/push through its generated C encoder."""
        name, fields = cmds.decode(command)
        self.lines.append(" ".join(["enc", name, *(f"{k}={v}" for k, v in fields.items()
                                                   if k != "opcode")]))

    def words(self, words):
        self.lines.append("cmd " + " ".join(f"w{i}={w}" for i, w in enumerate(words)))

    def mem(self, addr, data):
        self.quiet("mem", addr=hex(addr), data=bytes(data).hex())

    def run(self, harness, directory, seed, stall):
        """Run the job with the memory's channels stalling ``stall`` percent of the cycles."""
        path = directory / "job.txt"
        path.write_text("\n".join(self.lines) + "\n")
        result = subprocess.run([str(harness), str(path), str(seed), str(stall)],
                                capture_output=True, text=True, timeout=600)
        lines = result.stdout.splitlines()
        assert result.returncode == 0, f"harness failed ({result.returncode}):\n" + \
            "\n".join(lines[-20:]) + result.stderr[-2000:]
        parsed = [(line.split()[0], dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line)))
                  for line in lines]
        *results, (end, summary) = parsed
        assert end == "end", lines[-5:]
        assert summary["protocol_errors"] == "0" and summary["lite_errors"] == "0", lines
        assert len(results) == self.outputs, lines
        return results


def _requant(rng, K, N, per_channel):
    """A requantization that maps K-term int8 sums onto about the int8 range."""
    bits = int(np.ceil(np.log2(K * 128)))
    if per_channel:
        multiplier = tuple(int(m) for m in rng.integers(1 << 29, 1 << 30, N))
        shift = tuple(int(s) for s in rng.integers(30 + bits - 2, 30 + bits + 2, N))
    else:
        multiplier = int(rng.integers(1 << 29, 1 << 30))
        shift = int(rng.integers(30 + bits - 2, 30 + bits + 2))
    clamp = [None, (-100, 100), (0, 127)][int(rng.integers(3))]
    return Requant(multiplier, shift, zero_point=int(rng.integers(-10, 11)), clamp=clamp,
                   round_even=bool(rng.integers(2)))


def _gemm_args(plan):
    """mxe_gemm()'s arguments for a plan's layout and options."""
    L = plan.layout
    channel = L.get("bias", L.get("requant"))
    rq = plan.requant
    args = dict(m=plan.M, k=plan.K, n=plan.N, a_offset=L["a"].offset, a_stride=L["a"].stride,
                b_offset=L["b"].offset, b_stride=L["b"].stride, c_offset=L["c"].offset,
                c_stride=L["c"].stride, channel_offset=channel.offset if channel else 0,
                bias=plan.bias, relu=plan.relu, requant=rq is not None, multiplier=0, shift=0,
                zero_point=0, clamp=0, clamp_min=0, clamp_max=0, round_even=0, per_channel=0)
    if rq is not None:
        args.update(zero_point=rq.zero_point, round_even=rq.round_even,
                    per_channel=rq.per_column)
        if not rq.per_column:
            args.update(multiplier=rq.multiplier, shift=rq.shift)
        if rq.clamp is not None:
            args.update(clamp=1, clamp_min=rq.clamp[0], clamp_max=rq.clamp[1])
    return args


def _traffic(commands):
    """(MAC-active cycles, DMA bytes read, DMA bytes written) of a LOAD/MATMUL/STORE stream."""
    c = CONFIG
    mac = rd = wr = 0
    for command in commands:
        name, f = cmds.decode(command)
        if name == "MATMUL":
            mac += f["m"]
        elif name == "LOAD":
            size = (c.acc_elem_bytes if f["to_bias"] else 4 if f["to_requant"]
                    else c.elem_bytes)
            rd += f["rows"] * f["elems"] * size
        elif name == "STORE":
            wr += f["rows"] * f["elems"] * (1 if f["requant"] else c.acc_elem_bytes)
    return mac, rd, wr


def _write_result(image, plan, C):
    region = plan.layout["c"]
    data = encode_elems(C, region.elem_bytes)
    for r in range(plan.M):
        start = region.offset + r * region.stride
        image[start:start + region.row_bytes] = data[r * region.row_bytes:
                                                     (r + 1) * region.row_bytes]


def _ok(result):
    return result[1]["rcname"] == "MXE_OK"


@pytest.mark.parametrize("stall", [0, 40])
def test_gemms_on_the_engine(harness, tmp_path, seed, stall):
    """Random GEMMs through the descriptor and as command streams, against the golden model,
    with a memory that answers at once or stalls its channels 40 % of the cycles."""
    rng = np.random.default_rng(seed)
    job = Job()
    discover = job.do("discover")
    job.do("window", base=hex(MEM_BASE), limit=hex(MEM_BASE + MEM_SIZE))
    image = bytearray(rng.integers(0, 256, MEM_SIZE, dtype=np.uint8).tobytes())
    expected = bytearray()
    # (descriptor?, M, K, N, bias, relu, requantization): shapes that are and are not
    # multiples of the 4x4 array, every post-processing option, and twelve drawn at random.
    cases = [(True, 4, 4, 4, False, False, None), (True, 5, 7, 3, True, True, None),
             (True, 1, 1, 1, False, False, None), (True, 9, 13, 6, True, False, "scalar"),
             (True, 11, 6, 9, False, True, "per_channel"),
             (True, 7, 10, 5, True, False, "per_channel"),
             (False, 6, 10, 7, True, False, "scalar"), (False, 12, 5, 9, False, True, None),
             (False, 3, 3, 3, False, False, "per_channel")]
    for descriptor in (True, False) * 6:
        M, K, N = (int(v) for v in rng.integers(1, 49, 3))
        cases.append((descriptor, M, K, N, bool(rng.integers(2)), bool(rng.integers(2)),
                      [None, "scalar", "per_channel"][int(rng.integers(3))]))
    print("cases", cases)
    checks = []
    base = 0
    for descriptor, M, K, N, bias, relu, kind in cases:
        rq = None if kind is None else _requant(rng, K, N, kind == "per_channel")
        plan = plan_gemm(CONFIG, M, K, N, bias=bias, relu=relu, requant=rq, base=base)
        base = plan.size
        assert base <= MEM_SIZE
        lo, hi = CONFIG.input_range
        A = rng.integers(lo, hi + 1, (M, K))
        B = rng.integers(lo, hi + 1, (K, N))
        bias_values = rng.integers(-(1 << 20), 1 << 20, N) if bias else None
        for offset, data in pack_operands(plan, A, B, bias_values).items():
            image[offset:offset + len(data)] = data
        C = postprocess_columns(matmul(A, B, CONFIG), CONFIG, bias=bias_values, relu=relu,
                                requant=rq)
        job.do("reset")
        if descriptor:
            args = _gemm_args(plan)
            gemm = job.do("gemm", **args)
            stream = expand(CONFIG, descriptor_commands(
                M, K, N, **{k: args[k] for k in ("a_offset", "a_stride", "b_offset", "b_stride",
                                                  "c_offset", "c_stride", "channel_offset")},
                bias=bias, per_channel=bool(args["per_channel"]), relu=relu,
                requant=rq is not None))
        else:
            for command in plan.commands:
                job.enc(command)
            gemm = job.do("run")
            stream = plan.commands
        checks.append((descriptor, M, K, N, plan, C, gemm, job.do("counters"), stream))
    expected[:] = image
    for *_, plan, C, _gemm, _counters, _stream in checks:
        _write_result(expected, plan, C)
    job.lines.insert(1, f"mem addr={MEM_BASE:#x} data={bytes(image).hex()}")
    dump = job.do("dump", addr=hex(MEM_BASE), len=MEM_SIZE)

    results = job.run(harness, tmp_path, seed, stall)

    found = results[discover][1]
    assert found["rc"] == "0" and int(found["version"]) == VERSION
    for reg, attr in CONFIG_REGISTERS:
        assert int(found["is_signed" if attr == "signed" else attr]) == int(getattr(CONFIG, attr))
    for name, _doc in CAPABILITIES:
        assert int(found[name]) == int(getattr(CONFIG, name))
    assert (int(found["elem_bytes"]), int(found["acc_elem_bytes"]), int(found["axi_bytes"])) \
        == (CONFIG.elem_bytes, CONFIG.acc_elem_bytes, CONFIG.axi_bytes)
    for descriptor, M, K, N, plan, C, gemm, counters, stream in checks:
        what = f"{'descriptor' if descriptor else 'stream'} {M}x{K}x{N}"
        assert _ok(results[gemm]), (what, results[gemm])
        got = results[counters][1]
        assert {port for _name, port, _doc in COUNTERS} <= set(got), got
        mac, rd, wr = _traffic(stream)
        assert (int(got["mac_active_cycles"]), int(got["dma_rd_bytes"]),
                int(got["dma_wr_bytes"])) == (mac, rd, wr), (what, got)
        assert 0 < int(got["busy_cycles"]) <= int(got["cycles"]), (what, got)
    memory = bytes.fromhex(results[dump][1]["data"])
    for *_, plan, C, _gemm, _counters, _stream in checks:
        region = plan.layout["c"]
        got = memory[region.offset:region.end]
        want = bytes(expected[region.offset:region.end])
        assert got == want, f"C of {plan.M}x{plan.K}x{plan.N} differs from the golden model"
    assert memory == bytes(expected), "a write outside the results"


def _expect_refusal(results, index, code, cmd_index, addr=0, what=""):
    action, got = results[index]
    assert (got["rcname"], got["codename"], int(got["index"]), int(got["addr"])) == \
        ("MXE_ERR_ENGINE", code.name, cmd_index, addr), (what, action, got)


def test_refusals_on_the_engine(harness, tmp_path, seed):
    """What the engine refuses, as the driver reports it: the error code, ERR_CMD_INDEX and
    ERR_ADDR; then a timeout, a full queue, and GEMMs that run right after all that."""
    rng = np.random.default_rng(seed)
    depth = CONFIG.cmd_queue_depth
    job = Job()
    job.do("discover")
    window = dict(base=hex(MEM_BASE), limit=hex(MEM_BASE + MEM_SIZE))
    job.do("window", **window)
    image = bytearray(rng.integers(0, 256, MEM_SIZE, dtype=np.uint8).tobytes())
    job.mem(MEM_BASE, image)
    refusals = []     # (result index, error code, ERR_CMD_INDEX, ERR_ADDR, what)

    def stream(what, commands, code, cmd_index, addr=0):
        job.do("reset")
        for command in commands:
            if isinstance(command, list):
                job.words(command)
            else:
                job.enc(command)
        refusals.append((job.do("run"), code, cmd_index, addr, what))

    # A LOAD that runs (2 rows of A's 4 elements into the scratchpad), to put the refused
    # command at a known position.
    fine = cmds.load(0, 0x100, 2, 4, 4)
    invalid = sorted(set(range(16)) - {op.value for op in Opcode})
    opcode = int(rng.choice(invalid))
    stream(f"opcode {opcode}", [fine, fine, [opcode | int(rng.integers(0, 1 << 28)) << 4,
                                             *(int(w) for w in rng.integers(0, 1 << 32, 3))],
                                cmds.store(0, 0x1000, 1, 4, 16)],
           ErrorCode.BAD_OPCODE, 2)
    # The engine stays stopped: the driver says so before pushing anything.
    job.enc(fine)
    refusals.append((job.do("run"), ErrorCode.BAD_OPCODE, 2, 0, "run while stopped"))
    zero_dims = {
        "MATMUL m=0": cmds.matmul(0, 0, 0, 4, 0),
        "MATMUL k=0": cmds.matmul(0, 0, 2, 0, 0),
        "LOAD rows=0": cmds.load(0, 0, 0, 4, 4),
        "LOAD elems=0": cmds.load(0, 0, 2, 0, 4),
        "STORE rows=0": cmds.store(0, 0x1000, 0, 4, 16),
    }
    for what, command in zero_dims.items():
        stream(what, [fine, command], ErrorCode.BAD_DIM, 1)
    # Window violations: the extent leaves [WIN_BASE, WIN_LIMIT) by a few bytes; ERR_ADDR is
    # WIN_BASE + mem_offset.
    stream("LOAD past the window", [fine, fine, fine, cmds.load(0, MEM_SIZE - 2, 1, 4, 4)],
           ErrorCode.DMA_WINDOW, 3, MEM_BASE + MEM_SIZE - 2)
    stream("STORE past the window", [fine, cmds.store(0, MEM_SIZE - 15, 1, 4, 16)],
           ErrorCode.DMA_WINDOW, 1, MEM_BASE + MEM_SIZE - 15)
    # A descriptor with a zero dimension, through the encoders (GEMM_A/B/C are not counted).
    stream("descriptor k=0", [fine, *descriptor_commands(4, 0, 4, a_offset=0, a_stride=4,
                                                          b_offset=64, b_stride=4,
                                                          c_offset=128, c_stride=16)],
           ErrorCode.BAD_DIM, 1)
    # mxe_gemm refuses a zero dimension itself, sending nothing.
    job.do("reset")
    zero = job.do("gemm", **dict(_gemm_args(plan_gemm(CONFIG, 4, 4, 4)), n=0))
    # A descriptor whose B does not fit the scratchpad (K over 960 on tiny).
    assert schedule(CONFIG, 4, 1000, 4)[1] == ErrorCode.BAD_ADDR
    job.do("reset")
    refusals.append((job.do("gemm", **dict(_gemm_args(plan_gemm(CONFIG, 4, 4, 4)), k=1000)),
                     ErrorCode.BAD_ADDR, 0, 0, "descriptor K=1000"))
    # Memory errors: a window larger than the memory (DECERR past its end), then SLVERR from a
    # faulty range. ERR_ADDR: the failing beat of a read, the failing burst of a write.
    job.do("window", base=hex(MEM_BASE), limit=hex(MEM_BASE + 2 * MEM_SIZE))
    stream("LOAD past the memory", [fine, cmds.load(0, MEM_SIZE + 68, 1, 4, 4)],
           ErrorCode.DMA_DECERR, 1, MEM_BASE + MEM_SIZE + 68)
    job.do("window", **window)
    job.quiet("fault", lo=hex(MEM_BASE + 0x2000), hi=hex(MEM_BASE + 0x2100))
    stream("STORE to a faulty range", [cmds.store(0, 0x2008, 2, 4, 32)],
           ErrorCode.DMA_SLVERR, 0, MEM_BASE + 0x2008)
    job.quiet("fault", lo=0, hi=0)

    # A GEMM waited for too briefly times out; waiting again finds it done.
    lo, hi = CONFIG.input_range
    good = []
    base = 0x4000
    for M, K, N, how in ((16, 24, 16, "timeout"), (5, 9, 7, "gemm"), (10, 6, 3, "run")):
        plan = plan_gemm(CONFIG, M, K, N, relu=True, base=base)
        base = plan.size
        A, B = rng.integers(lo, hi + 1, (M, K)), rng.integers(lo, hi + 1, (K, N))
        for offset, data in pack_operands(plan, A, B).items():
            image[offset:offset + len(data)] = data
        good.append((plan, postprocess_columns(matmul(A, B, CONFIG), CONFIG, relu=True), how))
    job.mem(MEM_BASE + 0x4000, image[0x4000:base])
    job.do("reset")
    timed_out = job.do("gemm", timeout=40, **_gemm_args(good[0][0]))
    waited = job.do("wait")
    # A full queue: the driver pushes what fits (the queue's depth, and the 4 commands the
    # registers in front of the controller take before the start; docs/programming.md), then
    # times out instead of overflowing it.
    job.do("reset")
    for _ in range(3 * depth):
        job.enc(cmds.fence())
    full = job.do("push", timeout=2000)
    status = job.do("status")
    job.do("start")
    drained = job.do("wait")
    # The FENCEs behind the first still run: a GEMM now is refused (their done would end its
    # wait). Once they have run, they leave STATUS.done set, which the GEMM must not take for
    # its own.
    running = job.do("status")
    busy = job.do("gemm", **_gemm_args(good[1][0]))
    job.quiet("idle", cycles=200)
    stale = job.do("status")
    after = [job.do("gemm", **_gemm_args(good[1][0]))]
    # A stream after a soft reset.
    job.do("reset")
    for command in good[2][0].commands:
        job.enc(command)
    after.append(job.do("run"))
    final = job.do("status")
    dump = job.do("dump", addr=hex(MEM_BASE), len=MEM_SIZE)

    results = job.run(harness, tmp_path, seed, 20)

    for index, code, cmd_index, addr, what in refusals:
        _expect_refusal(results, index, code, cmd_index, addr, what)
    assert results[zero][1]["rcname"] == "MXE_ERR_INVAL" and results[zero][1]["pushed"] == "0"
    assert results[timed_out][1]["rcname"] == "MXE_ERR_TIMEOUT", results[timed_out]
    assert _ok(results[waited]), results[waited]
    got = results[full][1]
    assert (got["rcname"], int(got["pushed"])) == ("MXE_ERR_TIMEOUT", depth + 4), got
    status_fields = next(r for r in REGISTERS if r.name == "STATUS").fields
    word, level = int(results[status][1]["word"]), int(results[status][1]["level"])
    fields = {f.name: (word & f.mask) >> f.lsb for f in status_fields}
    assert (fields["cmd_overflow"], fields["queue_full"], level) == (0, 1, depth), fields
    assert _ok(results[drained]), results[drained]
    bit = {f.name: f.mask for f in status_fields}
    assert int(results[running][1]["word"]) & bit["busy"], results[running]
    assert results[busy][1]["rcname"] == "MXE_ERR_BUSY", results[busy]
    word = int(results[stale][1]["word"])
    assert word & bit["done"] and not word & bit["busy"], results[stale]
    for index in after:
        assert _ok(results[index]), results[index]
    assert int(results[final][1]["word"]) & ~0b11001 == 0, results[final]    # no error, done
    expected = bytearray(image)
    for plan, C, _how in good:
        _write_result(expected, plan, C)
    memory = bytes.fromhex(results[dump][1]["data"])
    assert memory == bytes(expected), "a refused command wrote memory, or a GEMM went wrong"
