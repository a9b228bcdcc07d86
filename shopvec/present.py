"""Showing results to people: a terminal table, JSON for a terminal, an HTML page of thumbnails.

Everything in a reply but its numbers comes from catalogue producers or search clients, so the
table and the JSON pass through shopvec.text and the page escapes every value it writes.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from schemas.search import SearchReply
from shopvec.text import printable, terminal_json

__all__ = ["format_json", "format_reply", "print_reply", "write_html"]

# Image sources a page may load; anything else (javascript:, file:, a relative path that would
# resolve beside the saved page) is shown as no photo.
_IMAGE_SOURCE = re.compile(r"^(?:https?://|data:image/(?:jpeg|png|gif|webp);base64,)", re.I)
_PAGE_POLICY = "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"


def _clip(text: str, width: int) -> str:
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_reply(reply: SearchReply, query: str = "") -> str:
    head = (
        f"{printable(query)!r}  ({printable(reply.scenario)}, {len(reply.results)} results, "
        f"{reply.took_ms:.0f} ms)"
    )
    if reply.error:
        error = printable(f"{reply.error.kind}: {reply.error.message}", keep_newlines=True)
        return f"{head}\n  error: {error}"
    lines = [head, f"  {'#':>3}  {'score':>6}  {'product':<16} {'title':<52} category"]
    for r in reply.results:
        lines.append(
            f"  {r.rank:>3}  {r.score:6.3f}  {_clip(r.product_id, 16):<16} "
            f"{_clip(r.title, 52):<52} {_clip(' > '.join(r.category_path), 40)}"
        )
    return "\n".join(lines)


def format_json(reply: SearchReply) -> str:
    """The reply as JSON, as a JSON reader gets it, but with nothing a terminal would act on."""
    return terminal_json(reply.model_dump_json(indent=2))


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
                if _IMAGE_SOURCE.match(src)
                else "<div class=none>no photo</div>"
            )
            + f"<figcaption>#{r.rank} · {r.score:.3f}<br>"
            + f"{html.escape(r.title)}<br><small>{html.escape(r.product_id)}</small>"
            + "</figcaption></figure>"
        )
    path.write_text(
        "<!doctype html><meta charset=utf-8>"
        + f'<meta http-equiv="Content-Security-Policy" content="{_PAGE_POLICY}">'
        + "<title>shopvec: "
        + html.escape(query)
        + "</title><style>body{font:14px sans-serif}figure{display:inline-block;width:160px;"
        "vertical-align:top;margin:8px}img{max-width:150px;max-height:200px}</style>"
        + f"<h1>{html.escape(query)}</h1>"
        + "".join(cards),
        encoding="utf-8",
    )
