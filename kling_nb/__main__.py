"""`python -m kling_nb export NOTEBOOK.ipynb [--embed] [--out FILE]`: one HTML page with every
result of a notebook (the same as `%kling export` in a notebook)."""

from __future__ import annotations

import argparse
import sys

from .errors import KlingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kling_nb")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("export", help="write NOTEBOOK.html with every result")
    cmd.add_argument("notebook", help="the executed notebook")
    cmd.add_argument("--embed", action="store_true", help="put the videos inside the page (one self-contained file)")
    cmd.add_argument("--out", help="the page to write (default: NOTEBOOK.html beside the notebook)")
    args = parser.parse_args(argv)
    from .notebook.export import export

    try:
        print(export(args.notebook, embed=args.embed, out=args.out).report)
    except KlingError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
