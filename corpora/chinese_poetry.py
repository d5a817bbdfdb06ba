"""What the build scripts for the chinese-poetry corpora share.

``build_tang.py`` and ``build_ci.py`` both read the npm package
``chinese-poetry@2.0.1``: this module names the package, fetches and unpacks
it with ``npm pack``, checks an unpacked copy's version, and says which
characters count as CJK ideographs.  Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGE = "chinese-poetry"
VERSION = "2.0.1"

# CJK ideograph code point ranges: Extension A, the URO, the compatibility
# ideographs, and the whole of planes 2 and 3 (SIP and TIP: Extensions B-I,
# compatibility supplement), which Unicode reserves for ideographs.
IDEOGRAPH_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
)


def arguments(description: str, output: Path, what: str) -> argparse.ArgumentParser:
    """The build scripts' shared arguments: the package (or npm) and the output file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("package", nargs="?", type=Path,
                        help=f"unpacked {PACKAGE}@{VERSION} package (default: fetch it with npm pack)")
    parser.add_argument("-o", "--output", type=Path, default=output, help=f"{what} (default: {output})")
    return parser


def is_ideograph(char: str) -> bool:
    """Return True if ``char`` is a CJK ideograph."""
    code = ord(char)
    return any(low <= code <= high for low, high in IDEOGRAPH_RANGES)


def fetch_package(workdir: Path) -> Path:
    """Download the package with ``npm pack`` into ``workdir``, unpack it, return its root."""
    spec = f"{PACKAGE}@{VERSION}"
    print(f"fetching {spec} with npm pack ...", file=sys.stderr)
    command = ["npm", "pack", "--silent", spec]
    subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    tarball = workdir / f"{PACKAGE}-{VERSION}.tgz"
    if not tarball.is_file():
        raise SystemExit(f"npm pack did not produce {tarball}")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    print(f"{tarball.name} sha256 {digest}", file=sys.stderr)
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(workdir, filter="data")
        else:  # Python < 3.11.4
            archive.extractall(workdir)
    return workdir / "package"


def check_version(package_root: Path) -> None:
    """Warn if the unpacked package is not the expected name and version."""
    manifest = json.loads((package_root / "package.json").read_text(encoding="utf-8"))
    found = f"{manifest.get('name')}@{manifest.get('version')}"
    if found != f"{PACKAGE}@{VERSION}":
        print(f"warning: expected {PACKAGE}@{VERSION}, found {found}", file=sys.stderr)
