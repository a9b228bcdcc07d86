"""Showing results to people: a terminal table, and an HTML page of thumbnails."""

from __future__ import annotations

import html
from pathlib import Path

from schemas.search import SearchReply

__all__ = ["format_reply", "print_reply", "write_html"]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_reply(reply: SearchReply, query: str = "") -> str:
    head = f"{query!r}  ({reply.scenario}, {len(reply.results)} results, {reply.took_ms:.0f} ms)"
    if reply.error:
        return f"{head}\n  error: {reply.error.kind}: {reply.error.message}"
    lines = [head, f"  {'#':>3}  {'score':>6}  {'product':<16} {'title':<52} category"]
    for r in reply.results:
        lines.append(
            f"  {r.rank:>3}  {r.score:6.3f}  {_clip(r.product_id, 16):<16} "
            f"{_clip(r.title, 52):<52} {_clip(' > '.join(r.category_path), 40)}"
        )
    return "\n".join(lines)


def print_reply(reply: SearchReply, query: str = "") -> None:
    print(format_reply(reply, query))


def write_html(
    reply: SearchReply, path: Path, query: str = "", images: dict[str, str] | None = None
) -> None:
    """images: product id to an image src (URL or data: URI) where results carry no URL."""
    cards = []
    for r in reply.results:
        src = (images or {}).get(r.product_id) or r.image_url or r.thumbnail or ""
        cards.append(
            "<figure>"
            + (
                f'<img src="{html.escape(src)}" alt="">'
                if src
                else "<div class=none>no photo</div>"
            )
            + f"<figcaption>#{r.rank} · {r.score:.3f}<br>"
            + f"{html.escape(r.title)}</figcaption></figure>"
        )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>shopvec: "
        + html.escape(query)
        + "</title><style>body{font:14px sans-serif}figure{display:inline-block;width:160px;"
        "vertical-align:top;margin:8px}img{max-width:150px;max-height:200px}</style>"
        + f"<h1>{html.escape(query)}</h1>"
        + "".join(cards),
        encoding="utf-8",
    )
