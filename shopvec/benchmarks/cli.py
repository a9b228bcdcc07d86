"""`shopvec bench ...`: each benchmark a subcommand that prints figures, or JSON with --json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shopvec.settings import Settings

__all__ = ["add_bench_commands"]


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            print(f"{prefix:48} {value}")

    walk("", result)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.benchmarks.ingest import run_ingest_repeated, run_memory_backlogs

    if args.memory_backlogs:
        if len(args.memory_backlogs) < 2:
            print("--memory-backlogs needs two or more backlog sizes", file=sys.stderr)
            return 2
        result = run_memory_backlogs(
            settings,
            backlogs=tuple(args.memory_backlogs),
            half_rate_products=args.half_rate_products,
            hashing=args.encoder == "hashing",
        )
        _print(result, args.json)
        return 0
    encoder = None
    if args.encoder == "hashing":
        from shopvec.encoders.hashing import HashingEncoder

        encoder = HashingEncoder()
    if args.aged_events:
        from shopvec.benchmarks.ingest import compare_aged, run_ingest_bench

        runs = [
            run_ingest_bench(
                settings,
                products=args.products,
                half_rate_products=args.half_rate_products,
                encoder=encoder,
                aged_events=aged,
            )
            for aged in (0, args.aged_events)
        ]
        _print(compare_aged(*runs), args.json)
        return 0
    result = run_ingest_repeated(
        settings,
        repeat=args.repeat,
        products=args.products,
        half_rate_products=args.half_rate_products,
        encoder=encoder,
    )
    _print(result, args.json)
    return 0


def _query(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.benchmarks.query import run_query_bench

    result = run_query_bench(
        settings,
        sizes=tuple(args.sizes),
        rate=args.rate,
        requests=args.requests,
        sample=args.sample,
        rounds=args.rounds,
        aged_events=args.aged_events,
        kinds=tuple(args.kinds),
    )
    _print(result, args.json)
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.benchmarks.broker import run_broker_bench
    from shopvec.benchmarks.common import bench_settings

    with bench_settings(settings) as s:
        result = run_broker_bench(
            s,
            batches=tuple(args.batches),
            probes=args.probes,
            topic_config=dict(args.topic_config),
        )
    _print(result, args.json)
    return 0


def _chaos(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.benchmarks.chaos import run_chaos_bench

    result = run_chaos_bench(
        settings,
        products=args.products,
        clicks=args.clicks,
        users=args.users,
        kills=args.kills,
        seconds=args.seconds,
        search_rate=args.search_rate,
        seed=args.seed,
        soak_minutes=args.soak_minutes,
    )
    _print(result, args.json)
    return 0 if result["lost"] == result["doubled"] == result["mismatched"] == 0 else 1


def _http(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.benchmarks.http import run_http_bench

    result = run_http_bench(
        settings,
        products=args.products,
        rate=args.rate,
        requests=args.requests,
        rounds=args.rounds,
        kinds=tuple(args.kinds),
        repeat=args.repeat,
    )
    _print(result, args.json)
    return 0


def _encoders(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.evaluation_cli import cmd_bench_encoders

    return cmd_bench_encoders(settings, args)


def _behaviour(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.evaluation.behaviour_bench import bench_behaviour, render_bench

    cache = args.cache or settings.stack.home / "datasets"
    cache.mkdir(parents=True, exist_ok=True)
    result = bench_behaviour(cache, settings.behaviour, encoder=args.encoder)
    print(render_bench(result, as_json=args.json))
    return 0


def add_bench_commands(sub: Any) -> None:
    from shopvec.evaluation_cli import add_bench_encoder_arguments

    bench = sub.add_parser("bench", help="benchmarks: figures, and JSON with --json")
    kinds = bench.add_subparsers(dest="bench", required=True)

    ingest = kinds.add_parser("ingest", help="products/s end to end against the raw encoder")
    ingest.add_argument("--products", type=int, default=1000, help="the backlog to index")
    ingest.add_argument("--half-rate-products", type=int, default=200)
    ingest.add_argument("--encoder", choices=["configured", "hashing"], default="configured")
    ingest.add_argument(
        "--repeat", type=_at_least_one, default=1, help="runs, each on a fresh stack; a summary"
    )
    ingest.add_argument(
        "--aged-events",
        type=int,
        default=0,
        metavar="N",
        help="instead: a fresh stack, then one whose products topic has carried N events",
    )
    ingest.add_argument(
        "--memory-backlogs",
        type=_at_least_one,
        nargs="+",
        metavar="N",
        help="instead: peak RSS of the indexer's process at each backlog size (two or more)",
    )
    ingest.set_defaults(func=_ingest)

    query = kinds.add_parser("query", help="latency over Kafka against in-process; ANN recall")
    query.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    query.add_argument("--rate", type=float, default=20.0, help="requests per second")
    query.add_argument("--requests", type=int, default=1000, help="per query kind, size and side")
    query.add_argument("--sample", type=int, default=200, help="products encoded as seeds")
    query.add_argument(
        "--rounds", type=int, default=50, help="alternating in-process and Kafka rounds"
    )
    query.add_argument(
        "--kinds",
        nargs="+",
        choices=["text", "image", "text2image"],
        default=["text", "image"],
        help="words to products, a photo, words to photos (searched by example)",
    )
    query.add_argument(
        "--aged-events",
        type=int,
        default=0,
        metavar="N",
        help="also measure on topics that have already carried N searches, against fresh ones",
    )
    query.set_defaults(func=_query)

    broker = kinds.add_parser(
        "broker", help="produce-to-fetch round trip as a partition fills with record batches"
    )
    broker.add_argument(
        "--batches", type=int, nargs="+", default=[0, 1000, 3000], help="record batches held"
    )
    broker.add_argument("--probes", type=int, default=100, help="round trips timed at each")
    broker.add_argument(
        "--topic-config",
        type=_key_value,
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the probed topic's settings, e.g. retention.ms=1000",
    )
    broker.set_defaults(func=_broker)

    chaos = kinds.add_parser(
        "chaos", help="kill -9 every worker and Milvus under load; compare the end state"
    )
    chaos.add_argument("--products", type=int, default=1000, help="distinct products")
    chaos.add_argument("--clicks", type=int, default=10_000, help="user events")
    chaos.add_argument("--users", type=int, default=300)
    chaos.add_argument("--kills", type=int, default=5, help="SIGKILLs per worker")
    chaos.add_argument("--seconds", type=float, default=240.0, help="how long the load lasts")
    chaos.add_argument("--search-rate", type=float, default=2.0, help="searches per second")
    chaos.add_argument("--seed", type=int, default=7)
    chaos.add_argument(
        "--soak-minutes", type=float, default=0.0, help="then a steady load this long"
    )
    chaos.set_defaults(func=_chaos)

    web = kinds.add_parser(
        "http", help="search latency over the HTTP API against the Python Kafka client"
    )
    web.add_argument("--products", type=int, default=10_000, help="the collection's size")
    web.add_argument("--rate", type=float, default=20.0, help="requests per second")
    web.add_argument("--requests", type=int, default=500, help="per query kind and side")
    web.add_argument("--rounds", type=int, default=25, help="alternating Kafka and HTTP rounds")
    web.add_argument("--kinds", nargs="+", choices=["text", "image"], default=["text", "image"])
    web.add_argument(
        "--repeat",
        type=_at_least_one,
        default=1,
        help="runs on the same stack; figures from their pooled samples, and each run's",
    )
    web.set_defaults(func=_http)

    enc = kinds.add_parser("encoders", help="images/s and texts/s per backend and batch size")
    add_bench_encoder_arguments(enc)
    enc.set_defaults(func=_encoders)

    beh = kinds.add_parser("behaviour", help="next-item prediction from user behaviour")
    beh.add_argument("--dataset", choices=["ml-100k"], default="ml-100k")
    beh.add_argument("--encoder", choices=["offline", "hashing"], default="offline")
    beh.add_argument("--cache", type=Path, help="where the data set is kept")
    beh.set_defaults(func=_behaviour)

    for parser in (ingest, query, broker, chaos, web, enc, beh):
        if not any(a.dest == "json" for a in parser._actions):
            parser.add_argument("--json", action="store_true")
