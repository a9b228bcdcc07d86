"""Ranking metrics against values worked out by hand, and chance levels against simulation."""

from __future__ import annotations

import math
import random

import pytest

from shopvec.evaluation.metrics import (
    average_precision,
    chance_levels,
    evaluate,
    metric_names,
    ndcg_at_k,
    query_chance,
    query_metrics,
)

# Relevant: d1, d3, d5. d1 at rank 1, d3 at rank 3, d5 never returned.
BINARY_RUN = ["d1", "d2", "d3", "d4", "d6", "d7", "d8", "d9", "d10", "d11"]
BINARY_QRELS = {"d1": 1, "d3": 1, "d5": 1}

# Graded: a=3, b=2, c=1; the run puts the least relevant first.
GRADED_RUN = ["c", "x", "a", "b"]
GRADED_QRELS = {"a": 3, "b": 2, "c": 1}


def test_binary_query_by_hand() -> None:
    m = query_metrics(BINARY_RUN, BINARY_QRELS)
    assert m["P@1"] == 1.0
    assert m["P@5"] == pytest.approx(2 / 5)
    assert m["P@10"] == pytest.approx(2 / 10)
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@5"] == pytest.approx(2 / 3)
    assert m["R@10"] == pytest.approx(2 / 3)
    assert m["MRR@1"] == m["MRR@10"] == 1.0
    # Precision at the hits: 1/1 and 2/3; d5 is missed and counts 0; three relevant in all.
    assert m["AP"] == pytest.approx((1 + 2 / 3) / 3)


def test_graded_ndcg_by_hand() -> None:
    dcg = 1 / math.log2(2) + 0 + 3 / math.log2(4) + 2 / math.log2(5)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(GRADED_RUN, GRADED_QRELS, 5) == pytest.approx(dcg / ideal)
    assert dcg / ideal == pytest.approx(0.70589, abs=1e-5)
    assert ndcg_at_k(GRADED_RUN, GRADED_QRELS, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(["a", "b", "c"], GRADED_QRELS, 3) == pytest.approx(1.0)


def test_graded_query_other_metrics() -> None:
    m = query_metrics(GRADED_RUN, GRADED_QRELS)
    assert m["MRR@1"] == 1.0  # any positive grade is relevant, c included
    assert m["P@5"] == pytest.approx(3 / 5)
    assert m["AP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)


def test_average_precision_edges() -> None:
    assert average_precision([], {"a"}) == 0.0
    assert average_precision(["x", "a"], {"a"}) == pytest.approx(0.5)
    assert average_precision(["a", "b"], {"a", "b"}) == 1.0


def test_duplicates_and_non_positive_grades() -> None:
    m = query_metrics(["a", "a", "b"], {"a": 1, "b": 0, "z": -1})
    # The repeated a is dropped, so b (grade 0: not relevant) takes rank 2.
    assert m["P@5"] == pytest.approx(1 / 5)
    assert m["R@1"] == 1.0
    assert m["AP"] == 1.0


def test_evaluate_averages_skips_and_missing() -> None:
    run = {"q1": BINARY_RUN, "q2": GRADED_RUN, "q_unjudged": ["d1"], "q_zero": ["d1"]}
    qrels = {"q1": BINARY_QRELS, "q2": GRADED_QRELS, "q_zero": {"d1": 0}, "q_missing": {"d1": 1}}
    result = evaluate(run, qrels)
    assert result.n_queries == 3
    assert result.skipped == ("q_unjudged", "q_zero")
    assert result.missing == ("q_missing",)
    assert result.per_query["q_missing"]["AP"] == 0.0
    assert list(result.means) == metric_names()
    expected_map = ((1 + 2 / 3) / 3 + (1 + 2 / 3 + 3 / 4) / 3 + 0) / 3
    assert result.means["MAP"] == pytest.approx(expected_map)
    assert result.means["P@1"] == pytest.approx(2 / 3)


def test_evaluate_drops_excluded_documents() -> None:
    run = {"q": ["self", "a", "x", "b"]}
    qrels = {"q": {"a": 1, "b": 1}}
    plain = evaluate(run, qrels, ks=(1,))
    dropped = evaluate(run, qrels, ks=(1,), exclude={"q": {"self"}})
    assert plain.means["P@1"] == 0.0
    assert dropped.means["P@1"] == 1.0
    assert dropped.means["MAP"] == pytest.approx((1 + 2 / 3) / 2)


def test_evaluate_refuses_bad_cut_off() -> None:
    with pytest.raises(ValueError, match="positive"):
        evaluate({}, {}, ks=(0,))


def _simulated(grades: dict[str, int], corpus_size: int, trials: int) -> dict[str, float]:
    rng = random.Random(7)
    docs = list(grades) + [f"n{i}" for i in range(corpus_size - len(grades))]
    totals: dict[str, float] = {}
    for _ in range(trials):
        rng.shuffle(docs)
        for name, value in query_metrics(docs, grades).items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: total / trials for name, total in totals.items()}


def test_chance_matches_simulation() -> None:
    grades = {"a": 2, "b": 1, "c": 1}
    exact = query_chance(list(grades.values()), 20)
    simulated = _simulated(grades, 20, trials=3000)
    assert exact.keys() == simulated.keys()
    for name, value in exact.items():
        assert value == pytest.approx(simulated[name], abs=0.03), name


def test_chance_closed_forms_and_bounds() -> None:
    c = query_chance([1, 1], 100)
    assert c["P@10"] == pytest.approx(2 / 100)
    assert c["R@10"] == pytest.approx(10 / 100)
    assert c["MRR@1"] == pytest.approx(2 / 100)
    assert all(0.0 < v < 0.2 for v in c.values())
    assert c["R@1"] < c["R@5"] < c["R@10"]
    # Every document relevant with one grade: any order is as good as the best one.
    full = query_chance([1] * 5, 5)
    for name in ("P@1", "P@5", "MRR@1", "MRR@10", "nDCG@1", "nDCG@10", "AP", "R@5"):
        assert full[name] == pytest.approx(1.0), name
    assert full["P@10"] == pytest.approx(5 / 10)
    assert full["R@1"] == pytest.approx(1 / 5)
    # A ranking cut short can only lose average precision.
    assert query_chance([1, 1], 100, depth=10)["AP"] < c["AP"]


def test_chance_levels_average_and_exclusion() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1, "b": 1}, "q_zero": {"a": 0}}
    levels = chance_levels(qrels, 10, ks=(1,))
    assert levels["P@1"] == pytest.approx((1 / 10 + 2 / 10) / 2)
    shrunk = chance_levels({"q": {"a": 1}}, 10, ks=(1,), exclude={"q": {"self"}})
    assert shrunk["P@1"] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="cannot fit"):
        query_chance([1, 1, 1], 2)
