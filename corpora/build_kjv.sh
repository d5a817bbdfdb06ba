#!/usr/bin/env bash
# Rebuild kjv_poetry.txt: the poetical books of the King James Version
# (Job, Psalms, Proverbs, Ecclesiastes, Song of Solomon, in canonical order),
# one verse per line, verse references removed, trailing whitespace stripped,
# text otherwise exactly as printed by Debian's `bible` program.
#
# Source: Debian packages bible-kjv and bible-kjv-text, version 4.38, fetched
# with `apt-get download` into a temporary directory and unpacked with
# `dpkg -x` (no root, no installation).  Verse counts are checked against the
# standard KJV counts; any mismatch or unexpected output line aborts the build.
#
# Usage:
#   corpora/build_kjv.sh [-o OUT] [--full FULL_OUT] [--root DIR]
#     -o OUT          poetry output (default: kjv_poetry.txt next to this script)
#     --full FULL_OUT also write the whole Bible (31102 verses), one verse per
#                     line in the same format (for benchmarks; not committed)
#     --root DIR      use a tree where both .debs were already `dpkg -x`-ed
#                     instead of downloading them
set -euo pipefail

VERSION=4.38
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/kjv_poetry.txt"
full=""
root=""

die() { echo "build_kjv.sh: error: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        -o|--output) out=${2:?missing value for $1}; shift 2 ;;
        --full) full=${2:?missing value for $1}; shift 2 ;;
        --root) root=${2:?missing value for $1}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ -z $root ]]; then
    # apt drops privileges to _apt when it can; let it write into the temp dir.
    chmod 755 "$tmp"
    echo "fetching bible-kjv=$VERSION bible-kjv-text=$VERSION with apt-get download ..." >&2
    (cd "$tmp" && apt-get download -q "bible-kjv=$VERSION" "bible-kjv-text=$VERSION") >&2
    root="$tmp/root"
    for deb in "$tmp"/bible-kjv_"$VERSION"_*.deb "$tmp"/bible-kjv-text_"$VERSION"_*.deb; do
        [[ -f $deb ]] || die "apt-get download did not produce $deb"
        sha256sum "$deb" | sed "s|$tmp/||" >&2
        dpkg -x "$deb" "$root"
    done
fi
[[ -x $root/usr/bin/bible && -f $root/usr/lib/bible.data ]] || die "no bible program/data under $root"

# Print a passage, one verse per line ("Psa1:1 Blessed is the man ...").
bible() { "$root/usr/bin/bible" -f -p "$root/usr/lib" "$1" </dev/null; }

# Read `bible` output on stdin; print the verse texts without references and
# trailing whitespace.  Fail unless every line is "<prefix><ch>:<v> <text>"
# with non-empty text and there are exactly <expected> lines.
strip_refs() {  # label prefix-regex expected
    awk -v label="$1" -v prefix="$2" -v expected="$3" '
        match($0, "^" prefix "[0-9]+:[0-9]+ ") {
            text = substr($0, RLENGTH + 1)
            sub(/[[:space:]]+$/, "", text)
            if (text == "") { print label ": empty verse: " $0 > "/dev/stderr"; bad++ }
            print text
            count++
            next
        }
        { print label ": unexpected line: " $0 > "/dev/stderr"; bad++ }
        END {
            if (bad || count != expected) {
                printf "%s: %d verses, %d bad lines; expected %d verses\n",
                    label, count, bad, expected > "/dev/stderr"
                exit 1
            }
            printf "%-16s %5d verses\n", label, count > "/dev/stderr"
        }'
}

# Warn about anything that could be markup rather than text.
check_markup() {  # file label
    local n
    n=$(LC_ALL=C grep -c '[][{}<>*_|~#\\]' "$1" || true)
    ((n == 0)) || echo "warning: $2: $n lines contain bracket/markup-like characters" >&2
    n=$(LC_ALL=C grep -c '[^ -~]' "$1" || true)
    ((n == 0)) || echo "warning: $2: $n lines contain non-ASCII or control characters" >&2
    n=$(grep -c '  ' "$1" || true)
    ((n == 0)) || echo "note: $2: $n lines contain a double space (kept as printed)" >&2
}

# query | reference prefix printed by `bible` | expected verse count
books=(
    "job1:1-job42:17|Job|1070|Job"
    "ps1:1-ps150:6|Psa|2461|Psalms"
    "prov1:1-prov31:31|Prv|915|Proverbs"
    "eccl1:1-eccl12:14|Eccl|222|Ecclesiastes"
    "song1:1-song8:14|SSol|117|Song of Solomon"
)

: >"$tmp/poetry.txt"
for entry in "${books[@]}"; do
    IFS='|' read -r query prefix expected label <<<"$entry"
    bible "$query" | strip_refs "$label" "$prefix" "$expected" >>"$tmp/poetry.txt"
done
check_markup "$tmp/poetry.txt" "poetry"
mv "$tmp/poetry.txt" "$out"
read -r lines words chars < <(wc -l -w -m <"$out")
echo "wrote $out: $lines lines, $words words, $chars characters, $(wc -c <"$out") bytes" >&2

if [[ -n $full ]]; then
    bible "gen1:1-rev22:21" | strip_refs "whole Bible" "[1-3]?[A-Za-z]+" 31102 >"$tmp/full.txt"
    check_markup "$tmp/full.txt" "whole Bible"
    mv "$tmp/full.txt" "$full"
    read -r lines words chars < <(wc -l -w -m <"$full")
    echo "wrote $full: $lines lines, $words words, $chars characters, $(wc -c <"$full") bytes" >&2
fi
