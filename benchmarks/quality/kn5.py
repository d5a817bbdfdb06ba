"""The count-based reference: a modified Kneser-Ney 5-gram built with KenLM's lmplz.

lmplz refuses a literal `<unk>` in its text (it reserves that name for words it has never
seen), so copies of the three files spell it `_unk_`: an ordinary in-vocabulary word, as
the neural models treat it. (`_unk_` cannot occur otherwise: prepare.py splits `_` off as
a token of its own.) The model is `lmplz -o 5` on train.txt; `query -v summary` then scores
valid.txt and test.txt. Perplexity covers every word and one `</s>` per line, over the
whole file: each line from an empty context (`<s>`), as `lmcli eval` without --stream.

Needs lmplz and query: `bash benchmarks/quality/kenlm.sh` builds them.

    python benchmarks/quality/kn5.py --data benchmarks/.cache/quality --out kn5.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNK, UNK_FOR_KENLM = "<unk>", "_unk_"
MODEL_NAME = "KenLM modified Kneser-Ney 5-gram (kenlm 0.3.0 from PyPI)"


def copy_for_kenlm(source: Path, target: Path) -> None:
    """Write `source` with every `<unk>` token spelt `_unk_`."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if UNK_FOR_KENLM in words:
            raise SystemExit(f"{source}: already holds {UNK_FOR_KENLM!r}, which stands for {UNK!r} here")
        lines.append(" ".join(UNK_FOR_KENLM if word == UNK else word for word in words))
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def query(binary: Path, model: Path, text: Path) -> dict[str, float]:
    """KenLM's summary of `text`: perplexity including OOVs, OOVs, tokens (`</s>` included)."""
    with open(text, "rb") as stdin:
        output = subprocess.run([str(binary), "-v", "summary", str(model)], stdin=stdin,
                                capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^([A-Za-z ]+):\t(\S+)$", output, flags=re.MULTILINE))
    try:
        return {"ppl": float(fields["Perplexity including OOVs"]), "oov": int(fields["OOVs"]),
                "tokens": int(fields["Tokens"])}
    except KeyError as missing:
        raise SystemExit(f"query printed no {missing} line:\n{output}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / ".cache" / "quality",
                        help="folder with train.txt, valid.txt, test.txt and stats.json")
    parser.add_argument("--kenlm", type=Path, default=REPO / "benchmarks" / ".cache" / "kenlm" / "bin",
                        help="folder with the lmplz and query binaries")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the copies and the ARPA model (default: DATA/kn5)")
    parser.add_argument("--memory", default="1G", help="lmplz -S: memory for sorting")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    for binary in ("lmplz", "query"):
        if not (args.kenlm / binary).is_file():
            raise SystemExit(f"no {args.kenlm / binary}: run `bash benchmarks/quality/kenlm.sh` first")
    work = args.work or args.data / "kn5"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        copy_for_kenlm(args.data / f"{name}.txt", work / f"{name}.txt")

    arpa = work / "kn5.arpa"
    with open(work / "train.txt", "rb") as stdin, open(work / "lmplz.log", "w") as log:
        subprocess.run([str(args.kenlm / "lmplz"), "-o", "5", "-S", args.memory, "-T", str(work),
                        "--arpa", str(arpa)], stdin=stdin, stderr=log, check=True)
    valid = query(args.kenlm / "query", arpa, work / "valid.txt")
    test = query(args.kenlm / "query", arpa, work / "test.txt")

    # Every test word is a training word (or <unk>), and query counts one </s> per line.
    stats = json.loads((args.data / "stats.json").read_text(encoding="utf-8"))
    for name, summary in (("valid", valid), ("test", test)):
        expected = stats[name]["words"] + stats[name]["lines"]
        if summary["tokens"] != expected or summary["oov"]:
            raise SystemExit(f"{name}: query counted {summary['tokens']} tokens and {summary['oov']} "
                             f"OOVs; stats.json gives {expected} words + lines and no OOVs")
    result = {"model": MODEL_NAME, "test_ppl": test["ppl"], "valid_ppl": valid["ppl"],
              "test_tokens": test["tokens"], "valid_tokens": valid["tokens"], "order": 5,
              "arpa": str(arpa)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
