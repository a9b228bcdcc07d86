"""The evaluation commands: ``eval``, ``convert``, ``align fit`` and ``bench encoders``.

``shopvec.cli`` registers the first three, ``shopvec.benchmarks.cli`` the last. This module
sits outside ``shopvec.evaluation``, and imports from there only when a command runs, so that
building the parser loads no plotting library, torch or Milvus client.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopvec.settings import Settings

if TYPE_CHECKING:
    from shopvec.encoders.base import Encoder
    from shopvec.evaluation.cache import CachingEncoder
    from shopvec.evaluation.runner import Bar, EvalReport, StoreFactory

__all__ = ["add_bench_encoder_arguments", "add_commands", "cmd_bench_encoders"]

_SCENARIOS = ("text2image", "image2image", "text2text", "text2product", "cross")
_FUSIONS = ("weighted", "concat", "attention")
_WEIGHTINGS = ("confidence", "agreement", "fixed")
_BACKENDS = ("offline", "clip", "hashing")


def _bar(quiet: bool) -> Any:
    from tqdm import tqdm

    def open_bar(total: int, desc: str) -> Bar:
        return tqdm(total=total, desc=desc, unit="", leave=False, disable=quiet, file=sys.stderr)

    return open_bar


def _base_encoder(settings: Settings, args: argparse.Namespace) -> Encoder:
    if args.backend == "hashing":
        from shopvec.encoders.hashing import HashingEncoder

        return HashingEncoder(joint_dim=64, visual_dim=64)
    from shopvec.runtime import build_encoder

    # The offline encoder gives the photos' regions only for attention fusion: ask for them
    # whenever attention is among the methods evaluated.
    fusions = getattr(args, "fusion", None) or [settings.encoder.fusion]
    encoder_settings = settings.encoder.model_copy(
        update={
            "fusion": "attention" if "attention" in fusions else settings.encoder.fusion,
            "backend": args.backend,
            "model_path": args.model_path or settings.encoder.model_path,
            "alignment_path": None,
        }
    )
    return build_encoder(settings.model_copy(update={"encoder": encoder_settings}))


def _cached(settings: Settings, args: argparse.Namespace, base: Encoder) -> CachingEncoder:
    from shopvec.evaluation.cache import CachingEncoder

    folder = None if args.no_cache else (args.cache or settings.stack.home / "vectors")
    return CachingEncoder(base, folder)


@contextmanager
def _stores(args: argparse.Namespace) -> Iterator[StoreFactory]:
    if args.in_memory:
        from shopvec.store.memory import InMemoryProductStore

        yield InMemoryProductStore
        return
    from shopvec.evaluation.stores import milvus_stores

    with milvus_stores(args.milvus_uri) as factory:
        yield factory


def _eval_config(settings: Settings, args: argparse.Namespace, **override: Any) -> Any:
    from shopvec.evaluation.runner import EvalConfig
    from shopvec.evaluation.stores import unique_alias_prefix

    values: dict[str, Any] = {
        "fusions": tuple(dict.fromkeys(args.fusion or [settings.encoder.fusion])),
        "image_weight": settings.encoder.image_weight
        if args.image_weight is None
        else args.image_weight,
        "metric": args.metric or settings.encoder.metric,
        "index_type": args.index_type or settings.milvus.index_type,
        "scenarios": tuple(dict.fromkeys(getattr(args, "scenario", _SCENARIOS))),
        "ks": tuple(sorted(set(args.k))),
        "depth": args.depth,
        "alias_prefix": unique_alias_prefix(),
        "retrievals": tuple(dict.fromkeys(getattr(args, "retrieval", None) or ["dense", "hybrid"])),
        "hybrid_rankers": {
            str(scenario): getattr(args, "hybrid_ranker", None)
            or (mode if mode != "dense" else "rrf")
            for scenario, mode in settings.query.retrieval.items()
        },
        "rrf_k": getattr(args, "rrf_k", None) or settings.query.rrf_k,
        "weightings": tuple(
            dict.fromkeys(getattr(args, "weighting", None) or [settings.encoder.photo_weighting])
        ),
        "photo_crops": (False,) if getattr(args, "no_crops", False) else (False, True),
        "photo_words": (False,) if getattr(args, "no_photo_words", False) else (False, True),
        "glossary": (False,) if getattr(args, "no_glossary", False) else (False, True),
        "photo_examples": (False,) if getattr(args, "no_photo_examples", False) else (False, True),
        "lexical_weight": settings.query.lexical_weight
        if getattr(args, "lexical_weight", None) is None
        else args.lexical_weight,
    }
    values.update(override)
    return EvalConfig(**values)


def _titled(report: EvalReport) -> tuple[dict[str, Any], dict[str, Any]]:
    """Results and chance keyed by block name with its query and candidate counts."""
    results, chance = report.results(), report.chance()
    titles = {
        b.name: f"{b.name}  ({b.queries} queries, {b.pool} candidates)" for b in report.blocks
    }
    return (
        {titles[k]: v for k, v in results.items()},
        {titles[k]: v for k, v in chance.items()},
    )


def _header(report: EvalReport) -> str:
    info, cfg = report.encoder, report.config
    lines = [
        f"dataset   {report.dataset}: {report.corpus} documents, {report.indexed} indexed "
        f"({report.with_image} with a photo, {report.with_text} with words)",
        f"encoder   {info.model_id} version {info.version}",
        f"store     {cfg.index_type}, {cfg.metric}; image weight {cfg.image_weight}; "
        f"rankings cut at {cfg.depth} after exclusions; MAP over that depth",
        f"retrieval {' and '.join(cfg.retrievals)}; +bm25 rows: hybrid, ranker "
        + ", ".join(f"{k} {v}" for k, v in cfg.hybrid_rankers.items())
        + f" (rrf k={cfg.rrf_k}, weighted: words {cfg.lexical_weight})",
        "indexing  "
        + ", ".join(f"{k} {v:.1f}s" for k, v in report.index_seconds.items())
        + f" (encoding {report.encode_seconds:.1f}s)",
    ]
    if report.failed:
        lines.append(
            f"refused   {len(report.failed)} documents, e.g. {next(iter(report.failed.items()))}"
        )
    return "\n".join(lines)


# -- eval ----------------------------------------------------------------------------------------


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.encoders.alignment import AlignedEncoder, load_alignment
    from shopvec.evaluation.dataset import load_dataset
    from shopvec.evaluation.metrics import metric_names
    from shopvec.evaluation.report import plot_bars, render_table
    from shopvec.evaluation.runner import run_evaluation
    from shopvec.imaging import ImageLoader

    dataset = load_dataset(args.dataset)
    config = _eval_config(settings, args)
    cached = _cached(settings, args, _base_encoder(settings, args))
    alignment_path = args.alignment or settings.encoder.alignment_path
    encoder: Encoder = cached
    if alignment_path:
        encoder = AlignedEncoder(cached, load_alignment(alignment_path))
    try:
        with ImageLoader(settings.images) as images, _stores(args) as stores:
            report = run_evaluation(
                dataset, encoder, stores, images, config, progress=_bar(args.quiet)
            )
    finally:
        cached.save()

    if args.json:
        payload = report.to_dict()
        payload["results"], payload["chance"] = report.results(), report.chance()
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        results, chance = _titled(report)
        print(_header(report))
        print()
        print(render_table(results, chance, metrics=metric_names(config.ks)), end="")
    if args.plot:
        plot_bars(
            report.results(),
            args.plot,
            report.chance(),
            title=f"{Path(report.dataset).name}: {report.encoder.model_id}",
            columns=4,
        )
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _add_eval_arguments(
    p: argparse.ArgumentParser,
    fusions: list[str] | None,
    weightings: list[str] | None = None,
) -> None:
    p.add_argument("--backend", choices=_BACKENDS, help="default: SHOPVEC_ENCODER__BACKEND")
    p.add_argument("--model-path", help="clip backend: default SHOPVEC_ENCODER__MODEL_PATH")
    p.add_argument(
        "--alignment", help="an alignment file (default SHOPVEC_ENCODER__ALIGNMENT_PATH)"
    )
    p.add_argument(
        "--fusion",
        nargs="+",
        choices=_FUSIONS,
        default=fusions,
        help="fusion methods (default: "
        + (" ".join(fusions) if fusions else "SHOPVEC_ENCODER__FUSION")
        + ")",
    )
    p.add_argument("--image-weight", type=float, help="default: SHOPVEC_ENCODER__IMAGE_WEIGHT")
    p.add_argument(
        "--weighting",
        nargs="+",
        choices=_WEIGHTINGS,
        default=weightings,
        help="how a photo is weighed in the fused vector, a collection each (default: "
        + (" ".join(weightings) if weightings else "SHOPVEC_ENCODER__PHOTO_WEIGHTING")
        + ")",
    )
    p.add_argument(
        "--no-crops",
        action="store_true",
        help="photo queries searched whole only (default: whole, and as crops in a +crops row)",
    )
    p.add_argument(
        "--no-photo-words",
        action="store_true",
        help="photo queries ranked by the photo only (default: that, and re-ranked by the words "
        "of the products they resemble in a +words row)",
    )
    p.add_argument(
        "--no-glossary",
        action="store_true",
        help="queries with words searched as written only (default: that, and with their "
        "Chinese words' English senses too in +en rows)",
    )
    p.add_argument(
        "--no-photo-examples",
        action="store_true",
        help="words to photos by the words' vector only (default: that, and by example in an "
        "+examples row)",
    )
    p.add_argument("--metric", choices=["COSINE", "L2"], help="default: SHOPVEC_ENCODER__METRIC")
    p.add_argument(
        "--index-type",
        choices=["HNSW", "IVF_FLAT", "FLAT"],
        help="default: SHOPVEC_MILVUS__INDEX_TYPE",
    )
    p.add_argument(
        "--retrieval",
        nargs="+",
        choices=["dense", "hybrid"],
        help="for the scenarios with words: dense, hybrid (rows +bm25) or both (default)",
    )
    p.add_argument(
        "--hybrid-ranker",
        choices=["rrf", "weighted"],
        help="for every scenario (default: per scenario, SHOPVEC_QUERY__RETRIEVAL)",
    )
    p.add_argument("--rrf-k", type=int, help="default: SHOPVEC_QUERY__RRF_K")
    p.add_argument("--lexical-weight", type=float, help="default: SHOPVEC_QUERY__LEXICAL_WEIGHT")
    p.add_argument("--k", nargs="+", type=int, default=[1, 5, 10], help="cut-offs")
    p.add_argument("--depth", type=int, default=100, help="results kept per query (MAP depth)")
    p.add_argument(
        "--milvus-uri", help="a Milvus to use (default: Milvus Lite in a temporary folder)"
    )
    p.add_argument("--in-memory", action="store_true", help="exact search in memory, no Milvus")
    p.add_argument("--cache", type=Path, help="vector cache folder (default .shopvec/vectors)")
    p.add_argument("--no-cache", action="store_true", help="encode everything afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# -- convert -------------------------------------------------------------------------------------


def cmd_convert(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.evaluation.myntra import convert_myntra
    from shopvec.evaluation.shopper import convert_shopper

    if args.source_kind == "shopper":
        summary = convert_shopper(
            args.source, args.dest, seed=args.seed, n_queries=args.n_image, images=args.images
        )
    else:
        summary = convert_myntra(
            args.source,
            args.dest,
            seed=args.seed,
            n_title=args.n_title,
            n_image=args.n_image,
            images=args.images,
        )
    sets = ", ".join(f"{prefix}: {n}" for prefix, n in summary.queries.items())
    print(
        f"{args.dest}: {summary.products} products, queries {sets}; "
        f"{len(summary.skipped_without_image)} rows without a photo skipped"
    )
    return 0


# -- align ---------------------------------------------------------------------------------------


def cmd_align(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.encoders.alignment import AlignmentConfig
    from shopvec.evaluation.align import compare, fit_and_measure
    from shopvec.evaluation.dataset import load_dataset
    from shopvec.evaluation.metrics import metric_names
    from shopvec.evaluation.report import render_table
    from shopvec.imaging import ImageLoader

    dataset = load_dataset(args.dataset)
    cached = _cached(settings, args, _base_encoder(settings, args))
    eval_config = _eval_config(
        settings, args, scenarios=("text2image", "text2text", "text2product")
    )
    fit_config = AlignmentConfig(epochs=args.epochs, seed=args.seed)
    try:
        with ImageLoader(settings.images) as images, _stores(args) as stores:
            run = fit_and_measure(
                dataset,
                cached,
                images,
                stores,
                config=fit_config,
                heldout=args.heldout,
                split_seed=args.seed,
                eval_config=eval_config,
                progress=_bar(args.quiet),
            )
    finally:
        cached.save()
    alignment = run.fit.alignment
    path = Path(str(args.out).replace("{version}", alignment.version))
    alignment.save(path)

    results, chance = compare(run.before, run.after)
    if args.json:
        payload = {
            "alignment": {"path": str(path), "version": alignment.version, **alignment.fit},
            "split": {"fit": len(run.fit_ids), "heldout": len(run.heldout_ids), "seed": args.seed},
            "before": run.before.to_dict(),
            "after": run.after.to_dict(),
            "results": results,
            "chance": chance,
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0
    fit = run.fit
    print(f"alignment {alignment.version} saved to {path}")
    print(
        f"fitted on {fit.pairs} photo-title pairs of {len(run.fit_ids)} products "
        f"({fit.validation_pairs} of them for early stopping): best epoch {fit.best_epoch} "
        f"of {fit.epochs}, validation InfoNCE {fit.validation_loss_before:.3f} -> "
        f"{fit.validation_loss_after:.3f}"
    )
    print(
        f"held out: {len(run.heldout_ids)} products (split seed {args.seed}); "
        f"before = {run.before.encoder.model_id}, after = {run.after.encoder.model_id}"
    )
    print()
    print(render_table(results, chance, metrics=metric_names(eval_config.ks)), end="")
    return 0


# -- bench encoders ------------------------------------------------------------------------------


def add_bench_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bench encoders`` (its parser is made by ``shopvec.benchmarks.cli``)."""
    p.add_argument(
        "--backends",
        nargs="+",
        default=["offline", "hashing", "clip-b32-random"],
        help="offline, hashing, clip-b32-random, clip:PATH",
    )
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--n", type=int, default=64, help="photos and titles encoded per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell; the best is shown")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data/myntra-fashion-1000"),
        help="a folder with styles.csv and images/",
    )


def cmd_bench_encoders(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.evaluation.throughput import (
        as_json,
        bench_encoders,
        load_samples,
        machine,
        render_throughput,
    )

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photos, titles = load_samples(args.data, args.n)

    def show(result: Any) -> None:
        if not args.json:
            print(
                f"  {result.backend} batch {result.batch_size}: "
                f"{result.images_per_s:.1f} images/s, {result.texts_per_s:.1f} texts/s",
                file=sys.stderr,
            )

    results = bench_encoders(
        args.backends, args.batch_sizes, photos, titles, repeats=args.repeats, on_result=show
    )
    if args.json:
        print(json.dumps(as_json(results), indent=2))
    else:
        m = machine()
        print(
            f"{len(photos)} photos and titles from {args.data}, best of {args.repeats} runs; "
            f"{m['cpus']} CPUs, {m['torch_threads']} torch threads, GPU: {m['cuda'] or 'none'}"
        )
        print(render_throughput(results), end="")
    return 0


# -- registration --------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Adds ``eval``, ``convert`` and ``align`` to the ``shopvec`` sub-parsers."""
    ev = sub.add_parser(
        "eval", help="index an evaluation set through the pipeline, score its queries"
    )
    ev.add_argument("dataset", type=Path, help="a folder: corpus.jsonl, queries.jsonl, qrels/")
    ev.add_argument(
        "--scenario", nargs="+", choices=_SCENARIOS, default=list(_SCENARIOS), help="scenarios"
    )
    ev.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ev.add_argument("--plot", type=Path, help="also draw the results to this PNG")
    _add_eval_arguments(ev, list(_FUSIONS), list(_WEIGHTINGS))
    ev.set_defaults(func=cmd_eval)

    conv = sub.add_parser("convert", help="turn a source data set into an evaluation set")
    conv.add_argument(
        "source_kind",
        choices=["myntra", "shopper"],
        help="myntra: the sample as it is; shopper: its corpus, and shoppers' photos made from "
        "its photos as queries (--n-image of them)",
    )
    conv.add_argument("source", type=Path, help="folder with styles.csv and images/")
    conv.add_argument("dest", type=Path, help="folder to write the evaluation set to")
    conv.add_argument("--seed", type=int, default=13)
    conv.add_argument("--n-title", type=int, default=200, help="title queries to sample")
    conv.add_argument(
        "--n-image", type=int, default=200, help="photo (or shopper photo) queries to sample"
    )
    conv.add_argument("--images", choices=["copy", "symlink", "hardlink"], default="copy")
    conv.set_defaults(func=cmd_convert)

    al = sub.add_parser(
        "align", help="fit a photo-to-words alignment and measure it on held-out products"
    )
    al.add_argument("action", choices=["fit"])
    al.add_argument("dataset", type=Path, help="an evaluation set folder (its corpus is used)")
    al.add_argument(
        "--out",
        default="models/alignment-{version}.pt",
        help="where to save it; {version} becomes the alignment's version",
    )
    al.add_argument("--heldout", type=float, default=0.2, help="share of products held out")
    al.add_argument("--seed", type=int, default=0, help="split and fit seed")
    al.add_argument("--epochs", type=int, default=100, help="at most (early stopping)")
    al.add_argument("--json", action="store_true")
    _add_eval_arguments(al, None)
    al.set_defaults(func=cmd_align)
