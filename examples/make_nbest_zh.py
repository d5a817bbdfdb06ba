"""Write examples/nbest-zh.jsonl: a small Chinese N-best list for `lmcli rerank`, without
spaces, in simplified characters (as a Mandarin recogniser writes them).

References: lines (half-couplets) of the bundled Tang poems (corpora/tang_poems.txt),
converted to simplified characters with OpenCC. Hypotheses: each reference and four
confusions, one or two characters replaced by a homophone (the same pinyin, tone
ignored, among the corpus's 2,500 commonest characters: what a recogniser confuses). Acoustic scores:
minus one per replaced character plus Gaussian noise (sd 0.8), so the recogniser's own
1-best is often wrong. Fixed seed: the file rebuilds byte-identical.

    python examples/make_nbest_zh.py
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import opencc
from pypinyin import Style, lazy_pinyin

HERE = Path(__file__).resolve().parent
POEMS = HERE.parent / "corpora" / "tang_poems.txt"
UTTERANCES, CONFUSIONS, NOISE = 12, 4, 0.8
COMMON = 2500  # homophones among the corpus's commonest characters: what a recogniser writes


def main() -> None:
    rng = random.Random(7)
    to_simplified = opencc.OpenCC("t2s")
    text = to_simplified.convert(POEMS.read_text(encoding="utf-8"))
    lines = [part for part in re.split(r"[，。？！\n]", text) if len(part) in (5, 7)]
    homophones: dict[str, set[str]] = defaultdict(set)
    for char, _ in Counter("".join(lines)).most_common(COMMON):
        homophones[lazy_pinyin(char, style=Style.NORMAL)[0]].add(char)
    records = []
    for index, ref in enumerate(rng.sample(lines, UTTERANCES)):
        hyps = {ref: rng.gauss(0, NOISE)}
        while len(hyps) < 1 + CONFUSIONS:
            chars, replaced = list(ref), 0
            for position in rng.sample(range(len(chars)), rng.choice((1, 1, 2))):
                sound = lazy_pinyin(chars[position], style=Style.NORMAL)[0]
                others = sorted(homophones[sound] - {chars[position]})
                if others:
                    chars[position] = rng.choice(others)
                    replaced += 1
            if replaced and "".join(chars) not in hyps:
                hyps["".join(chars)] = -replaced + rng.gauss(0, NOISE)
        items = list(hyps.items())
        rng.shuffle(items)
        records.append({"id": f"zh-{index:02d}", "ref": ref,
                        "hyps": [{"text": t, "am_score": round(s, 3)} for t, s in items]})
    out = HERE / "nbest-zh.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {out}: {len(records)} utterances")


if __name__ == "__main__":
    main()
