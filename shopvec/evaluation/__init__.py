"""Offline retrieval evaluation: data sets on disk, ranking metrics, chance levels and reports.

The parts here are pure: they read and write files and compute numbers, but start no broker,
store or encoder. Running queries against the index is left to the caller. Converters of
particular sources (``shopvec.evaluation.myntra``) are imported by name, being also commands.
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
