"""Ranking metrics over a run and its qrels, and what a random ranking would score.

A *run* maps a query id to its ranked document ids; *qrels* map a query id to graded
judgements (document id -> integer score; a score of 1 or more means relevant).

Per query: ``P@k``, ``R@k``, ``MRR@k``, ``nDCG@k`` for each k, and ``AP`` over the whole returned
ranking. Averaged over queries the last one is called ``MAP``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_KS",
    "Evaluation",
    "Qrels",
    "Run",
    "average_precision",
    "chance_levels",
    "evaluate",
    "metric_names",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "query_chance",
    "query_metrics",
    "recall_at_k",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]


def _dedupe(ranking: Iterable[str]) -> list[str]:
    # A document returned twice (say once per image of a product) must not count twice.
    return list(dict.fromkeys(ranking))


def _relevant(grades: Mapping[str, int]) -> set[str]:
    return {doc for doc, grade in grades.items() if grade > 0}


def precision_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant documents in the top k, over k (a ranking shorter than k is not excused)."""
    return sum(doc in relevant for doc in ranking[:k]) / k


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant documents in the top k, over all relevant documents."""
    if not relevant:
        return 0.0
    return sum(doc in relevant for doc in ranking[:k]) / len(relevant)


def mrr_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """One over the rank of the first relevant document, 0 if none is in the top k."""
    for rank, doc in enumerate(ranking[:k], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """DCG of the top k with linear gains (the qrels score), over the best possible DCG."""
    positive = sorted((g for g in grades.values() if g > 0), reverse=True)
    ideal = _dcg(positive[:k])
    if ideal == 0:
        return 0.0
    return _dcg(max(grades.get(doc, 0), 0) for doc in ranking[:k]) / ideal


def average_precision(ranking: Sequence[str], relevant: Collection[str]) -> float:
    """Mean of the precision at each relevant hit, over the number of relevant documents.

    Relevant documents the ranking never returns contribute 0, so a short ranking is penalised.
    """
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranking, start=1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """The averaged metric names in display order."""
    names = [f"{name}@{k}" for name in ("P", "R", "MRR", "nDCG") for k in ks]
    return [*names, "MAP"]


def query_metrics(
    ranking: Sequence[str], grades: Mapping[str, int], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """All metrics of one query; ``AP`` is its average precision."""
    ranking = _dedupe(ranking)
    relevant = _relevant(grades)
    out: dict[str, float] = {}
    for k in ks:
        out[f"P@{k}"] = precision_at_k(ranking, relevant, k)
    for k in ks:
        out[f"R@{k}"] = recall_at_k(ranking, relevant, k)
    for k in ks:
        out[f"MRR@{k}"] = mrr_at_k(ranking, relevant, k)
    for k in ks:
        out[f"nDCG@{k}"] = ndcg_at_k(ranking, grades, k)
    out["AP"] = average_precision(ranking, relevant)
    return out


def _mean(per_query: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> dict[str, float]:
    names = metric_names(ks)
    if not per_query:
        return {name: 0.0 for name in names}
    rows = list(per_query.values())
    return {
        name: sum(row["AP" if name == "MAP" else name] for row in rows) / len(rows)
        for name in names
    }


@dataclass(frozen=True)
class Evaluation:
    """Averaged and per-query metrics of one run."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    skipped: tuple[str, ...]
    """Queries of the run or the qrels with no relevant document: they cannot be scored."""
    missing: tuple[str, ...]
    """Judged queries absent from the run: scored as an empty ranking (all zeros)."""

    @property
    def n_queries(self) -> int:
        return len(self.per_query)


def evaluate(
    run: Run,
    qrels: Qrels,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    exclude: Mapping[str, Collection[str]] | None = None,
) -> Evaluation:
    """Scores every query that has at least one relevant document.

    ``exclude`` names documents to drop from a query's ranking before scoring, e.g. the product
    whose photo is the query. A judged query missing from the run counts as zeros rather than
    vanishing, so pass the qrels of exactly the queries that were run.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive, got {list(ks)}")
    exclude = exclude or {}
    per_query: dict[str, dict[str, float]] = {}
    skipped = sorted(q for q in set(run) | set(qrels) if not _relevant(qrels.get(q, {})))
    missing: list[str] = []
    for query_id, grades in qrels.items():
        if not _relevant(grades):
            continue
        if query_id not in run:
            missing.append(query_id)
        dropped = exclude.get(query_id, ())
        ranking = [doc for doc in run.get(query_id, ()) if doc not in dropped]
        per_query[query_id] = query_metrics(ranking, grades, ks)
    return Evaluation(_mean(per_query, ks), per_query, tuple(skipped), tuple(sorted(missing)))


def query_chance(
    grades: Sequence[int],
    corpus_size: int,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    depth: int | None = None,
) -> dict[str, float]:
    """Expected metrics of one query under a uniformly random ranking of the corpus (exact).

    ``grades`` are the query's relevance scores (those <= 0 are ignored); ``depth`` is how many
    documents the ranking returns (the whole corpus by default), which matters for ``AP``.
    """
    positive = sorted((g for g in grades if g > 0), reverse=True)
    n, r = corpus_size, len(positive)
    if r == 0:
        raise ValueError("a query without relevant documents has no chance level")
    if r > n:
        raise ValueError(f"{r} relevant documents cannot fit a corpus of {n}")
    depth = n if depth is None else min(depth, n)

    # q[i] = P(no relevant document among the first i); the first hit is at i with q[i-1]-q[i].
    q = [1.0]
    for i in range(min(max(ks), n)):
        q.append(q[-1] * max(n - r - i, 0) / (n - i))
    discounts = [1.0 / math.log2(i + 1) for i in range(1, max(ks) + 1)]
    mean_gain = sum(positive) / n  # every position holds each document with probability 1/n

    out: dict[str, float] = {}
    for k in ks:
        out[f"P@{k}"] = min(k, depth) * r / n / k
    for k in ks:
        out[f"R@{k}"] = min(k, depth) / n
    for k in ks:
        m = min(k, depth)
        out[f"MRR@{k}"] = sum((q[i - 1] - q[i]) / i for i in range(1, m + 1))
    for k in ks:
        m = min(k, depth)
        out[f"nDCG@{k}"] = mean_gain * sum(discounts[:m]) / _dcg(positive[:k])
    # E[rel_i * hits_i] = r/n + (i-1) r(r-1)/(n(n-1)); summing (1/i) of it over i <= depth, / r.
    harmonic = sum(1.0 / i for i in range(1, depth + 1))
    pair = (r - 1) / (n * (n - 1)) if n > 1 else 0.0
    out["AP"] = harmonic / n + pair * (depth - harmonic)
    return out


def chance_levels(
    qrels: Qrels,
    corpus_size: int,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    depth: int | None = None,
    exclude: Mapping[str, Collection[str]] | None = None,
) -> dict[str, float]:
    """Chance level of each averaged metric over the queries that ``evaluate`` would score.

    Excluded documents leave a query's candidate pool, so its corpus shrinks by their number.
    """
    exclude = exclude or {}
    per_query = {
        query_id: query_chance(
            list(grades.values()),
            corpus_size - len(exclude.get(query_id, ())),
            ks,
            depth=depth,
        )
        for query_id, grades in qrels.items()
        if _relevant(grades)
    }
    return _mean(per_query, ks)
