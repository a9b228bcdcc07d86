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

`python -m shopvec.store.lite server --data-dir D --host H --port P` runs the stock command
line with this search path installed, on the Milvus Lite versions it was written against; on
any other it leaves the stock path alone and says so.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["SUPPORTED_VERSIONS", "execute_search", "install", "main"]

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("3.2.",)
"""Milvus Lite versions whose search executor this one follows (by prefix)."""

_VIEWS = 8
"""Sets of segments whose bookkeeping is kept (several collections, vector fields share one)."""


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

    def materialise(source: int, lid: int) -> dict[str, Any]:
        if source < n_segments:
            return in_scope[source].row_to_dict(lid)
        batch, row = mt_row_refs[lid]
        return memtable.materialize_row(batch, row)

    results: list[list[dict[str, Any]]] = []
    for q in range(nq):
        ranked = sorted(candidates[q])[:top_k]
        hits = []
        for dist, source, lid in ranked:
            record = materialise(source, lid)
            pk = record[pk_field] if pk_field in record else sources[source][lid]
            hits.append({"id": pk, "distance": dist, "entity": project(record)})
        results.append(hits)
    return results


def install() -> bool:
    """Puts execute_search in place of Milvus Lite's search executor, if its version is one
    this module follows. Returns whether it did."""
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

    collection.execute_search_with_index = execute_search
    return True


def main(argv: list[str] | None = None) -> int:
    """milvus-lite's command line, with execute_search installed."""
    install()
    from milvus_lite.cmdline import main as stock_main

    return int(stock_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
