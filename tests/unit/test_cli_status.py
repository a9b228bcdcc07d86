"""`shopvec status`'s warning about request and reply partitions near the embedded broker's
limit."""

from __future__ import annotations

from shopvec.cli import CROWDED_RECORDS, crowded_partitions
from shopvec.settings import Settings


def test_warns_about_the_partitions_at_or_over_the_mark_only() -> None:
    depths = {"search-requests[1]": CROWDED_RECORDS + 5, "search-replies.x[0]": 42}
    (line,) = crowded_partitions(Settings(), depths)
    assert f"search-requests[1] {CROWDED_RECORDS + 5:,}" in line
    assert "search-replies.x" not in line
    assert "shopvec down" in line


def test_says_nothing_when_every_partition_is_short() -> None:
    assert crowded_partitions(Settings(), {"search-requests[0]": 10}) == []
