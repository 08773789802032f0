"""The README's benchmark figures are bench/results.json's, and a benchmark's save keeps other benchmarks' keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import common, figures

pytestmark = pytest.mark.unit

REQUIRED = {"ingest_ratio", "observe_ratio", "echo_vs_asyncio_ratio", "udp_echo_vs_asyncio_ratio", "report_ms"}


def test_the_readme_shows_the_figures_in_results_json() -> None:
    results = json.loads(common.RESULTS.read_text())
    assert results.keys() >= REQUIRED
    assert set(results["report_ms"]) == set(figures.SIZES)
    readme = Path(__file__).parents[2] / "README.md"
    text = readme.read_text()
    assert figures.rewrite(text, figures.render(results)) == text, "run: python -m bench.figures --write README.md"


def test_saving_merges_keys_and_never_drops_another_benchmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"kill": {"sent": 1, "stored": 1, "lost": 0, "duplicates": 0}, "ingest_ratio": 0.1}))
    monkeypatch.setattr(common, "RESULTS", path)
    common.save({"ingest_ratio": 0.5})
    assert json.loads(path.read_text()) == {
        "kill": {"sent": 1, "stored": 1, "lost": 0, "duplicates": 0},
        "ingest_ratio": 0.5,
    }


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="has no"):
        figures.rewrite("no markers here", "| table |")
