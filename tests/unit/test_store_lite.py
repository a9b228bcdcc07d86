"""The embedded server's search path against Milvus Lite's own, on the same snapshots.

Every search below runs both executors on the same segments, memtable and tombstones and
requires the same hits, distances and entities, through inserts, upserts that move a key
between segments and the memtable, deletes before and after a flush, compactions, partitions
and filters, on an HNSW field and on one without an index.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
engine = pytest.importorskip("milvus_lite.engine.collection")
executor_indexed = pytest.importorskip("milvus_lite.search.executor_indexed")
sparse_inverted = pytest.importorskip("milvus_lite.index.sparse_inverted")
validation = pytest.importorskip("milvus_lite.schema.validation")
jieba_analyzer = pytest.importorskip("milvus_lite.analyzer.jieba_analyzer")
records = pytest.importorskip("milvus_lite.adapter.grpc.translators.records")

from milvus_lite import CollectionSchema, DataType, FieldSchema, MilvusLite  # noqa: E402

from shopvec.store import lite  # noqa: E402

DIM = 8


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Routes every search through both executors; counts the comparisons."""
    # From its own module, which install() leaves alone: the name in the engine may already
    # point at execute_search.
    stock = executor_indexed.execute_search_with_index
    seen: list[int] = []

    def both(*args: Any, **kwargs: Any) -> list[list[dict[str, Any]]]:
        want = stock(*args, **kwargs)
        got = lite.execute_search(*args, **kwargs)
        assert _plain(got) == want
        seen.append(sum(len(hits) for hits in want))
        return want  # type: ignore[no-any-return]

    monkeypatch.setattr(engine, "execute_search_with_index", both)
    return seen


def _plain(results: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """The hits with a segment's vectors, which execute_search reads as float32 rows, as the
    stock executor's lists of floats."""

    def value(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            assert v.dtype == np.float32 and v.ndim == 1
            return v.tolist()
        return v

    return [
        [{**hit, "entity": {k: value(v) for k, v in hit["entity"].items()}} for hit in hits]
        for hits in results
    ]


def _collection(db: MilvusLite, name: str) -> Any:
    schema = CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=32),
            FieldSchema("n", DataType.INT64),
            FieldSchema("tag", DataType.VARCHAR, max_length=16),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
            FieldSchema("raw", DataType.FLOAT_VECTOR, dim=DIM),
        ]
    )
    col = db.create_collection(name, schema)
    col.create_index(
        "vec",
        {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 8, "efConstruction": 40}},
    )
    col.create_index("raw", {"index_type": "BRUTE_FORCE", "metric_type": "L2"})
    col.load()
    col.create_partition("p1")
    return col


def _flush(col: Any) -> None:
    """Flushes and waits for the compaction and index builds it starts in the background: a
    segment that gains its index between the two executors' calls would be searched by brute
    force by one and through HNSW by the other."""
    col.flush()
    col._bg_executor.submit(lambda: None).result(timeout=60)


def _rows(rng: np.random.Generator, ids: list[int], version: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"k{i}",
            "n": version,
            "tag": "even" if i % 2 == 0 else "odd",
            "vec": rng.standard_normal(DIM).astype(np.float32).tolist(),
            "raw": rng.standard_normal(DIM).astype(np.float32).tolist(),
        }
        for i in ids
    ]


def _search_all(col: Any, rng: np.random.Generator) -> None:
    queries = rng.standard_normal((3, DIM)).astype(np.float32).tolist()
    for field in ("vec", "raw"):
        for expr in (None, 'tag == "even"', "n >= 2"):
            for partitions in (None, ["p1"]):
                col.search(
                    queries,
                    top_k=7,
                    anns_field=field,
                    expr=expr,
                    partition_names=partitions,
                    output_fields=["n", "tag"],
                )
        # A hit reads only the columns asked for: the other vector field among them, the
        # searched one, none but the key, all, or all by the wildcard.
        other = "raw" if field == "vec" else "vec"
        for fields in (["tag", other], ["n", field, "id"], [], None, ["*"]):
            col.search(queries, top_k=7, anns_field=field, output_fields=fields)


def test_same_hits_as_the_stock_executor_through_writes_flushes_and_deletes(
    tmp_path: Path, compared: list[int]
) -> None:
    rng = np.random.default_rng(3)
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _collection(db, "c")
        _search_all(col, rng)  # empty
        for step in range(12):
            version = step + 1
            fresh = list(range(step * 20, step * 20 + 20))
            col.insert(_rows(rng, fresh, version))
            # Upserts of keys that live in earlier segments or in the memtable.
            again = rng.choice(step * 20 + 20, 10, replace=False).tolist()
            col.upsert(_rows(rng, again, version))
            col.insert(_rows(rng, [1000 + step], version), partition_name="p1")
            _search_all(col, rng)
            doomed = rng.choice(step * 20 + 20, 4, replace=False).tolist()
            col.delete([f"k{i}" for i in doomed])
            _search_all(col, rng)
            if step % 3 == 2:
                _flush(col)
                _search_all(col, rng)
            if step == 7:
                # A deleted key written again comes back.
                col.insert(_rows(rng, doomed, version))
                _search_all(col, rng)
        _flush(col)
        _search_all(col, rng)
    assert len(compared) > 300
    assert sum(compared) > 0


def test_a_key_in_several_segments_is_found_once_at_its_newest(
    tmp_path: Path, compared: list[int]
) -> None:
    rng = np.random.default_rng(4)
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _collection(db, "c")
        for version in range(1, 4):  # three segments: under the four that start a compaction
            col.upsert(_rows(rng, list(range(30)), version))
            _flush(col)
        hits = col.search(
            rng.standard_normal((1, DIM)).astype(np.float32).tolist(),
            top_k=30,
            anns_field="raw",
            output_fields=["n"],
        )[0]
        assert len({h["id"] for h in hits}) == len(hits) == 30
        assert {h["entity"]["n"] for h in hits} == {3}
    assert compared


def test_kept_bookkeeping_follows_a_new_set_of_segments(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _collection(db, "c")
        col.insert(_rows(rng, list(range(10)), 1))
        _flush(col)
        first, _ = col._read_snapshot()
        col.upsert(_rows(rng, list(range(5)), 2))
        _flush(col)
        second, _ = col._read_snapshot()
    one = lite._views.get(list(first))
    two = lite._views.get(list(second))
    assert one is lite._views.get(list(first))
    assert two is not one
    assert (
        sum(
            int(m.sum()) if m is not None else s.num_rows
            for m, s in zip(two.winners, second, strict=True)
        )
        == 10
    )


def _restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """What install() replaces comes back after the test."""
    monkeypatch.setattr(engine, "execute_search_with_index", engine.execute_search_with_index)
    monkeypatch.setattr(engine.Collection, "_search_sparse", engine.Collection._search_sparse)
    monkeypatch.setattr(
        sparse_inverted.SparseInvertedIndex, "search", sparse_inverted.SparseInvertedIndex.search
    )
    monkeypatch.setattr(lite, "_stock_search_sparse", lite._stock_search_sparse)
    monkeypatch.setattr(engine, "validate_record", engine.validate_record)
    monkeypatch.setattr(validation, "_find_float_vector", validation._find_float_vector)
    monkeypatch.setattr(
        jieba_analyzer.JiebaAnalyzer, "tokenize", jieba_analyzer.JiebaAnalyzer.tokenize
    )
    monkeypatch.setattr(records, "_build_field_data", records._build_field_data)
    for kept in ("_stock_validate", "_stock_find_vector", "_stock_tokenize", "_stock_field_data"):
        monkeypatch.setattr(lite, kept, getattr(lite, kept))


def test_install_puts_the_executor_in_place_on_a_version_it_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _restored_after(monkeypatch)
    monkeypatch.setattr(lite.metadata, "version", lambda name: "3.2.2")
    assert lite.install()
    assert engine.execute_search_with_index is lite.execute_search
    assert engine.Collection._search_sparse is lite.search_sparse
    assert sparse_inverted.SparseInvertedIndex.search is lite._bm25_method
    assert engine.validate_record is lite.validate_record
    assert validation._find_float_vector is lite._find_float_vector
    assert jieba_analyzer.JiebaAnalyzer.tokenize is lite.tokenize
    assert records._build_field_data is lite.build_field_data


def test_install_leaves_another_version_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    stock = engine.execute_search_with_index
    _restored_after(monkeypatch)
    monkeypatch.setattr(lite.metadata, "version", lambda name: "4.0.0")
    assert not lite.install()
    assert engine.execute_search_with_index is stock
    assert engine.Collection._search_sparse is not lite.search_sparse
    assert engine.validate_record is not lite.validate_record
    assert jieba_analyzer.JiebaAnalyzer.tokenize is not lite.tokenize
    assert records._build_field_data is not lite.build_field_data


_SERVER_START = """
import jieba, milvus_lite.cmdline
from shopvec.store import lite
milvus_lite.cmdline.main = lambda argv: print(jieba.dt.initialized, argv)
lite.main({argv!r})
"""


@pytest.mark.parametrize(("argv", "loaded"), [(["server", "--port", "1"], True), (["dump"], False)])
def test_a_server_loads_the_word_analyzer_before_it_serves(argv: list[str], loaded: bool) -> None:
    """The product collection's words are cut with jieba, which loads its dictionary on its
    first cut: a server does that before it serves, not on the indexer's first write."""
    out = subprocess.run(
        [sys.executable, "-c", _SERVER_START.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split()[0] == str(loaded)


def test_the_server_loads_neither_torch_nor_the_milvus_client() -> None:
    """The embedded Milvus server imports this package; what the rest of shopvec.store brings
    (torch through the encoders' types, pymilvus) would cost it hundreds of MB."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shopvec.store.lite; "
            "print([m for m in ('torch', 'transformers', 'pymilvus') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["[]"]
