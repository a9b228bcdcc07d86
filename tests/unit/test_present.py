import json
from pathlib import Path

import pytest

from schemas.search import SearchError, SearchReply, SearchResult
from shopvec.present import format_json, format_reply, write_html
from shopvec.text import printable

HOSTILE = [
    "\x1b]0;pwned\x07",  # OSC: sets the window title
    "\x1b]52;c;cHduZWQ=\x1b\\",  # OSC 52: writes the clipboard
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # a hidden link
    "\x1b[2J",  # CSI: clears the screen
    "\x1b[31;1m",  # CSI: colour
    "\x9b2J",  # 8-bit CSI
    "\x9d0;pwned\x9c",  # 8-bit OSC
    "\x1bc",  # reset
    "\x1b(0",  # line-drawing character set
    "\x1bP+q544e\x1b\\",  # DCS: a terminfo query
    "\u202e",  # right-to-left override
    "\u2066\u2069\u200f",  # isolates, right-to-left mark
    "\x07\x08\x00\x7f\x85\x90\x9f",  # bell, backspace, NUL, DEL, NEL, C1
    "a\rb",
]


def _safe(text: str) -> bool:
    return not any(
        ord(c) < 0x20
        or 0x7F <= ord(c) <= 0x9F
        or c in "\u061c\u200e\u200f\u2028\u2029"
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
        or 0xD800 <= ord(c) <= 0xDFFF
        for c in text
    )


@pytest.mark.parametrize("hostile", [*HOSTILE, "\ud800"])  # a lone surrogate cannot be printed
def test_printable_leaves_nothing_a_terminal_acts_on(hostile: str) -> None:
    out = printable(f"Blue shirt {hostile} size M")
    assert _safe(out), repr(out)
    assert out.startswith("Blue shirt ") and out.endswith(" size M")


def test_printable_drops_whole_sequences_and_keeps_words() -> None:
    assert printable("\x1b]0;pwned\x07Blue") == "Blue"
    assert printable("\x1b[2J\x1b[HBlue") == "Blue"
    assert printable("a\rb") == "a b"
    assert printable("a\tb\nc") == "a b c"
    assert printable("abc\u202edcba") == "abcdcba"
    assert printable("蓝色牛仔裤 · Jeans ü") == "蓝色牛仔裤 · Jeans ü"
    # A sequence cut short loses its introducer; what follows is inert text.
    assert printable("\x1b]0;no terminator") == "0;no terminator"


def test_printable_keeps_newlines_only_when_asked() -> None:
    assert printable("line 1\nline 2\r\x1b[2K", keep_newlines=True) == "line 1\nline 2 "
    assert printable("line 1\nline 2") == "line 1 line 2"


def _reply(title: str, **result: object) -> SearchReply:
    fields = {"product_id": "sku-1", "score": 0.9, "rank": 1, "title": title} | result
    return SearchReply(request_id="r", scenario="text2product", results=[SearchResult(**fields)])


@pytest.mark.parametrize("hostile", HOSTILE)
def test_result_table_is_safe(hostile: str) -> None:
    reply = _reply(
        f"Shirt{hostile}",
        product_id=f"id{hostile}",
        brand=hostile,
        category_path=["Apparel", hostile],
    )
    table = format_reply(reply, query=f"shirt{hostile}")
    assert all(_safe(line) for line in table.split("\n")), repr(table)
    assert len(table.split("\n")) == 3  # head, column names, one row


def test_error_reply_is_safe() -> None:
    reply = SearchReply(
        request_id="r",
        error=SearchError(kind="invalid_request", message="bad title '\x1b]0;pwned\x07'\r"),
    )
    text = format_reply(reply, query="q")
    assert _safe(text.replace("\n", "")) and "bad title ''" in text


@pytest.mark.parametrize("hostile", HOSTILE)
def test_json_for_the_terminal_is_safe_and_means_the_same(hostile: str) -> None:
    reply = _reply(f"Shirt{hostile}", explanation={"note": hostile})
    text = format_json(reply)
    assert _safe(text.replace("\n", "")), repr(text)
    assert json.loads(text) == json.loads(reply.model_dump_json())


def test_html_escapes_everything_and_loads_only_images(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    reply = SearchReply(
        request_id="r",
        results=[
            SearchResult(
                product_id="a",
                score=1.0,
                rank=1,
                title="<script>alert(1)</script>",
                image_url='https://cdn.example.com/1.jpg" onerror="alert(1)',
            ),
            SearchResult(product_id="b", score=0.5, rank=2, image_url="javascript:alert(1)"),
            SearchResult(
                product_id="c", score=0.4, rank=3, thumbnail="data:image/jpeg;base64,AAAA"
            ),
        ],
    )
    write_html(reply, page, query="</title><script>alert(2)</script>")
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert 'onerror="' not in text and "&quot; onerror=&quot;" in text
    assert "javascript:" not in text
    assert text.count("<img") == 2
    assert "Content-Security-Policy" in text
