"""python -m plrnn.site build [--out DIR] [--root DIR]: the docs, the results dashboard, the asv
pages and the raw result files, in one folder that any static host can serve."""

from __future__ import annotations

import argparse
import sys

from .build import SiteBuildError, build_site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plrnn.site",
        description="Build the project's static site: documentation (mkdocs), results dashboard, "
        "asv pages and raw result files, linked by relative links only.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build",
        help="build the whole site into one folder",
        description="Build the whole site into one folder (replaced only when every step "
        "succeeded).",
    )
    build.add_argument(
        "--out", default=None, metavar="DIR", help="the folder to write (default: ROOT/site)"
    )
    build.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="the repository root (default: the current directory)",
    )
    args = parser.parse_args(argv)
    try:
        build_site(args.root, args.out)
    except SiteBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
