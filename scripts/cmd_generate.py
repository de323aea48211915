"""``mxe generate``: write the Verilog of an MXE block and its configuration JSON."""

from pathlib import Path

from mxe.hw.generate import TOPS, to_verilog
from mxe.config_args import add_config_arguments, config_from_args

NAME = "generate"
HELP = "write Verilog and the configuration JSON for a preset or custom parameters"


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
    print(f"{verilog_path}  ({config.rows}x{config.cols} {args.top}, "
          f"{'signed' if config.signed else 'unsigned'} {config.input_width}-bit)")
    print(config_path)
    return 0
