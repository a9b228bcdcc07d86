"""Untrusted text made safe for a terminal: what every command prints passes through here.

Titles, brands, categories and ids come from catalogue producers, query text and filters from
search clients, and error messages quote both. A terminal obeys what it is sent: an escape
sequence can retitle the window, clear the screen, rewrite the clipboard (OSC 52) or draw a
link; a carriage return overwrites what came before; a bidi override shows the rest of a line
reversed. So escape sequences go whole, other control characters go, and line breaks become
spaces so one record stays on one line.
"""

from __future__ import annotations

import re

__all__ = ["printable", "terminal_json"]

_ESCAPE_SEQUENCE = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]
        # CSI (7-bit or 8-bit): parameters, intermediates, a final byte (cursor, colour, erase)
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) .*? (?:\x07|\x1b\\|\x9c)
        # OSC, DCS, SOS, PM, APC up to their terminator, payload included (titles, clipboard)
    | \x1b [\x20-\x2f]* [\x30-\x7e]
        # any other escape: ESC c (reset), ESC ( 0 (line-drawing character set), ...
    """,
    re.VERBOSE | re.DOTALL,
)
# An escape sequence cut short (no final byte, no terminator) is not matched above; its ESC or
# C1 introducer is dropped below, which leaves the rest as inert text.

_LINE_BREAKS = "\t\n\v\f\r\x85\u2028\u2029"
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_DROPPED = re.compile(f"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f{_BIDI_CONTROLS}]")
_BROKEN = re.compile(f"[{_LINE_BREAKS}]")
_BROKEN_KEEPING_NEWLINES = re.compile(f"[{_LINE_BREAKS.replace(chr(10), '')}]")
# A lone surrogate cannot be encoded for the terminal at all: printing it would raise.
_SURROGATE = re.compile("[\ud800-\udfff]")

# What JSON leaves as it is (it escapes only C0) and a terminal would still act on.
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_BIDI_CONTROLS}\u2028\u2029\ud800-\udfff]")


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """The text with escape sequences and control characters removed and line breaks as spaces.

    keep_newlines: for messages of several lines (a validation error), where a newline is a
    line and not a trick; carriage returns and the other breaks still become spaces.
    """
    s = _ESCAPE_SEQUENCE.sub("", str(text))
    s = (_BROKEN_KEEPING_NEWLINES if keep_newlines else _BROKEN).sub(" ", s)
    s = _DROPPED.sub("", s)
    return _SURROGATE.sub("\ufffd", s)


def terminal_json(text: str) -> str:
    """JSON text with every character a terminal could act on written as a \\u escape.

    The document means the same to a JSON reader; only what a person sees changes. Such
    characters can only be inside strings, since JSON's own syntax is ASCII.
    """
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
