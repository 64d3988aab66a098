"""Stamp one release version everywhere it is written: the package (thrifty.__version__, which
pyproject.toml reads), the chart's version and appVersion (its default image tag), and the chart's
default image repository. The release workflow runs it with the version from the git tag.

Usage: python scripts/set_version.py 1.2.0 [--image ghcr.io/OWNER/thrifty-operator]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
IMAGE = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
)


def _replace(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"set_version: {pattern!r} not found in {path}")
    path.write_text(new)


def stamp(root: Path, version: str, image: str | None) -> None:
    _replace(
        root / "operator/thrifty/__init__.py", r'^__version__ = ".*"$', f'__version__ = "{version}"'
    )
    chart = root / "charts/thrifty/Chart.yaml"
    _replace(chart, r"^version: .*$", f"version: {version}")
    _replace(chart, r"^appVersion: .*$", f'appVersion: "{version}"')
    if image is not None:
        _replace(
            root / "charts/thrifty/values.yaml", r"^  repository: .*$", f"  repository: {image}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="semantic version without the v, e.g. 1.2.0")
    parser.add_argument("--image", help="the operator image repository the release pushes")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not SEMVER.fullmatch(args.version):
        parser.error(f"{args.version!r} is not a semantic version (1.2.0, 1.2.0-rc.1)")
    if args.image is not None and not IMAGE.fullmatch(args.image):
        parser.error(f"{args.image!r} is not an image repository (lowercase, no tag)")
    stamp(args.root, args.version, args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
