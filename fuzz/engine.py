"""Runs one parser's target under atheris (libFuzzer, coverage-guided): `python -m fuzz.engine PARSER LIBFUZZER-ARGS`.

A finding (any exception but the parser's ValueError) is saved under fuzz/findings/PARSER/, one file per
distinct exception, and counted; the run goes on. The last line printed is the JSON summary the campaign reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["shared", "services", "fuzz"]):
    from fuzz.targets import targets

FINDINGS = Path(__file__).parent / "findings"


class Counted:
    """Calls a target, counting inputs and saving each distinct finding once."""

    def __init__(self, parser: str, runs: int) -> None:
        self.parser, self.runs = parser, runs
        self.target = targets()[parser]
        self.inputs = 0
        self.findings: dict[str, str] = {}
        self.started = time.monotonic()

    def __call__(self, data: bytes) -> None:
        """One input."""
        self.inputs += 1
        try:
            self.target(data)
            if self.inputs == self.runs:  # libFuzzer exits from C right after: no Python finally or atexit runs
                print(json.dumps(self.summary()), flush=True)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            if key not in self.findings:
                self.findings[key] = str(exc)[:200]
                folder = FINDINGS / self.parser
                folder.mkdir(parents=True, exist_ok=True)
                (folder / hashlib.sha1(key.encode()).hexdigest()[:16]).write_bytes(data)
                print(f"finding in {self.parser}: {key}: {exc!r}"[:300], file=sys.stderr, flush=True)

    def summary(self) -> dict[str, object]:
        """What the campaign prints for this parser."""
        seconds = time.monotonic() - self.started
        return {
            "parser": self.parser,
            "inputs": self.inputs,
            "seconds": round(seconds, 1),
            "inputs_per_s": round(self.inputs / seconds) if seconds else 0,
            "findings": self.findings,
        }


def main() -> None:
    """Fuzz one parser until libFuzzer's -runs are done; the summary is printed as the last input is done."""
    parser, args = sys.argv[1], sys.argv[2:]
    logging.disable(logging.CRITICAL)  # a parser's refusals are logged: a line per input would be the run's cost
    runs = next((int(arg.split("=", 1)[1]) for arg in args if arg.startswith("-runs=")), -1)
    # libFuzzer runs its argv[0] again for -merge: the campaign's launcher script, not this module's file.
    atheris.Setup([os.environ.get("FUZZ_LAUNCHER", sys.argv[0]), *args], Counted(parser, runs))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
