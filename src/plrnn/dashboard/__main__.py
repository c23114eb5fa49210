"""python -m plrnn.dashboard [--results DIR] [--out FILE]: build the static results page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build_dashboard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plrnn.dashboard",
        description="Build a static HTML page (no network, relative links) from results/: every "
        "machine's tables beside the paper's, figures, metadata, raw CSV links and "
        "the asv dashboard link.",
    )
    parser.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results folder holding <machine>/<name>.{md,csv,png,json} (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="HTML file to write (default: DIR/index.html)"
    )
    parser.add_argument(
        "--asv-html",
        default=None,
        metavar="DIR",
        help="where `asv publish` wrote its site (default: html_dir of DIR/../asv.conf.json)",
    )
    parser.add_argument(
        "--paper",
        default=None,
        metavar="DIR",
        help="published numbers as CSV (default: DIR/../reproductions/paper)",
    )
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.error(
            f"--results {args.results}: not a directory (run from the repository root, "
            "or pass the folder holding <machine>/<name>.csv ...)"
        )
    if args.out is not None and Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a directory; give the HTML file to write")
    if args.out is not None:
        blocked = next((p for p in Path(args.out).parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            parser.error(f"--out {args.out}: {blocked} is a file, not a directory")
    result = build_dashboard(args.results, args.out, asv_html=args.asv_html, paper_dir=args.paper)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    n = sum(len(m.artifacts) for m in result.machines)
    m = len(result.machines)
    print(
        f"wrote {result.path} ({m} machine{'' if m == 1 else 's'}, {n} artifact{'' if n == 1 else 's'})"
    )
    if result.charts:
        c = len(result.charts)
        print(f"wrote {c} asv chart{'' if c == 1 else 's'} beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
