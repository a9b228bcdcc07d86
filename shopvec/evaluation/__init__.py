"""Offline retrieval evaluation: data sets on disk, ranking metrics, chance levels and reports.

The parts exported here are pure: they read and write files and compute numbers, but start no
broker, store or encoder. The parts that do are imported by name: ``runner`` (a data set
through the indexer, the store and the search service), ``outcome`` (what a run is asked and
finds), ``stores`` (Milvus Lite for it), ``cache`` (vectors kept by content), ``align``
(fitting and measuring the photo-to-words alignment), ``throughput`` (encoder speed), and the
converters of particular sources (``myntra``, and ``shopper``: shoppers' photos made from
the Myntra sample's).
"""

from shopvec.evaluation.dataset import (
    CorpusDoc,
    DatasetError,
    EvalDataset,
    EvalQuery,
    load_dataset,
    write_jsonl,
    write_qrels,
)
from shopvec.evaluation.metrics import (
    DEFAULT_KS,
    Evaluation,
    Qrels,
    Run,
    chance_levels,
    evaluate,
    metric_names,
    query_chance,
    query_metrics,
)
from shopvec.evaluation.report import plot_bars, render_json, render_table

__all__ = [
    "DEFAULT_KS",
    "CorpusDoc",
    "DatasetError",
    "EvalDataset",
    "EvalQuery",
    "Evaluation",
    "Qrels",
    "Run",
    "chance_levels",
    "evaluate",
    "load_dataset",
    "metric_names",
    "plot_bars",
    "query_chance",
    "query_metrics",
    "render_json",
    "render_table",
    "write_jsonl",
    "write_qrels",
]
