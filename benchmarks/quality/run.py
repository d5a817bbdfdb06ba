"""Run the model-quality benchmark and write benchmarks/RESULTS.md.

Components, run one after another (never in parallel: they time themselves), each leaving
RESULTS/NAME.json; a component whose JSON is already there is skipped unless --rerun:

- kn5: KenLM's modified Kneser-Ney 5-gram (kenlm.sh builds the binaries, kn5.py scores).
- baseline-word: PyTorch's word_language_model defaults (baseline_lstm.py --level word).
- plain-char: the same LSTM on characters (baseline_lstm.py --level char).
- every entry of LMCLI_COMPONENTS: `lmcli train` for --minutes with those flags, then
  `lmcli eval` on the test file, sentence by sentence (each line from an empty context)
  and as one stream (--stream, the state carried across lines).

The corpus is benchmarks/.cache/quality (prepare.py builds it). RESULTS.md is written at
the end of every run and by --report-only, from the stored JSONs alone.

    python benchmarks/quality/run.py --minutes 15
    python benchmarks/quality/run.py --only lmcli-word --rerun
    python benchmarks/quality/run.py --report-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components import (DATA, DEFAULT_COMPONENTS, DEFAULT_REPORT, DEFAULT_RESULTS, HERE, LMCLI_COMPONENTS,
                        LONGER_REFERENCES, REPO, component_minutes, components, machine, now_utc,
                        seeded, split_seed)
from report import clock, write_report


def native_bf16_here() -> bool:
    """Whether `lmcli train` runs this CPU under bf16 autocast by default: the baselines then
    train under the same autocast, so that neither side gets the faster arithmetic alone."""
    sys.path.insert(0, str(REPO))
    from lmcli.devices import native_bf16
    import torch
    return native_bf16(torch.device("cpu"))


def shown(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A command as a person would type it in the repository root."""
    words = ["python" if word == sys.executable else
             str(Path(word).relative_to(REPO)) if word.startswith(f"{REPO}{os.sep}") else word
             for word in argv]
    return shlex.join([f"{key}={value}" for key, value in (env or {}).items()] + words)


def log(message: str) -> None:
    print(f"[run.py {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {message}", file=sys.stderr, flush=True)



class Runner:
    """Runs the components' commands, each with its output appended to RESULTS/logs/NAME.log."""

    def __init__(self, data: Path, results: Path, runs: Path, minutes: float, kenlm_dir: Path,
                 command: str) -> None:
        self.data, self.results, self.runs, self.minutes = data, results, runs, minutes
        self.kenlm_dir, self.command = kenlm_dir, command
        self.logs = results / "logs"

    def call(self, name: str, argv: list[str], env: dict[str, str] | None = None,
             cwd: Path = REPO, capture: bool = False) -> str:
        """Run argv with its output appended to the log as it comes; with `capture`, stdout
        is also returned (and logged when the command ends)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "a", encoding="utf-8") as handle:
            handle.write(f"\n$ {shlex.join(argv)}\n")
            handle.flush()
            process = subprocess.run(argv, stdout=subprocess.PIPE if capture else handle, stderr=handle,
                                     text=True, cwd=cwd, env={**os.environ, **(env or {})})
            handle.write(process.stdout or "")
        if process.returncode:
            raise RuntimeError(f"{shlex.join(argv)} exited with {process.returncode} "
                               f"(see {self.logs / f'{name}.log'})")
        return process.stdout or ""

    def run(self, name: str) -> dict[str, Any]:
        started = time.perf_counter()
        base, seed = split_seed(name)
        if base == "kn5":
            result, commands = self.kn5()
        elif base in ("baseline-word", "plain-char", *LONGER_REFERENCES):
            result, commands = self.baseline(name, "word" if base.startswith("baseline-word") else "char",
                                             seed)
        else:
            flags = LMCLI_COMPONENTS[base] + (["--seed", str(seed)] if seed is not None else [])
            result, commands = self.lmcli(name, flags)
        return {"component": name, "base": base, "seed": seed, **result, "data": str(self.data), "commands": commands,
                "wall_seconds": time.perf_counter() - started, "finished": now_utc(),
                "runner_command": self.command, "machine": machine()}

    def kn5(self) -> tuple[dict[str, Any], list[str]]:
        part = self.results / "kn5.part.json"
        script = ["bash", str(HERE / "kenlm.sh")]
        script_env = {"KENLM_DIR": str(self.kenlm_dir)}
        score = [sys.executable, str(HERE / "kn5.py"), "--data", str(self.data),
                 "--kenlm", str(self.kenlm_dir / "bin"), "--out", str(part)]
        self.call("kn5", script, env={**script_env, "PYTHON": sys.executable})
        self.call("kn5", score)
        result = json.loads(part.read_text(encoding="utf-8"))
        part.unlink()
        default = self.kenlm_dir == REPO / "benchmarks" / ".cache" / "kenlm"
        return result, [shown(script, None if default else script_env), shown(score)]

    def baseline(self, name: str, level: str, seed: int | None) -> tuple[dict[str, Any], list[str]]:
        part = self.results / f"{name}.part.json"
        argv = [sys.executable, str(HERE / "baseline_lstm.py"), "--data", str(self.data), "--level", level,
                "--minutes", f"{component_minutes(split_seed(name)[0], self.minutes):g}", "--out", str(part)]
        argv += ["--seed", str(seed)] if seed is not None else []
        argv += ["--amp"] if native_bf16_here() else []
        self.call(name, argv)
        result = json.loads(part.read_text(encoding="utf-8"))
        part.unlink()
        return result, [shown(argv)]

    def lmcli(self, name: str, flags: list[str]) -> tuple[dict[str, Any], list[str]]:
        run_dir = self.runs / name
        minutes = component_minutes(split_seed(name)[0], self.minutes)
        self.runs.mkdir(parents=True, exist_ok=True)
        lmcli = [sys.executable, "-m", "lmcli"]
        # cwd = the runs folder: `lmcli train` records its run in ./checkpoints/LATEST, which
        # must not replace the one of whoever uses lmcli in the repository meanwhile.
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        train = lmcli + ["train", str(self.data / "train.txt"), "--valid", str(self.data / "valid.txt"),
                         "--time-limit", f"{minutes:g}m", "-o", str(run_dir), "--force",
                         "--json", *flags]
        sentence = lmcli + ["eval", str(self.data / "test.txt"), "-c", str(run_dir), "--json"]
        stream = sentence + ["--stream"]
        info = lmcli + ["info", "-c", str(run_dir), "--json"]
        started = time.perf_counter()
        self.call(name, train, env=env, cwd=self.runs)
        train_wall = time.perf_counter() - started
        summary = last_json(self.call(name, info, env=env, cwd=self.runs, capture=True))
        evals = {mode: last_json(self.call(name, argv, env=env, cwd=self.runs, capture=True))
                 for mode, argv in (("sentence", sentence), ("stream", stream))}
        metrics = [json.loads(line) for line in
                   (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        curve = [{"time": m["time"], "step": m.get("step"), "perplexity": m.get("perplexity")}
                 for m in metrics if m.get("event") == "valid"]
        ends = [m for m in metrics if m.get("event") == "end"]
        train_seconds = ends[-1]["time"] if ends else None
        tokens_seen = summary.get("tokens_seen")
        result = {
            "model": f"lmcli {shlex.join(flags)}".strip(),
            "level": summary.get("level"),
            "flags": flags,
            "minutes": minutes,
            "train_wall_seconds": train_wall,
            "train_seconds": train_seconds,
            "train_tokens_seen": tokens_seen,
            "tokens_per_second": tokens_seen / train_seconds if tokens_seen and train_seconds else None,
            "parameters": summary.get("parameters"),
            "vocab_size": summary.get("vocab_size"),
            "end_reason": ends[-1].get("reason") if ends else None,
            "sentence": evals["sentence"],
            "stream": evals["stream"],
            "valid_curve": curve,
            "run_dir": str(run_dir),
        }
        return result, [shown(argv) for argv in (train, info, sentence, stream)]


def last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"expected a JSON line on stdout, got: {stdout[-500:]!r}")
    return json.loads(lines[-1])



# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="components: " + ", ".join(components()))
    parser.add_argument("--minutes", type=float, default=15.0, help="training time per model")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these components")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N",
                        help="run each chosen component once per seed, as NAME-sN (kn5 has none)")
    parser.add_argument("--rerun", action="store_true", help="run components whose JSON exists")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the corpus: train.txt, valid.txt, test.txt, stats.json (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="folder of the result JSONs (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="lmcli run folders (default: benchmarks/.cache/quality/runs, or "
                             "RESULTS/runs when --results is given)")
    parser.add_argument("--report", type=Path, default=None,
                        help="the report (default: benchmarks/RESULTS.md, or RESULTS/RESULTS.md "
                             "when --results is given)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run this many timed components at once, side by side (2: each "
                             "model with its reference, under the same load); kn5 runs alone first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per component (OMP_NUM_THREADS); with --jobs 2 on a "
                             "2-core machine use 1, so the pair never oversubscribes the cores")
    parser.add_argument("--kenlm-dir", type=Path, default=REPO / "benchmarks" / ".cache" / "kenlm",
                        help="where kenlm.sh builds KenLM (its binaries in DIR/bin)")
    args = parser.parse_args()
    data, results = args.data.resolve(), args.results.resolve()
    default_results = results == DEFAULT_RESULTS.resolve()
    runs = (args.runs or (DATA / "runs" if default_results else results / "runs")).resolve()
    report = (args.report or (DEFAULT_REPORT if default_results else results / "RESULTS.md")).resolve()
    command = shlex.join(["python", str(Path(sys.argv[0]).resolve().relative_to(REPO))
                          if Path(sys.argv[0]).resolve().is_relative_to(REPO) else sys.argv[0],
                          *sys.argv[1:]])
    unknown = [name for name in args.only or [] if split_seed(name)[0] not in components()]
    if unknown:
        parser.error(f"unknown component {', '.join(unknown)}; known: {', '.join(components())}")

    failed = []
    if not args.report_only:
        if not (data / "train.txt").exists():
            raise SystemExit(f"no corpus in {data}: run python benchmarks/quality/prepare.py first")
        results.mkdir(parents=True, exist_ok=True)
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        runner = Runner(data, results, runs, args.minutes, args.kenlm_dir.resolve(), command)

        def one(name: str) -> None:
            target = results / f"{name}.json"
            if target.exists() and not args.rerun:
                log(f"{name}: {target} exists, skipped (--rerun to run it again)")
                return
            log(f"{name}: running (log: {results / 'logs' / f'{name}.log'})")
            try:
                result = runner.run(name)
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                log(f"{name}: FAILED: {error}")
                failed.append(name)
                return
            result["threads"] = args.threads
            result["side_by_side"] = args.jobs
            partial = target.with_suffix(".tmp")
            partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            partial.replace(target)
            log(f"{name}: done in {clock(result['wall_seconds'])}, {target}")

        chosen = seeded([name for name in components() if name in (args.only or DEFAULT_COMPONENTS)],
                        args.seeds)
        if "kn5" in chosen:
            one("kn5")
            chosen.remove("kn5")
        for first in range(0, len(chosen), max(1, args.jobs)):
            group = [threading.Thread(target=one, args=(name,)) for name in chosen[first:first + args.jobs]]
            for thread in group:
                thread.start()
            for thread in group:
                thread.join()
    text = write_report(results, report, command, data)
    if report == DEFAULT_REPORT.resolve():
        from readme_figures import update
        update()
    print(text)
    log(f"report: {report}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
