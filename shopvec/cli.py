"""The `shopvec` command: the embedded stack, publishing, searching, the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from shopvec.benchmarks.cli import add_bench_commands
from shopvec.evaluation_cli import add_commands as add_evaluation_commands
from shopvec.settings import Settings
from shopvec.stack import COMPAT, WORKERS
from shopvec.text import printable

__all__ = ["main"]

log = logging.getLogger("shopvec")


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.stack import EmbeddedStack

    stack = EmbeddedStack(settings)
    workers = [] if args.no_workers else args.workers
    stack.up(workers, compat=True)
    for proc in stack.processes():
        ops = f"  ops http://127.0.0.1:{proc.port}/" if proc.name in WORKERS else ""
        if proc.name == "http":
            ops = f"  page http://127.0.0.1:{proc.port}/"
        if proc.name == COMPAT:
            ops = f"  for older Kafka clients: kcat -b 127.0.0.1:{proc.port} -L"
        print(f"{proc.name:12} pid {proc.pid:<8} log {proc.log_path}{ops}")
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.http.server import serve
    from shopvec.logs import configure_logging

    if args.host:
        settings = settings.model_copy(
            update={"http": settings.http.model_copy(update={"host": args.host})}
        )
    if args.port:
        settings = settings.model_copy(
            update={"http": settings.http.model_copy(update={"port": args.port})}
        )
    configure_logging(settings.log_level, json_lines=False)
    print(f"shopvec: the page and API on http://{settings.http.host}:{settings.http.port}/")
    return serve(settings)


def _cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.stack import EmbeddedStack

    stopped = EmbeddedStack(settings).down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from shopvec.stack import EmbeddedStack

    stack = EmbeddedStack(settings)
    procs = stack.processes()
    if not procs:
        print("the embedded stack is not running")
        return 0
    children = {c.name: c for c in stack.supervised()}
    supervisor = stack.supervisor()
    for proc in procs:
        line = f"{proc.name:12} pid {proc.pid:<8} {'running' if proc.alive() else 'gone':8}"
        child = children.get(proc.name)
        if child is not None:
            if child.state == "waiting" and child.next_start_at is not None:
                line += f" (starting again in {max(0, child.next_start_at - time.time()):.0f}s)"
            line += f" restarts {child.restarts}"
        if proc.name in WORKERS:
            line += f"  http://127.0.0.1:{proc.port}/"
        elif proc.name == COMPAT:
            line += f"  kcat -b 127.0.0.1:{proc.port}"
        print(line.rstrip())
        parts = []
        if child is not None and child.last_exit:
            parts.append(f"last exit: {child.last_exit}")
        if child is not None and child.last_error:
            # Log text can hold escape sequences, which a terminal would obey.
            parts.append(f"last error: {printable(child.last_error)}")
        if parts:
            print(f"{'':10} " + "; ".join(parts))
    if children and (supervisor is None or not supervisor.alive()):
        print("the supervisor is not running: nothing is started again; `shopvec up` restarts it")
    if settings.kafka_embedded and any(p.name == "kafka" and p.alive() for p in procs):
        print(requests_topic_line(settings))
        for line in crowded_partitions(settings):
            print(line)
    return 0


def requests_topic_line(settings: Settings) -> str:
    """Which generation of the search requests topic searches go to (shopvec.kafka.generations)."""
    from shopvec.kafka.generations import current_generation, request_generations

    try:
        names = request_generations(settings)
    except Exception as exc:  # the broker is starting, or gone
        return f"could not list the search requests topics: {exc}"
    if not names:
        return f"search requests: {settings.topics.search_requests} does not exist yet"
    current = current_generation(names)
    if len(names) == 1:
        return f"search requests go to {current}"
    return f"search requests go to {current} (standby {names[-1]}; {len(names)} generations)"


CROWDED_RECORDS = 10_000
"""Records in a request or reply partition from which `shopvec status` warns: the embedded
broker's 2 ms fetches came back empty from about 20,000 (docs/benchmarks.md)."""


def crowded_partitions(settings: Settings, depths: dict[str, int] | None = None) -> list[str]:
    """Warnings for the request/reply partitions of the embedded broker that near the depth at
    which its searches stop being answered."""
    from shopvec.kafka.admin import request_reply_depths

    if depths is None:
        try:
            depths = request_reply_depths(settings)
        except Exception as exc:  # the broker is starting, or gone
            return [f"could not read the search topics' depths: {exc}"]
    crowded = {name: n for name, n in depths.items() if n >= CROWDED_RECORDS}
    if not crowded:
        return []
    held = ", ".join(f"{name} {n:,}" for name, n in crowded.items())
    return [
        f"search topics holding many records: {held}. The embedded broker stops answering "
        "searches at about 20,000 records a partition. By default these topics are replaced "
        "long before that (SHOPVEC_KAFKA__REQUEST_TOPIC_RECORDS, "
        "SHOPVEC_KAFKA__REPLY_TOPIC_RECORDS); with the limits off, or a client that keeps "
        "a shared reply topic, restart the stack soon (`shopvec down`, then `shopvec up`; "
        "docs/benchmarks.md, the embedded broker)"
    ]


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.kafka.admin import ensure_topics

    created = ensure_topics(settings)
    print("created: " + (printable(", ".join(created)) if created else "all topics existed"))
    return 0


def _cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.publish import publish_lines

    sent = publish_lines(settings, args.file, topic=settings.topics.products)
    print(f"published {sent} events to {printable(settings.topics.products)}")
    return 0


def _cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.client import SearchClient
    from shopvec.present import format_json, print_reply, write_html

    filters = {
        k: v
        for k, v in {
            "category": args.category,
            "brand": args.brand,
            "price_min": args.price_min,
            "price_max": args.price_max,
            "in_stock": True if args.in_stock else None,
        }.items()
        if v is not None
    }
    with SearchClient(settings, timeout_s=args.timeout) as client:
        reply = client.search(
            args.text,
            image=args.image,
            top_k=args.top_k,
            offset=args.offset,
            scenario=args.scenario,
            ranker=args.ranker,
            filters=filters or None,
            user_id=args.user,
            like_product_id=args.like,
            explain=args.explain,
            deadline_ms=args.deadline_ms,
        )
    label = " + ".join(
        part
        for part in (
            args.text,
            f"photo {args.image}" if args.image else None,
            f"like {args.like}" if args.like else None,
            f"for {args.user}" if args.user else None,
        )
        if part
    )
    if args.json:
        print(format_json(reply))
    else:
        print_reply(reply, query=label)
    if args.html:
        write_html(reply, Path(args.html), query=label)
    return 1 if reply.error else 0


def _cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.publish import backfill

    sent = backfill(settings, args.path)
    print(f"published {sent} events to {printable(settings.topics.products)}")
    return 0


def _cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.indexing.reindex import reindex

    summary = reindex(settings, switch_alias=not args.no_switch)
    for key, value in summary.items():
        print(f"{key:14} {printable(value)}")
    if summary["unfinished"]:
        print(f"shopvec reindex: alias left as it was: {summary['unfinished']}", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from shopvec.demo import run_demo

    return run_demo(settings, keep_running=not args.stop)


def _cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.export import SCHEMA_DIR, render_all, write_all

    if args.check:
        stale = [
            n
            for n, t in render_all().items()
            if not (SCHEMA_DIR / n).exists() or (SCHEMA_DIR / n).read_text() != t
        ]
        if stale:
            print("out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        print("schemas are up to date")
        return 0
    for path in write_all():
        print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopvec", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the embedded broker, Milvus Lite and the workers")
    up.add_argument("--no-workers", action="store_true")
    up.add_argument("--workers", nargs="*", default=list(WORKERS))
    up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="what `up` started").set_defaults(func=_cmd_status)

    serve = sub.add_parser(
        "serve", help="the HTTP API and search page, in front of the query workers (foreground)"
    )
    serve.add_argument("--host", help="default SHOPVEC_HTTP__HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default SHOPVEC_HTTP__PORT (8080)")
    serve.set_defaults(func=_cmd_serve)

    topics = sub.add_parser("topics", help="topic administration")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=_cmd_topics)

    pub = sub.add_parser("publish", help="publish events from a JSON Lines file")
    pub.add_argument("kind", choices=["products"])
    pub.add_argument("file", type=Path)
    pub.set_defaults(func=_cmd_publish)

    s = sub.add_parser("search", help="search and print a result table")
    s.add_argument("text", nargs="?")
    s.add_argument("--image", type=Path)
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument(
        "--scenario",
        default="auto",
        choices=[
            "auto",
            "image2image",
            "text2image",
            "text2product",
            "cross",
            "recommend",
            "more_like_this",
        ],
    )
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--ranker", default="fused", choices=["fused", "rrf", "weighted"])
    s.add_argument("--like", metavar="PRODUCT_ID", help="more like this product")
    s.add_argument("--category", help="any level of the category path")
    s.add_argument("--brand")
    s.add_argument("--price-min", type=float)
    s.add_argument("--price-max", type=float)
    s.add_argument("--in-stock", action="store_true")
    s.add_argument("--deadline-ms", type=int)
    s.add_argument("--user")
    s.add_argument("--explain", action="store_true")
    s.add_argument("--json", action="store_true")
    s.add_argument("--html", help="also write a page of result thumbnails")
    s.add_argument("--timeout", type=float, default=15.0)
    s.set_defaults(func=_cmd_search)

    add_bench_commands(sub)
    add_evaluation_commands(sub)

    bf = sub.add_parser(
        "backfill", help="publish a catalogue: a JSON Lines file, a folder of them, or the sample"
    )
    bf.add_argument("path", type=Path)
    bf.set_defaults(func=_cmd_backfill)

    ri = sub.add_parser(
        "reindex", help="rebuild this model's collection from the topic, then switch the alias"
    )
    ri.add_argument("--no-switch", action="store_true", help="leave the alias where it is")
    ri.set_defaults(func=_cmd_reindex)

    demo = sub.add_parser("demo", help="start the stack, index the sample catalogue, search it")
    demo.add_argument("--stop", action="store_true", help="stop the stack at the end")
    demo.set_defaults(func=_cmd_demo)

    sch = sub.add_parser("schemas", help="write the JSON Schema files of the contracts")
    sch.add_argument("action", choices=["export"])
    sch.add_argument("--check", action="store_true")
    sch.set_defaults(func=_cmd_schemas)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from shopvec.allocator import keep_freed_memory
    from shopvec.logs import configure_logging

    settings = Settings()
    # Before any thread starts: the benchmarks and the evaluation encode in this process.
    keep_freed_memory(settings.malloc_keep_mb)
    configure_logging("DEBUG" if args.verbose else "WARNING", json_lines=False)
    if args.command == "search" and not (args.text or args.image or args.user or args.like):
        print("give words, --image, or both; --like PRODUCT_ID; or --user alone", file=sys.stderr)
        return 2
    try:
        return int(args.func(settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        # Errors quote what they refused: a product, a reply, a file's line.
        print(f"shopvec {args.command}: {printable(exc, keep_newlines=True)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
