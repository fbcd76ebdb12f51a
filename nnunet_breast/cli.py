"""``nnunet-breast``: one console script, one module per subcommand in ``nnunet_breast.commands``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from nnunet_breast import __version__
from nnunet_breast.errors import UserError

# subcommand -> module in nnunet_breast.commands; each module has HELP, add_arguments(parser), run(args) -> int
COMMANDS = {
    "demo": "demo",
    "env": "env",
    "synth": "synth",
    "convert": "convert",
    "splits": "splits",
    "plan": "plan",
    "evaluate": "evaluate",
    "report": "report",
    "compare": "compare",
    "dvh": "dvh",
    "cascade": "cascade",
    "predict-clips": "predict_clips",
    "predict": "predict",
    "export-model": "export_model",
    "install-model": "install_model",
    "serve": "serve",
    "watch": "watch",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-breast",
        description="nnU-Net v2 plugin for breast radiotherapy CT: structure contours and surgical clips.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"nnunet_breast.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"nnunet-breast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnunet-breast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
