"""The embedded server's BM25 scorer against Milvus Lite's own: the same ids, in the same order
(ties included), with the same float32 distances, on posting lists with repeated documents,
masks and unknown terms, and through a collection's full-text search across flushes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
sparse_inverted = pytest.importorskip("milvus_lite.index.sparse_inverted")
engine = pytest.importorskip("milvus_lite.engine.collection")

from milvus_lite import (  # noqa: E402
    CollectionSchema,
    DataType,
    FieldSchema,
    Function,
    FunctionType,
    MilvusLite,
)

from shopvec.store import lite  # noqa: E402

# From the class's own dict at import: install() may already have replaced the method.
STOCK = sparse_inverted.SparseInvertedIndex.__dict__["search"]
if STOCK is lite._bm25_method:  # pragma: no cover - installed before this module loaded
    pytest.skip("the stock scorer is no longer reachable", allow_module_level=True)


def _docs(rng: np.random.Generator, n: int, vocabulary: int) -> list[dict[int, float]]:
    docs: list[dict[int, float]] = []
    for _ in range(n):
        if docs and rng.random() < 0.3:
            docs.append(dict(docs[int(rng.integers(len(docs)))]))  # ties
            continue
        terms = rng.choice(vocabulary, int(rng.integers(0, 9)), replace=False)
        docs.append({int(t): float(rng.integers(1, 4)) for t in terms})
    return docs


def _queries(rng: np.random.Generator, vocabulary: int) -> list[dict[int, float]]:
    out: list[dict[int, float]] = [{}, {vocabulary + 5: 1.0}]
    for _ in range(12):
        terms = rng.choice(vocabulary + 3, int(rng.integers(1, 6)), replace=False)
        out.append({int(t): float(rng.integers(1, 3)) for t in terms})
    return out


@pytest.mark.parametrize("seed", range(6))
def test_same_ranking_and_distances_as_the_stock_scorer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocabulary = int(rng.integers(5, 60))
    docs = _docs(rng, int(rng.integers(1, 300)), vocabulary)
    built = rng.random(len(docs)) < 0.9
    index = sparse_inverted.SparseInvertedIndex(k1=float(rng.uniform(0.5, 2.0)), b=0.75)
    index.build(docs, valid_mask=built)
    queries = _queries(rng, vocabulary)
    for top_k in (0, 1, 5, len(docs) + 3):
        for mask in (None, rng.random(len(docs)) < 0.6):
            want_ids, want_dists = STOCK(index, queries, top_k, valid_mask=mask)
            got_ids, got_dists = lite.bm25_search(index, queries, top_k, valid_mask=mask)
            assert got_ids.dtype == want_ids.dtype and got_dists.dtype == want_dists.dtype
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(got_dists, want_dists)


def test_a_rebuilt_index_is_scored_on_its_new_postings() -> None:
    index = sparse_inverted.SparseInvertedIndex()
    index.build([{1: 1.0}, {2: 1.0}])
    assert lite.bm25_search(index, [{1: 1.0}], 2)[0].tolist() == [[0, -1]]
    index.build([{2: 1.0}, {1: 1.0}])
    assert lite.bm25_search(index, [{1: 1.0}], 2)[0].tolist() == [[1, -1]]


def test_a_wrong_mask_is_refused_as_the_stock_scorer_refuses_it() -> None:
    index = sparse_inverted.SparseInvertedIndex()
    index.build([{1: 1.0}, {2: 1.0}])
    with pytest.raises(ValueError):
        lite.bm25_search(index, [{1: 1.0}], 2, valid_mask=np.ones(3, bool))


WORDS = [
    "red",
    "blue",
    "green",
    "cotton",
    "shirt",
    "dress",
    "kurta",
    "jeans",
    "slim",
    "fit",
    "women",
    "men",
    "navy",
    "printed",
]


def _full_text_collection(db: MilvusLite) -> Any:
    schema = CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=32),
            FieldSchema("n", DataType.INT64),
            FieldSchema("title", DataType.VARCHAR, max_length=256, enable_analyzer=True),
            FieldSchema("title_sparse", DataType.SPARSE_FLOAT_VECTOR, is_function_output=True),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
        ],
        functions=[
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["title"],
                output_field_names=["title_sparse"],
            )
        ],
    )
    col = db.create_collection("c", schema)
    col.create_index("vec", {"index_type": "BRUTE_FORCE", "metric_type": "L2"})
    col.create_index("title_sparse", {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"})
    col.load()
    col.create_partition("p1")
    return col


def _titled(rng: np.random.Generator, ids: Any, version: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"k{int(i)}",
            "n": version,
            "title": " ".join(rng.choice(WORDS, int(rng.integers(1, 7)))),
            "vec": [0.0, 0.0],
        }
        for i in ids
    ]


def _search_words(col: Any) -> None:
    for text in ("red shirt", "navy slim fit jeans", "women women kurta", "absent"):
        for expr in (None, "n >= 3"):
            for partitions in (None, ["p1"]):
                for fields in (["title"], None):
                    col.search(
                        [text, "blue dress"],
                        top_k=10,
                        anns_field="title_sparse",
                        expr=expr,
                        partition_names=partitions,
                        output_fields=fields,
                    )


def _flush(col: Any) -> None:
    col.flush()
    col._bg_executor.submit(lambda: None).result(timeout=60)


def test_full_text_search_through_a_collection_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection's search path and the scorer, each against its stock self, through
    upserts that move keys between segments and the memtable, deletes before and after a
    flush, compactions, partitions and filters."""
    scored: list[int] = []
    searched: list[int] = []
    stock_search = engine.Collection.__dict__["_search_sparse"]
    assert stock_search is not lite.search_sparse

    def both_scorers(self: Any, queries: Any, top_k: int, valid_mask: Any = None) -> Any:
        want = STOCK(self, queries, top_k, valid_mask=valid_mask)
        got = lite.bm25_search(self, queries, top_k, valid_mask=valid_mask)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        scored.append(int((want[0] >= 0).sum()))
        return want

    def both_searches(self: Any, *args: Any, **kwargs: Any) -> Any:
        want = stock_search(self, *args, **kwargs)
        got = lite.search_sparse(self, *args, **kwargs)
        assert got == want
        searched.append(sum(len(hits) for hits in want))
        return want

    monkeypatch.setattr(sparse_inverted.SparseInvertedIndex, "search", both_scorers)
    monkeypatch.setattr(engine.Collection, "_search_sparse", both_searches)
    rng = np.random.default_rng(11)
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _full_text_collection(db)
        _search_words(col)  # empty
        for step in range(10):
            version = step + 1
            col.upsert(_titled(rng, rng.choice(80, 25, replace=False), version))
            col.insert(_titled(rng, [1000 + step], version), partition_name="p1")
            _search_words(col)
            col.delete([f"k{int(i)}" for i in rng.choice(80, 4, replace=False)])
            _search_words(col)
            if step % 2:
                _flush(col)
                _search_words(col)
    assert len(searched) > 500 and sum(searched) > 0
    assert len(scored) >= len(searched) and sum(scored) > 0
