"""The embedded Milvus Lite server, with a search path that keeps its per-row bookkeeping.

Milvus Lite 3.2's search (`execute_search_with_index`) spends most of a call in two Python
loops over every stored row, whatever the batch or the index: it rebuilds the newest sequence
number of every primary key across segments, then a validity mask from it and the tombstones.
At 100,000 rows a profile put nearly all of a call there, and little in the HNSW lookup.

Segments are immutable files, so which of their rows hold their key's newest version changes
only when the set of segments does (a flush, a compaction). `execute_search` works that out
once per set of segments, keeps it, and per call adjusts it for what changes between flushes:
the rows in the memtable and the tombstones, both small. Everything else (filters, per-segment
recall, the merge and the projection) is the stock code's, step for step, and a differential
test holds the two to the same results over upserts, deletes, flushes, compactions, partitions
and filters.

Full-text search has the same shape of cost: Milvus Lite's BM25 scorer (`SparseInvertedIndex.
search`) walks every posting of every query term in Python, a few tens of milliseconds a query
on 10,000 product titles. `bm25_search` scores the same postings with numpy, in the same
float32 arithmetic and the same order of ties, and a differential test holds it to the stock
scorer's ids and distances.

Writing has two such costs, together over half of an upsert's CPU for product rows. Milvus
Lite checks each float of a record's first vector field (the rows' 1,280-float photo vector)
in a Python loop: `validate_record` makes the same check once per row (every element an exact
float or int, all of which the loop accepts) and has the stock function check the rest; any
other value goes through the stock check whole and fails as it did. And its jieba analyzer
cuts every text whole for BM25, though a text's tokens are its blocks' (the runs jieba's own
pattern splits it into) in order: `tokenize` keeps each block's tokens, and a catalogue's
words repeat; the tokens' term ids (a hash computed one byte at a time in Python) are kept
too (`term_to_id`). Differential tests hold them to the stock results. Then the same rows' four
vectors (2,816 floats) cost half of what was left, read off the request element by element
into lists of Python floats and converted back one by one into the write-ahead log's Arrow
batch: `extract_vector_column` reads a column that holds every row as one block of float32s
into numpy rows, which Arrow takes whole. A differential test holds the rows to the stock
translator's numbers (or its error) and the log's batch to the stock one.

A reply that carries vectors (a photo search's 100 candidates with their words' vectors) had
two more: each hit's vector read element by element into Python floats, and each float passed
through ``float()`` on its way into the reply. A sealed segment's vector is read as a float32
numpy row, and `build_field_data` puts a column of such rows (or of exact-float lists) into
the reply as one block of float32s; any other column goes through the stock translator.
Differential tests hold the hits to the stock executor's values and the reply to the stock
translator's bytes.

`python -m shopvec.store.lite server --data-dir D --host H --port P` runs the stock command
line with this search path installed, on the Milvus Lite versions it was written against; on
any other it leaves the stock path alone and says so.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_VERSIONS",
    "WireRow",
    "bm25_search",
    "build_field_data",
    "execute_search",
    "extract_vector_column",
    "install",
    "main",
    "term_to_id",
    "tokenize",
    "validate_record",
]

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("3.2.",)
"""Milvus Lite versions whose search executor this one follows (by prefix)."""

_VIEWS = 16
"""Sets of segments whose bookkeeping is kept: per collection, the vector searches' (the
segments in scope) and the full-text searches' (all of them)."""


class _SegmentsView:
    """Which rows of a set of segments hold their key's newest version among those segments.

    winners[i] is None when every row of segment i wins (the usual case: a key in one segment
    only), else a boolean mask. Ties keep every tied row, as the stock path does.
    """

    def __init__(self, segments: Sequence[Any]) -> None:
        # Each segment's key-to-row map and sequence numbers, not the segment: a view kept
        # after a compaction must not keep the replaced segments' rows and vectors alive.
        self.keys = tuple(s.pk_to_row for s in segments)
        self.seqs = tuple(s.seqs for s in segments)
        self.winners: list[np.ndarray | None] = [None] * len(segments)
        seen: set[Any] = set()
        shared: set[Any] = set()
        for s in segments:
            shared |= seen & s.pk_to_row.keys()
            seen |= s.pk_to_row.keys()
        for pk in shared:
            held = [
                (i, row) for i, keys in enumerate(self.keys) if (row := keys.get(pk)) is not None
            ]
            newest = max(int(self.seqs[i][row]) for i, row in held)
            for i, row in held:
                if int(self.seqs[i][row]) != newest:
                    mask = self.winners[i]
                    if mask is None:
                        mask = self.winners[i] = np.ones(segments[i].num_rows, dtype=bool)
                    mask[row] = False

    def matches(self, segments: Sequence[Any]) -> bool:
        return len(segments) == len(self.keys) and all(
            s.pk_to_row is k for s, k in zip(segments, self.keys, strict=True)
        )

    def newest(self, pk: Any) -> tuple[int, list[tuple[int, int]]] | None:
        """The newest sequence number of pk among the segments, and the (segment, row) pairs
        that hold it; None if no segment has pk."""
        best = -1
        at: list[tuple[int, int]] = []
        for i, (keys, seqs) in enumerate(zip(self.keys, self.seqs, strict=True)):
            row = keys.get(pk)
            if row is None:
                continue
            seq = int(seqs[row])
            if seq > best:
                best, at = seq, [(i, row)]
            elif seq == best:
                at.append((i, row))
        return (best, at) if at else None


class _Views:
    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._views: OrderedDict[tuple[int, ...], _SegmentsView] = OrderedDict()

    def get(self, segments: Sequence[Any]) -> _SegmentsView:
        key = tuple(id(s) for s in segments)
        with self._lock:
            view = self._views.get(key)
            if view is not None and view.matches(segments):
                self._views.move_to_end(key)
                return view
        view = _SegmentsView(segments)
        with self._lock:
            self._views[key] = view
            self._views.move_to_end(key)
            while len(self._views) > self._size:
                self._views.popitem(last=False)
        return view


_views = _Views(_VIEWS)


def _stock() -> Callable[..., list[list[dict[str, Any]]]]:
    from milvus_lite.search.executor_indexed import execute_search_with_index

    return execute_search_with_index


def execute_search(
    query_vectors: np.ndarray,
    segments: Iterable[Any],
    memtable: Any,
    delta_index: Any,
    top_k: int,
    metric_type: str,
    pk_field: str,
    vector_field: str,
    partition_names: list[str] | None = None,
    compiled_filter: Any = None,
    output_fields: list[str] | None = None,
    indexed_filter_plan: Any = None,
    project_record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    search_params: dict[str, Any] | None = None,
) -> list[list[dict[str, Any]]]:
    """Same arguments and results as milvus_lite's execute_search_with_index."""
    segments = list(segments)
    stock_args = {
        "query_vectors": query_vectors,
        "segments": segments,
        "memtable": memtable,
        "delta_index": delta_index,
        "top_k": top_k,
        "metric_type": metric_type,
        "pk_field": pk_field,
        "vector_field": vector_field,
        "partition_names": partition_names,
        "compiled_filter": compiled_filter,
        "output_fields": output_fields,
        "indexed_filter_plan": indexed_filter_plan,
        "project_record_fn": project_record_fn,
        "search_params": search_params,
    }
    tombstones = getattr(delta_index, "_map", None)
    if not isinstance(tombstones, dict) or any(len(s.pk_to_row) != s.num_rows for s in segments):
        # A segment holding a key twice, or a tombstone index of another shape: the stock path.
        return _stock()(**stock_args)
    from milvus_lite.index.brute_force import BruteForceIndex

    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    if query_vectors.dtype != np.float32:
        query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]

    partition_filter = set(partition_names) if partition_names else None
    in_scope = [
        s
        for s in segments
        if s.num_rows > 0 and (partition_filter is None or s.partition in partition_filter)
    ]
    mt_pks, mt_seqs, mt_vecs, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field,
        partition_names=partition_names,
        include_table=compiled_filter is not None,
    )
    if not in_scope and not mt_pks:
        return [[] for _ in range(nq)]

    # -- which rows are live: the kept view, adjusted for the memtable and the tombstones ------
    view = _views.get(in_scope)
    masks: list[np.ndarray | None] = list(view.winners)
    copied = [False] * len(in_scope)

    def knock_out(at: list[tuple[int, int]]) -> None:
        for i, row in at:
            mask = masks[i]
            if mask is None:
                mask = np.ones(in_scope[i].num_rows, dtype=bool)
            elif not copied[i]:
                mask = mask.copy()
            masks[i], copied[i] = mask, True
            mask[row] = False

    # The memtable holds one row per key (its snapshot is read off a key index).
    mt_seq_list = [int(q) for q in np.asarray(mt_seqs).tolist()]
    mt_row = {pk: j for j, pk in enumerate(mt_pks)}
    if len(mt_row) != len(mt_pks):
        return _stock()(**stock_args)
    mt_live = np.ones(len(mt_pks), dtype=bool)
    for pk, j in mt_row.items():
        found = view.newest(pk)
        if found is None:
            continue
        seq, at = found
        if seq > mt_seq_list[j]:
            mt_live[j] = False
        elif seq < mt_seq_list[j]:
            knock_out(at)

    def tombstone(pk: Any, deleted_seq: int) -> None:
        found = view.newest(pk)
        if found is not None and deleted_seq > found[0]:
            knock_out(found[1])
        j = mt_row.get(pk)
        if j is not None and deleted_seq > mt_seq_list[j]:
            mt_live[j] = False

    for pk, deleted_seq in tombstones.items():
        tombstone(pk, deleted_seq)
    for pk, entry in memtable.delete_index_snapshot().items():
        tombstone(pk, entry[0])

    # -- filters, recall, merge: as the stock path ---------------------------------------------
    seg_filter_masks: dict[int, np.ndarray] = {}
    mt_filter_mask: np.ndarray | None = None
    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter

        for s in in_scope:
            seg_filter_masks[id(s)] = evaluate_segment_filter(
                s, compiled_filter, indexed_filter_plan
            )
        if mt_pks and mt_table is not None:
            mt_filter_mask = evaluate_mask(compiled_filter, mt_table)

    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]
    sources: list[list[Any]] = []

    def recall(
        source: int,
        n: int,
        live: np.ndarray | None,
        filter_mask: np.ndarray | None,
        vectors: np.ndarray,
        index: Any,
    ) -> None:
        mask = np.ones(n, dtype=bool) if live is None else live
        if filter_mask is not None:
            mask = mask & filter_mask.astype(bool)
        if not mask.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        local_ids, dists = index.search(
            query_vectors,
            top_k,
            valid_mask=None if mask.all() else mask,
            params=search_params,
        )
        for q in range(nq):
            for k in range(top_k):
                lid = int(local_ids[q, k])
                if lid < 0:
                    break
                candidates[q].append((float(dists[q, k]), source, lid))

    for i, s in enumerate(in_scope):
        vectors, null_mask = s.vector_data(vector_field)
        sources.append(s.pks)
        combined = seg_filter_masks.get(id(s))
        if null_mask is not None:
            combined = null_mask if combined is None else combined & null_mask
        recall(
            len(sources) - 1, s.num_rows, masks[i], combined, vectors, s.indexes.get(vector_field)
        )
    if mt_pks:
        sources.append(mt_pks)
        recall(len(sources) - 1, len(mt_pks), mt_live, mt_filter_mask, mt_vecs, None)

    n_segments = len(in_scope)
    if project_record_fn is not None:
        project = project_record_fn
    elif output_fields is None:

        def project(record: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in record.items() if k not in (pk_field, vector_field)}

    else:
        keep = set(output_fields) - {pk_field}

        def project(record: dict[str, Any]) -> dict[str, Any]:
            return {k: record[k] for k in keep if k in record}

    # A sealed segment's hit reads only the columns asked for: the stock executor turns every
    # column of the row into Python objects first (row_to_dict: each vector field and sparse
    # vector), then projects, which made a search's cost grow with its limit several times
    # faster than the search itself. Only where the projection is plain: named schema fields of
    # a segment without dynamic fields ($meta), which the projection returns as they are, the
    # key left out; otherwise (a wildcard, a dynamic field, no fields named) the whole row is
    # read and projected as before. Memtable rows are read as before.
    wanted = [n for n in output_fields or () if n != pk_field]
    direct: dict[int, bool] = {}

    def is_direct(source: int) -> bool:
        if source not in direct:
            names = set(in_scope[source].table.schema.names)
            direct[source] = (
                bool(output_fields)
                and "*" not in wanted
                and "$meta" not in names
                and set(wanted) <= names
                and pk_field in names
            )
        return direct[source]

    readers: dict[int, dict[str, Callable[[int], Any]]] = {}

    def readers_of(source: int) -> dict[str, Callable[[int], Any]]:
        if source not in readers:
            table = in_scope[source].table
            readers[source] = {n: _cell_reader(table.column(n)) for n in (*wanted, pk_field)}
        return readers[source]

    results: list[list[dict[str, Any]]] = []
    for q in range(nq):
        ranked = sorted(candidates[q])[:top_k]
        hits = []
        for dist, source, lid in ranked:
            if source < n_segments and is_direct(source):
                cells = readers_of(source)
                entity = {name: cells[name](lid) for name in wanted}
                pk = cells[pk_field](lid)
                hits.append({"id": pk, "distance": dist, "entity": entity})
                continue
            if source < n_segments:
                record = in_scope[source].row_to_dict(lid)
            else:
                batch, row = mt_row_refs[lid]
                record = memtable.materialize_row(batch, row)
            pk = record[pk_field] if pk_field in record else sources[source][lid]
            hits.append({"id": pk, "distance": dist, "entity": project(record)})
        results.append(hits)
    return results


def _cell_reader(column: Any) -> Callable[[int], Any]:
    """Reads a column's value at a row as ``column[row].as_py()`` does, but for a float vector
    column without nulls in one chunk (a sealed segment's): its row as a float32 numpy array
    (a view), the same floats without a Python object per element, which `build_field_data`
    puts into the reply as they are."""
    import pyarrow as pa

    kind = column.type
    if (
        pa.types.is_fixed_size_list(kind)
        and pa.types.is_float32(kind.value_type)
        and column.num_chunks == 1
        and column.null_count == 0
    ):
        chunk = column.chunk(0)
        flat = chunk.flatten()
        if flat.null_count == 0:
            values = flat.to_numpy()
            dim = kind.list_size
            return lambda row: values[row * dim : (row + 1) * dim]
    return lambda row: column[row].as_py()


class _Postings:
    """One BM25 index's posting lists as arrays, made on first use of each term. The index is
    built once per segment and then only read (a memtable's is rebuilt for each search)."""

    def __init__(self, lists: dict[int, list[tuple[int, float]]]) -> None:
        self.lists = lists
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, term: int) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self.lists.get(term)
            if not posting:
                return None
            ids, tfs = zip(*posting, strict=True)
            arrays = self._arrays[term] = (np.array(ids, np.int64), np.array(tfs, np.float64))
        return arrays


def bm25_search(
    index: Any,
    query_sparse_vectors: list[dict[int, float]],
    top_k: int,
    valid_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Same arguments and results as milvus_lite's SparseInvertedIndex.search.

    The stock scorer works on Python floats and numpy float32 scalars, so that (numpy's
    promotion rules) each document's score is float32 arithmetic on float32 operands, summed
    over the query's terms in their order; the same steps run here on arrays. Its ranking is a
    stable sort of the scores in the order documents were first reached (term by term, along
    each posting list): the same key orders ties here."""
    from milvus_lite.index.sparse_common import empty_results, validate_mask

    lengths = index._doc_lengths
    valid_mask = validate_mask(valid_mask, len(lengths))
    nq = len(query_sparse_vectors)
    all_ids, all_dists = empty_results(nq, top_k)
    if index.doc_count == 0 or top_k == 0:
        return all_ids, all_dists
    postings = getattr(index, "_shopvec_postings", None)
    if postings is None or postings.lists is not index._posting_lists:
        postings = _Postings(index._posting_lists)
        index._shopvec_postings = postings
    n = len(lengths)
    big = np.iinfo(np.int64).max
    k1, b = index.k1, index.b
    avgdl = index.avgdl if index.avgdl > 0 else 1.0
    for qi, query in enumerate(query_sparse_vectors):
        scores = np.zeros(n, np.float32)
        first = np.full(n, big, np.int64)
        reached = 0
        for term, weight in query.items():
            arrays = postings.get(term)
            if arrays is None:
                continue
            ids, tfs = arrays
            df = index._df[term]
            idf = math.log((index.doc_count - df + 0.5) / (df + 0.5) + 1.0)
            dl = lengths[ids]
            norm = (tfs * (k1 + 1.0)).astype(np.float32) / (
                tfs.astype(np.float32) + k1 * (1.0 - b + b * dl / avgdl)
            )
            scores[ids] += idf * norm * weight
            # A term's posting list holds a document once.
            first[ids] = np.minimum(first[ids], reached + np.arange(len(ids), dtype=np.int64))
            reached += len(ids)
        hit = first < big
        if valid_mask is not None:
            hit &= valid_mask
        found = np.flatnonzero(hit)
        if not len(found):
            continue
        order = np.lexsort((first[found], -scores[found].astype(np.float64)))[:top_k]
        best = found[order]
        all_ids[qi, : len(best)] = best
        all_dists[qi, : len(best)] = -scores[best]
    return all_ids, all_dists


def search_sparse(
    self: Any,
    query_vectors: list[Any],
    vector_field: str,
    top_k: int,
    metric_type: str,
    partition_names: list[str] | None,
    expr: str | None,
    output_fields: list[str] | None,
    timezone: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Same arguments and results as milvus_lite's Collection._search_sparse, whose place it
    takes (self is the collection).

    The stock method also works out, row by row in Python, which stored rows hold their key's
    newest version, and materialises every column of each hit (its vectors too) before
    projecting it. Here the rows come from the kept view of the segments (as in
    execute_search) adjusted for the memtable and the tombstones, and a hit materialises the
    columns its projection reads. The memtable's rows, the scoring and the merge are the stock
    steps."""
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.constants import ALL_PARTITIONS
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.index.sparse_factory import (
        _search_prepared_sparse_index,
        create_sparse_index,
        sparse_index_matches,
    )
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    seg_snapshot, delta_snap = self._read_snapshot()
    mt_deletes = self._memtable.delete_index_snapshot()
    tombstones = getattr(delta_snap, "_map", None)
    segments = list(seg_snapshot)
    if not isinstance(tombstones, dict) or any(len(s.pk_to_row) != s.num_rows for s in segments):
        # A segment holding a key twice, or a tombstone index of another shape: the stock path.
        return _stock_sparse()(
            self,
            query_vectors,
            vector_field,
            top_k,
            metric_type,
            partition_names,
            expr,
            output_fields,
            timezone,
        )

    partition_filter = set(partition_names) if partition_names else None
    projection_plan = build_projection_plan(output_fields, self._schema, api_kind="search")
    sparse_spec = self._index_specs.get(vector_field)
    index_params = sparse_spec.build_params if sparse_spec else {}
    query_sparse = self._prepare_sparse_queries(query_vectors, vector_field)
    nq = len(query_sparse)
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    per_query: list[list[tuple[float, Any, Any]]] = [[] for _ in range(nq)]

    # -- which stored rows are live: the kept view, then the memtable and the tombstones -------
    view = _views.get(segments)
    masks: list[np.ndarray] = [
        np.ones(s.num_rows, dtype=bool) if w is None else w.copy()
        for s, w in zip(segments, view.winners, strict=True)
    ]
    newest: dict[Any, int] = {}
    for pk, (_, _, seq) in self._memtable.pk_index_snapshot():
        newest[pk] = int(seq)
        found = view.newest(pk)
        if found is not None and found[0] < seq:
            for i, row in found[1]:
                masks[i][row] = False
    for pk, deleted_seq in tombstones.items():
        found = view.newest(pk)
        if found is not None and deleted_seq > found[0]:
            for i, row in found[1]:
                masks[i][row] = False
    for pk, (deleted_seq, partition) in mt_deletes.items():
        found = view.newest(pk)
        if found is not None and deleted_seq > found[0]:
            for i, row in found[1]:
                if partition in (ALL_PARTITIONS, segments[i].partition):
                    masks[i][row] = False

    for i, seg in enumerate(segments):
        if partition_filter is not None and seg.partition not in partition_filter:
            continue
        table = seg.table
        if table is None or len(table) == 0:
            continue
        cached_idx = seg.sparse_indexes.get(vector_field)
        if not sparse_index_matches(cached_idx, metric_type, index_params):
            sparse_vecs = [
                bytes_to_sparse(r) if isinstance(r, bytes) else (r or {})
                for r in table.column(vector_field).to_pylist()
            ]
            cached_idx = create_sparse_index(metric_type, index_params)
            cached_idx.build(sparse_vecs)
            seg.sparse_indexes[vector_field] = cached_idx
        valid_mask = masks[i]
        if compiled_filter is not None:
            valid_mask = valid_mask & evaluate_segment_filter(
                seg, compiled_filter, indexed_filter_plan
            )
        if not valid_mask.any():
            continue
        local_ids, dists = _search_prepared_sparse_index(
            cached_idx, query_sparse, top_k, valid_mask=valid_mask
        )
        pks = seg.pks
        for qi in range(nq):
            for j in range(top_k):
                lid = int(local_ids[qi, j])
                if lid < 0:
                    break
                per_query[qi].append((float(dists[qi, j]), pks[lid], (table, lid)))

    # -- the memtable, rebuilt for each search: the stock steps ---------------------------------
    def segment_newest(pk: Any) -> int:
        found = view.newest(pk)
        return -1 if found is None else found[0]

    mt_pks: list[Any] = []
    mt_sparse: list[dict[int, float]] = []
    mt_refs: list[tuple[dict[str, Any], int]] = []
    for pk, seq, record in self._memtable.active_record_snapshots(partition_names=partition_names):
        if delta_snap.is_deleted(pk, seq) or max(newest.get(pk, -1), segment_newest(pk)) > seq:
            continue
        raw = record.get(vector_field)
        mt_pks.append(pk)
        mt_sparse.append(bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {}))
        mt_refs.append((record, seq))
    if mt_pks:
        mt_valid = np.ones(len(mt_pks), dtype=bool)
        if compiled_filter is not None:
            from milvus_lite.search.filter.eval.python_backend import _eval_row

            for i in range(len(mt_pks)):
                if not _eval_row(compiled_filter.ast, mt_refs[i][0]):
                    mt_valid[i] = False
        mt_idx = create_sparse_index(metric_type, index_params)
        mt_idx.build(mt_sparse, valid_mask=mt_valid)
        local_ids, dists = _search_prepared_sparse_index(mt_idx, query_sparse, top_k)
        for qi in range(nq):
            for j in range(top_k):
                lid = int(local_ids[qi, j])
                if lid < 0:
                    break
                per_query[qi].append((float(dists[qi, j]), mt_pks[lid], mt_refs[lid]))

    # -- merge, dedup by newest version, materialise what the projection reads ----------------
    schema_names = {f.name for f in self._schema.fields}
    shown = set(projection_plan.response_schema_fields)

    def read(name: str) -> bool:
        return name not in ("_seq", "_partition") and (name in shown or name not in schema_names)

    results: list[list[dict[str, Any]]] = []
    for candidates in per_query:
        pk_best: dict[Any, tuple[int, tuple[float, Any, Any]]] = {}
        for cand in candidates:
            _, pk, source = cand
            if isinstance(source[0], dict):
                seq = int(source[1])
            else:
                tbl, row_i = source
                seq = int(tbl.column("_seq")[row_i].as_py())
            if pk not in pk_best or seq > pk_best[pk][0]:
                pk_best[pk] = (seq, cand)
        deduped = [v[1] for v in pk_best.values()]
        deduped.sort(key=lambda c: c[0])
        hits: list[dict[str, Any]] = []
        for dist, pk, source in deduped:
            if isinstance(source[0], dict):
                entity = project_record(source[0], self._schema, projection_plan)
            else:
                tbl, row_i = source
                record = {
                    name: tbl.column(name)[row_i].as_py() for name in tbl.column_names if read(name)
                }
                entity = project_record(record, self._schema, projection_plan)
            hits.append({"id": pk, "distance": dist, "entity": entity})
            if len(hits) >= top_k:
                break
        results.append(hits)
    return results


# -- writes ---------------------------------------------------------------------------------

_NUMBERS = frozenset({float, int})

_vector_checked = threading.local()
"""Set while the stock validate_record runs on a record whose first vector was checked."""

_stock_validate: Callable[..., None] | None = None
_stock_find_vector: Callable[[Any], Any] | None = None


def _find_float_vector(schema: Any) -> Any:
    """The stock lookup of the vector field validate_record checks element by element; none
    while it validates a record whose vector validate_record has already checked."""
    assert _stock_find_vector is not None
    return None if getattr(_vector_checked, "on", False) else _stock_find_vector(schema)


def validate_record(
    record: Any, schema: Any, default_properties: dict[str, Any] | None = None
) -> None:
    """Milvus Lite's validate_record, with its check of the first vector field done once per
    record: a list or tuple of the field's length whose elements are all exact floats or ints
    passes that check as it stands, and so does a row `extract_vector_column` made of the
    field's length (the stock translator's list in its place, all floats); the stock function
    validates the rest of the record without it. Any other value goes through the stock
    function whole, and fails as it did."""
    assert _stock_validate is not None and _stock_find_vector is not None
    field = _stock_find_vector(schema)
    value: Any = record.get(field.name) if field is not None and isinstance(record, dict) else None
    if not (type(value) is WireRow and value.shape == (field.dim,)) and (
        type(value) not in (list, tuple)
        or len(value) != field.dim
        or not set(map(type, value)) <= _NUMBERS
    ):
        _stock_validate(record, schema, default_properties=default_properties)
        return
    _vector_checked.on = True
    try:
        _stock_validate(record, schema, default_properties=default_properties)
    finally:
        _vector_checked.on = False


class WireRow(np.ndarray):
    """One row of a float vector column as `extract_vector_column` reads it off the wire: the
    float32s the stock translator would give as a list of Python floats. Arrow takes a column
    of numpy rows as one block, where it converts a list's floats one by one."""


_stock_extract_vector: Callable[[Any, int, int], list[Any]] | None = None

_FLOAT_VECTOR = 101
"""Milvus's DataType.FloatVector, as the translator compares it."""


def extract_vector_column(fd: Any, dtype_int: int, num_rows: int) -> list[Any]:
    """Milvus Lite's _extract_vector_column (a vector column of an insert or upsert request as
    one value per row), with a float vector column that holds every row (the stock function's
    full form) read as one block of float32s into rows of it, `WireRow`s, in place of lists
    of Python floats read element by element; the stock function takes any other column and
    gets its result or its error. The rows hold the same numbers, and the write-ahead log's
    Arrow batch is built from them without a Python float in between."""
    assert _stock_extract_vector is not None
    vectors = fd.vectors
    dim = int(vectors.dim) if dtype_int == _FLOAT_VECTOR else 0
    if dim > 0 and num_rows > 0 and vectors.HasField("float_vector"):
        floats = vectors.float_vector
        if len(floats.data) == num_rows * dim:
            block = _packed_float32(floats.SerializeToString(), num_rows * dim)
            if block is not None:
                return list(block.reshape(num_rows, dim).view(WireRow))
    return _stock_extract_vector(fd, dtype_int, num_rows)


def _packed_float32(raw: bytes, count: int) -> np.ndarray | None:
    """The floats of a serialised FloatArray (`repeated float data = 1`, packed: its tag, the
    length as a varint, little-endian floats) as a float32 array of its own; none for any
    other layout."""
    if not raw or raw[0] != 0x0A:
        return None
    at, length, shift = 1, 0, 0
    while at < len(raw) and at < 11:
        byte = raw[at]
        length |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            break
        shift += 7
    if length != 4 * count or len(raw) - at != length:
        return None
    return np.frombuffer(raw, dtype="<f4", offset=at).astype(np.float32)


_stock_tokenize: Callable[[Any, str], list[str]] | None = None

_BLOCKS_KEPT = 100_000
"""Blocks whose tokens an analyzer keeps (a catalogue's distinct words are far fewer)."""

_BLOCK_KEPT_CHARS = 32
"""The longest block kept: words repeat, long runs of characters seldom do, and this bounds
what the kept blocks can hold whatever the texts (a few tens of MB)."""


def tokenize(self: Any, text: str) -> list[str]:
    """JiebaAnalyzer.tokenize, block by block: jieba splits a text on its word-character
    pattern and cuts each block alone, and every step after (the search mode's sub-words,
    stripping, lower case, stop words) is per token, so a text's tokens are its blocks' in
    order. Each block's are kept, for as long as jieba's dictionary is unchanged."""
    import jieba

    assert _stock_tokenize is not None
    kept: dict[str, list[str]] | None = self.__dict__.get("_shopvec_blocks")
    if kept is None or self.__dict__.get("_shopvec_dictionary") != jieba.dt.total:
        kept = self.__dict__["_shopvec_blocks"] = {}
        self.__dict__["_shopvec_dictionary"] = jieba.dt.total
    tokens: list[str] = []
    for block in jieba.re_han_default.split(text):
        if not block:
            continue
        cut = kept.get(block)
        if cut is None:
            cut = _stock_tokenize(self, block)
            if len(block) <= _BLOCK_KEPT_CHARS and len(kept) < _BLOCKS_KEPT:
                kept[block] = cut
        tokens.extend(cut)
    return tokens


_stock_term_to_id: Callable[[str], int] | None = None

_TERM_IDS_KEPT = 200_000
"""Tokens whose term ids are kept (a few tens of MB at most, with `_BLOCK_KEPT_CHARS`)."""

_term_ids: dict[str, int] = {}


def term_to_id(term: str) -> int:
    """Milvus Lite's term_to_id (FNV-1a over the token's UTF-8 bytes, one Python step a byte),
    kept per token: the analyzer maps every token of every text through it, and a
    catalogue's tokens repeat. The id is a pure function of the token."""
    assert _stock_term_to_id is not None
    got = _term_ids.get(term)
    if got is None:
        got = _stock_term_to_id(term)
        if len(term) <= _BLOCK_KEPT_CHARS and len(_term_ids) < _TERM_IDS_KEPT:
            _term_ids[term] = got
    return got


_stock_field_data: Callable[[str, Any, list[Any]], Any] | None = None

_FLOATS = frozenset({float})


def _float32_rows(column: list[Any], dim: int) -> np.ndarray | None:
    """A float vector column as float32 rows, where every value is one the stock translator
    turns, element by element, into the same float32s: a float32 numpy row of the field's
    length (a segment's read) or a list of exact floats (a memtable row). Otherwise none."""
    if all(type(v) is np.ndarray and v.dtype == np.float32 and v.shape == (dim,) for v in column):
        return np.stack(column)
    if all(type(v) is list and len(v) == dim and set(map(type, v)) <= _FLOATS for v in column):
        # A float beyond float32's range becomes an infinity, as the stock cast makes it.
        with np.errstate(over="ignore"):
            return np.array(column, dtype=np.float32)
    return None


def build_field_data(name: str, fschema: Any, column: list[Any]) -> Any:
    """Milvus Lite's _build_field_data (one column of a reply), with a float vector column of
    float32 rows or exact-float lists (what a search's hits read) put into the reply as one
    block of float32s: the stock function appends each element with ``float()``, one Python
    call per float, to the same packed field. Any other column goes through the stock
    function."""
    assert _stock_field_data is not None
    from milvus_lite.adapter.grpc.translators.records import DataType, schema_pb2

    dim = int(getattr(fschema, "dim", 0) or 0)
    rows = (
        _float32_rows(column, dim)
        if fschema.dtype == DataType.FLOAT_VECTOR and dim > 0 and column
        else None
    )
    if rows is None:
        return _stock_field_data(name, fschema, column)
    fd = schema_pb2.FieldData()
    fd.field_name = name
    fd.type = 101  # FloatVector, as the stock function sets it
    fd.vectors.dim = dim
    # FloatArray's `repeated float data = 1`, packed: its tag, the length, little-endian floats.
    raw = rows.astype("<f4", copy=False).tobytes()
    fd.vectors.float_vector.MergeFromString(b"\x0a" + _varint(len(raw)) + raw)
    return fd


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _install_reads() -> None:
    global _stock_field_data
    import milvus_lite.adapter.grpc.translators.records as records

    if records._build_field_data is not build_field_data:
        _stock_field_data = records._build_field_data
        records._build_field_data = build_field_data


def _install_writes() -> None:
    global _stock_validate, _stock_find_vector, _stock_tokenize, _stock_extract_vector
    global _stock_term_to_id
    import milvus_lite.adapter.grpc.translators.records as records
    import milvus_lite.analyzer.protocol as analyzers
    import milvus_lite.engine.collection as collection
    import milvus_lite.schema.validation as validation
    from milvus_lite.analyzer.jieba_analyzer import JiebaAnalyzer

    if analyzers.term_to_id is not term_to_id:
        _stock_term_to_id = analyzers.term_to_id
        analyzers.term_to_id = term_to_id

    if records._extract_vector_column is not extract_vector_column:
        _stock_extract_vector = records._extract_vector_column
        records._extract_vector_column = extract_vector_column

    if collection.validate_record is not validate_record:
        _stock_validate = collection.validate_record
        _stock_find_vector = validation._find_float_vector
        collection.validate_record = validate_record
        validation._find_float_vector = _find_float_vector
    if JiebaAnalyzer.tokenize is not tokenize:
        _stock_tokenize = JiebaAnalyzer.tokenize
        JiebaAnalyzer.tokenize = tokenize


_stock_search_sparse: Callable[..., Any] | None = None
"""Collection._search_sparse as Milvus Lite defines it, kept by install()."""


def _stock_sparse() -> Callable[..., Any]:
    if _stock_search_sparse is not None:
        return _stock_search_sparse
    from milvus_lite.engine.collection import Collection

    return Collection._search_sparse


def _bm25_method(
    self: Any,
    query_sparse_vectors: list[dict[int, float]],
    top_k: int,
    valid_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    return bm25_search(self, query_sparse_vectors, top_k, valid_mask)


def install() -> bool:
    """Puts execute_search in place of Milvus Lite's search executor (the write path's
    validate_record and tokenize, and the reply's build_field_data, in place of theirs), if
    its version is one this module follows. Returns whether it did."""
    try:
        version = metadata.version("milvus-lite")
    except metadata.PackageNotFoundError:
        return False
    if not version.startswith(SUPPORTED_VERSIONS):
        log.warning(
            "milvus-lite %s is not one of %s: its own search path stays",
            version,
            SUPPORTED_VERSIONS,
        )
        return False
    import milvus_lite.engine.collection as collection
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    global _stock_search_sparse
    collection.execute_search_with_index = execute_search
    SparseInvertedIndex.search = _bm25_method
    if collection.Collection._search_sparse is not search_sparse:
        _stock_search_sparse = collection.Collection._search_sparse
        collection.Collection._search_sparse = search_sparse
    _install_writes()
    _install_reads()
    return True


def main(argv: list[str] | None = None) -> int:
    """milvus-lite's command line, with execute_search installed. A server loads jieba's
    dictionary before it serves: the product collection's words are cut with it, and loading
    it on the first write held that write (and the indexer's first batch) about a second, on
    the cores the indexer encodes with."""
    install()
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["server"]:
        from shopvec.terms import jieba_loaded

        jieba_loaded()
    from milvus_lite.cmdline import main as stock_main

    return int(stock_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
