"""`make fuzz`: a long campaign against every parser, then inputs/s and findings per parser.

Coverage-guided with atheris (libFuzzer) when it is installed (`pip install -e '.[fuzz]'`), else Hypothesis
drawing bytes. Each parser starts from its kept corpus, fuzz/corpus/PARSER/ (fuzz/seeds.py when that is
empty); after the run libFuzzer merges what it had with what reached new code into the fewest inputs that
cover as much (`-merge=1`), and those, at most MAX_LEN bytes each, are kept there. Findings are saved in
fuzz/findings/PARSER/ (not kept in git: fix each, with a regression test). Exit status 1 when any was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.seeds import seeds
from fuzz.targets import targets

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
MAX_LEN = 2048


def engine() -> str:
    """atheris when it imports, else hypothesis."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "hypothesis"
    return "atheris"


def fill(folder: Path, inputs: list[bytes]) -> None:
    """Write inputs into a corpus folder, each named by its SHA-1 as libFuzzer names them."""
    folder.mkdir(parents=True, exist_ok=True)
    for data in inputs:
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def starting_corpus(parser: str) -> list[bytes]:
    """The kept corpus, or the seeds when nothing is kept yet."""
    kept = [path.read_bytes() for path in sorted((CORPUS / parser).glob("*"))]
    return kept or seeds()[parser]


def launcher(parser: str, folder: Path) -> Path:
    """A script that runs the engine on one parser: libFuzzer runs it again to merge (minimise) a corpus."""
    script = folder / f"fuzz-{parser}"
    script.write_text(f'#!/bin/sh\ncd "{HERE.parent}" && exec "{sys.executable}" -m fuzz.engine {parser} "$@"\n')
    script.chmod(0o755)
    return script


def run_atheris(parser: str, runs: int) -> dict[str, object]:
    """One parser under libFuzzer, then its corpus merged to the fewest inputs that keep all the coverage."""
    with tempfile.TemporaryDirectory() as temp:
        work, merged, script = Path(temp) / "work", Path(temp) / "merged", launcher(parser, Path(temp))
        fill(work, starting_corpus(parser))
        merged.mkdir()
        env = {**os.environ, "FUZZ_LAUNCHER": str(script)}
        command = [str(script), f"-runs={runs}", f"-max_len={MAX_LEN}", "-print_final_stats=0", str(work)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"fuzzing {parser} stopped early (exit {done.returncode}):\n{done.stderr[-2000:]}")
        merge = [str(script), "-merge=1", str(merged), str(work)]
        done = subprocess.run(merge, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0 or not any(merged.iterdir()):
            raise RuntimeError(f"merging {parser}'s corpus failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        shutil.rmtree(CORPUS / parser, ignore_errors=True)
        fill(CORPUS / parser, [path.read_bytes() for path in merged.iterdir()])
    summary: dict[str, object] = json.loads(lines[-1])
    return summary


def run_hypothesis(parser: str, runs: int) -> dict[str, object]:
    """One parser fed Hypothesis's bytes (no coverage guidance), the kept corpus first."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    logging.disable(logging.CRITICAL)
    target, count = targets()[parser], [0]
    findings: dict[str, str] = {}

    def once(data: bytes) -> None:
        count[0] += 1
        try:
            target(data)
        except Exception as exc:
            findings.setdefault(type(exc).__name__, str(exc)[:200])
            fill(HERE / "findings" / parser, [data])

    started = time.monotonic()
    for data in starting_corpus(parser):
        once(data)
    run = settings(max_examples=runs, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    run(given(st.binary(max_size=MAX_LEN))(once))()
    seconds = time.monotonic() - started
    return {
        "parser": parser,
        "inputs": count[0],
        "seconds": round(seconds, 1),
        "inputs_per_s": round(count[0] / seconds),
        "findings": findings,
    }


def main(argv: list[str] | None = None) -> int:
    """Fuzz the parsers named (all by default) and print a line per parser."""
    parser = argparse.ArgumentParser(prog="python -m fuzz.campaign", description=main.__doc__)
    parser.add_argument("parsers", nargs="*", default=sorted(targets()))
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per parser")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=engine())
    args = parser.parse_args(argv)
    run = run_atheris if args.engine == "atheris" else run_hypothesis
    print(
        f"{'parser':10} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} {'kept':>5}  findings ({args.engine})", flush=True
    )
    found = 0
    for name in args.parsers:
        summary = run(name, args.runs)
        findings = summary["findings"]
        assert isinstance(findings, dict)
        found += len(findings)
        kept = len(list((CORPUS / name).glob("*")))
        print(
            f"{name:10} {summary['inputs']:>10} {summary['seconds']:>8} {summary['inputs_per_s']:>9} {kept:>5}  "
            + ("; ".join(f"{k}: {v}" for k, v in findings.items()) or "none"),
            flush=True,
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
