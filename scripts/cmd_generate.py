"""``mxe generate``: write the Verilog of an MXE block, its configuration JSON, and a FuseSoC
core file for both with the Verilator lint waivers."""

import shutil
from importlib.metadata import version
from pathlib import Path

import mxe.hw
from mxe.hw.generate import TOPS, to_verilog
from mxe.config_args import add_config_arguments, config_from_args

NAME = "generate"
HELP = ("write Verilog, the configuration JSON and a FuseSoC core file for a preset or custom "
        "parameters")

#: The Verilator lint waivers of the generated Verilog, shipped beside the gateware.
LINT_WAIVERS = Path(mxe.hw.__file__).parent / "lint.vlt"
#: FuseSoC's VLNV vendor and library of the cores mxe generate writes.
CORE_VENDOR, CORE_LIBRARY = "mxe", "mxe"


def core_text(config, module_name, verilog_name, waivers_name, top):
    """A FuseSoC CAPI2 core for generated Verilog: the default target (the Verilog, its top)
    and a ``lint`` target (Verilator ``--lint-only -Wall`` with the waivers)."""
    return f"""CAPI=2:
# Written by mxe generate; regenerate rather than edit.
name: {CORE_VENDOR}:{CORE_LIBRARY}:{module_name}:{version("mxe")}
description: "MXE {top}, {config.rows}x{config.cols}, configuration {config.key()}"

filesets:
  rtl:
    files:
      - {verilog_name}
    file_type: verilogSource
  lint_waivers:
    files:
      - {waivers_name}
    file_type: vlt

targets:
  default:
    filesets: [rtl]
    toplevel: {module_name}
  lint:
    flow: lint
    flow_options:
      tool: verilator
      verilator_options: [-Wall]
    filesets: [rtl, lint_waivers]
    toplevel: {module_name}
"""


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--top", choices=sorted(TOPS), default="engine",
                        help="which block to generate (default: %(default)s)")
    parser.add_argument("-o", "--output", default="out", metavar="DIR",
                        help="output directory (default: %(default)s)")


def run(args):
    config = config_from_args(args)
    make_component, module_name = TOPS[args.top]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    verilog_path = out / f"{module_name}.v"
    verilog_path.write_text(to_verilog(make_component(config), name=module_name))
    config_path = out / f"{module_name}.json"
    config_path.write_text(config.to_json(indent=2) + "\n")
    waivers_path = out / "mxe_lint.vlt"
    shutil.copyfile(LINT_WAIVERS, waivers_path)
    core_path = out / f"{module_name}.core"
    core_path.write_text(core_text(config, module_name, verilog_path.name, waivers_path.name,
                                   args.top))
    print(f"{verilog_path}  ({config.rows}x{config.cols} {args.top}, "
          f"{'signed' if config.signed else 'unsigned'} {config.input_width}-bit)")
    print(config_path)
    print(f"{core_path}  (FuseSoC: fusesoc --cores-root {out} run --target lint "
          f"{CORE_VENDOR}:{CORE_LIBRARY}:{module_name})")
    return 0
