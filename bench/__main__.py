"""make bench: every benchmark in turn, each a same-run ratio, merged into bench/results.json."""

from __future__ import annotations

import sys

from bench import echo, ingest, observe, report
from shared.curve import use_fresh_keys

BENCHMARKS = {"ingest": ingest.main, "observe": observe.main, "echo": echo.main, "report": report.main}


def main() -> None:
    wanted = sys.argv[1:] or list(BENCHMARKS)
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    sys.argv[1:] = []
    use_fresh_keys()  # every collector and reporter of the run, children too, speaks CurveZMQ as a stack does
    for name in wanted:
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
