#!/usr/bin/env bash
# Build KenLM's lmplz and query for the quality benchmark's count-based reference (kn5.py).
#
# Source: the PyPI sdist of kenlm 0.3.0, which carries the whole C++ tree (lmplz included,
# though the Python wheel does not build it). Steps: pip download the sdist, untar it,
# cmake + make the two targets, copy the binaries into benchmarks/.cache/kenlm/bin/.
# Idempotent: does nothing when both binaries are already there.
#
# Debian build dependencies, installed here with apt-get when any is missing (as root, or
# through sudo):
#   cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
#   libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev
#
#   bash benchmarks/quality/kenlm.sh            # then: benchmarks/.cache/kenlm/bin/{lmplz,query}
#
# Environment: KENLM_DIR (default benchmarks/.cache/kenlm), PYTHON (a Python with pip;
# default the repository's .venv, else python3), JOBS (make -j, default 2).
set -euo pipefail

VERSION=0.3.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KENLM_DIR=${KENLM_DIR:-$REPO/benchmarks/.cache/kenlm}
BIN=$KENLM_DIR/bin
JOBS=${JOBS:-2}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi

if [[ -x $BIN/lmplz && -x $BIN/query ]]; then
    echo "kenlm.sh: $BIN already holds lmplz and query; nothing to do"
    exit 0
fi

# --- build dependencies -------------------------------------------------------------
PACKAGES=(cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
          libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev)
missing=()
command -v dpkg-query >/dev/null || { echo "kenlm.sh: not Debian: install the dependencies above yourself"; PACKAGES=(); }
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    echo "kenlm.sh: installing missing build dependencies with apt-get: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
        echo "kenlm.sh: not root and no sudo: install them first: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- source ---------------------------------------------------------------------------
SOURCE=$KENLM_DIR/src/kenlm-$VERSION
if [[ ! -f $SOURCE/CMakeLists.txt ]]; then
    mkdir -p "$KENLM_DIR/src"
    # --no-build-isolation: pip reads the sdist's metadata with the setuptools at hand
    # instead of first fetching setuptools, wheel and a cmake wheel into a throwaway env
    # (Falls back to pip's isolated build when this Python has no setuptools.)
    "$PYTHON" -m pip download "kenlm==$VERSION" --no-deps --no-binary :all: --no-build-isolation \
        -d "$KENLM_DIR/src" ||
        "$PYTHON" -m pip download "kenlm==$VERSION" --no-deps --no-binary :all: -d "$KENLM_DIR/src"
    tar -xzf "$KENLM_DIR/src/kenlm-$VERSION.tar.gz" -C "$KENLM_DIR/src"
fi

# --- build ----------------------------------------------------------------------------
BUILD=$KENLM_DIR/build
cmake -S "$SOURCE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
make -C "$BUILD" -j"$JOBS" lmplz query
mkdir -p "$BIN"
cp "$BUILD/bin/lmplz" "$BUILD/bin/query" "$BIN/"
echo "kenlm.sh: built $BIN/lmplz and $BIN/query (kenlm $VERSION)"
