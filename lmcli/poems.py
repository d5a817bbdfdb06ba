"""Writing with a checkpoint: what ``lmcli generate`` does between its options and its output.

It meets the user's text with the model's vocabulary (simplified or traditional Chinese,
converted at this boundary), builds the verse plan from the options and the corpus's
usual shapes (recorded in the checkpoint), loads the novelty index of the run when asked,
samples, and shows the results in the script the user typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmcli import checkpoint as ckpt
from lmcli import script as scripts
from lmcli.errors import InputError
from lmcli.model import RNNLM
from lmcli.novelty import NoveltyIndex, index_for_checkpoint
from lmcli.sampling import Sample, SamplingConfig, generate
from lmcli.forms import usual_shapes
from lmcli.verse import build_plan


@dataclass
class PoemRequest:
    prime: str = ""
    context: str = ""
    num_samples: int = 1
    form: str | None = None
    acrostic: str | None = None
    rhyme: str | None = None
    tones: bool = False
    best_of: int = 1
    novel: bool = False
    script: str = "auto"  # auto (as typed), simplified, traditional, model
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int | None = None


@dataclass
class Written:
    samples: list[Sample]
    warnings: list[str]  # for the user: text of theirs the model cannot read
    script: str  # the script the samples are shown in


def write(loaded: ckpt.Checkpoint, model: RNNLM, request: PoemRequest) -> Written:
    tokenizer = loaded.tokenizer
    converter = loaded.converter
    warnings: list[str] = []
    prime = _readable(converter, request.prime, "prime", warnings)
    context = _readable(converter, request.context, "context", warnings)
    acrostic = None
    if request.acrostic is not None:
        acrostic = scripts.prepare_user_text(request.acrostic, converter, what="acrostic", required=True).text
    shapes = usual_shapes(loaded.payload.get("provenance", {}).get("verse_shapes") or [])
    plan = build_plan(tokenizer, form=request.form, acrostic=acrostic, rhyme=request.rhyme,
                      tones=request.tones, shapes=shapes)
    index = _index(loaded, required=request.novel)
    samples = generate(model, tokenizer, prime=prime, context=context, num_samples=request.num_samples,
                       config=request.sampling, seed=request.seed, plan=plan, best_of=request.best_of,
                       novelty=index if request.novel else None)
    if index is not None and not request.novel:  # not asked to avoid copies, but told of them
        prime_ids = tokenizer.encode(tokenizer.normalize(prime)) if prime else []
        for sample in samples:
            sample.copied = index.check(prime_ids + sample.token_ids)
    typed = [t for t in (request.prime, request.context, request.acrostic or "") if t]
    shown = scripts.choose_display_script(request.script, typed, loaded.script)
    for sample in samples:
        sample.text = converter.to_script(sample.text, shown)
        if sample.lines is not None:
            sample.lines = [converter.to_script(line, shown) for line in sample.lines]
    return Written(samples, warnings, shown)


def _index(loaded: ckpt.Checkpoint, required: bool) -> NoveltyIndex | None:
    """The run's novelty index: required for --novel, else used where it is there."""
    sha = (loaded.payload.get("provenance") or {}).get("corpus_sha256")
    try:
        return NoveltyIndex.load(index_for_checkpoint(loaded.path), loaded.tokenizer, corpus_sha256=sha)
    except InputError:
        if required:
            raise
        return None


def _readable(converter: scripts.ScriptConverter, text: str, what: str, warnings: list[str]) -> str:
    if not text:
        return text
    prepared = scripts.prepare_user_text(text, converter, what=what, required=False)
    if prepared.unknown:
        warnings.append(f"--{what}: {' '.join(prepared.unknown)} not in the model's vocabulary; "
                        "the model reads <UNK> there")
    return prepared.text
