"""Rendering of evaluation results: text table, JSON and the PNG bar plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopvec.evaluation.report import CHANCE_ROW, plot_bars, render_json, render_table

RESULTS = {
    "text->image": {
        "offline": {"P@1": 0.5, "nDCG@10": 0.41234, "MAP": 0.3},
        "clip": {"P@1": 0.75, "nDCG@10": 0.6},
    },
    "image->image": {"offline": {"P@1": 0.9, "MAP": 0.7}},
}
CHANCE = {"text->image": {"P@1": 0.001, "nDCG@10": 0.004, "MAP": 0.0076}}


def test_table() -> None:
    text = render_table(RESULTS, CHANCE)
    lines = text.splitlines()
    assert lines[0] == "== text->image =="
    assert lines[1].split() == ["method", "P@1", "nDCG@10", "MAP"]
    assert lines[3].split() == ["offline", "0.500", "0.412", "0.300"]
    assert lines[4].split() == ["clip", "0.750", "0.600", "-"]
    assert lines[5].split() == [CHANCE_ROW, "0.001", "0.004", "0.008"]
    assert "== image->image ==" in text
    assert CHANCE_ROW not in text.split("== image->image ==")[1]
    # Columns line up: every row of a block is as wide as its header.
    assert len({len(line) for line in lines[1:6]}) == 1


def test_table_with_chosen_metrics() -> None:
    text = render_table(RESULTS, metrics=["MAP"], digits=2)
    assert "nDCG" not in text and "0.70" in text


def test_json_round_trip() -> None:
    data = json.loads(render_json(RESULTS, CHANCE))
    assert data["results"] == RESULTS
    assert data["chance"] == CHANCE
    assert json.loads(render_json(RESULTS))["chance"] == {}


def test_png(tmp_path: Path) -> None:
    path = plot_bars(RESULTS, tmp_path / "plots" / "bars.png", CHANCE, title="dev set")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_bars({}, tmp_path / "empty.png")
