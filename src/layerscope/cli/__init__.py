"""``layerscope`` command line: one module per verb in this package.

Each verb module defines ``add_parser(subparsers, parent)`` (which sets ``func``) and nothing else is
needed to add a verb. Errors that layerscope raises on purpose print one line and exit 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from .._errors import LayerscopeError


def _verb_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser = argparse.ArgumentParser(
        prog="layerscope",
        description="Look inside every layer of a neural network, measure what it costs, act on what you see.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in _verb_modules():
        importlib.import_module(f"{__name__}.{name}").add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LayerscopeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"layerscope {args.verb}: error: {exc}", file=sys.stderr)
        if not args.debug:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"layerscope {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
