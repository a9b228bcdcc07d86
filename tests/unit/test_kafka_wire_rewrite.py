"""The compatibility listener's response rewrites, on bytes the embedded broker really sent and on
responses built field by field."""

from __future__ import annotations

import struct

import pytest

from shopvec.kafka.wire_rewrite import (
    API_VERSIONS,
    FIND_COORDINATOR,
    METADATA,
    Endpoint,
    request_header,
    rewrite_response,
)

BROKER = Endpoint("127.0.0.1", 39192)
LISTENER = Endpoint("127.0.0.1", 39193)

# The embedded broker's (Tansu 0.6.0) ApiVersions v3 response to correlation id 1, as captured:
# 36 api keys, throttle time 0, then four tagged fields that all hold their default value.
TANSU_API_VERSIONS_V3 = bytes.fromhex(
    "00000001000025000f0000000500000c000000040000200000000400001a000000040000140000000600000b"
    "000000090000150000000200004700000000000008000000090000110000000100000200000009000012000000"
    "040000160000000500000d0000000500002c000000010000100000000500001e0000000300002e000000000000"
    "24000000020000000000000b00003c000000010000030000000c00001900000004000033000000000000"
    "1c0000000400001d0000000300000e0000000500004b0000000000000900000009000045000000000000130000"
    "000700000a0000000600003200000000000001000000110000180000000500002a000000020000000000040001"
    "010108ffffffffffffffff020101030100"
)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _skip_tags_like_librdkafka_2_0_2(data: bytes, offset: int) -> int:
    """What librdkafka 2.0.2 does with a tagged-field section: it steps over one byte too few
    of each value (its error message names the same huge length this reproduces)."""
    count, offset = _read_uvarint(data, offset)
    for _ in range(count):
        _, offset = _read_uvarint(data, offset)
        length, offset = _read_uvarint(data, offset)
        if length > 1:
            if offset + length - 1 > len(data):
                raise ValueError(f"expected {length - 1} bytes > {len(data) - offset} remaining")
            offset += length - 1
    return offset


def _top_level_tags_offset(payload: bytes) -> int:
    count, offset = _read_uvarint(payload, 6)
    for _ in range(count - 1):
        offset += 6
        offset = _skip_tags_like_librdkafka_2_0_2(payload, offset)  # per-key tags are empty
    return offset + 4


def test_the_captured_response_fails_as_librdkafka_2_0_2_reports() -> None:
    offset = _top_level_tags_offset(TANSU_API_VERSIONS_V3)
    with pytest.raises(ValueError, match="expected 216172782113783806 bytes > 5 remaining"):
        _skip_tags_like_librdkafka_2_0_2(TANSU_API_VERSIONS_V3, offset)


def test_api_versions_loses_only_its_default_tagged_fields() -> None:
    out = rewrite_response(API_VERSIONS, 3, TANSU_API_VERSIONS_V3, BROKER, LISTENER)
    offset = _top_level_tags_offset(out)
    assert out[:offset] == TANSU_API_VERSIONS_V3[:offset]  # every api key and version kept
    assert out[offset:] == b"\x00"
    assert _skip_tags_like_librdkafka_2_0_2(out, offset) == len(out)


def test_api_versions_keeps_a_tagged_field_that_says_something() -> None:
    offset = _top_level_tags_offset(TANSU_API_VERSIONS_V3)
    epoch_7 = b"\x01\x08" + struct.pack(">q", 7)
    payload = TANSU_API_VERSIONS_V3[:offset] + b"\x02" + b"\x00\x01\x01" + epoch_7
    out = rewrite_response(API_VERSIONS, 3, payload, BROKER, LISTENER)
    assert out == TANSU_API_VERSIONS_V3[:offset] + b"\x01" + epoch_7


def test_old_api_versions_and_other_apis_pass_unchanged() -> None:
    assert rewrite_response(API_VERSIONS, 2, b"\x00\x00\x00\x01junk", BROKER, LISTENER).endswith(
        b"junk"
    )
    assert rewrite_response(0, 9, b"\x00\x00\x00\x01\xff", BROKER, LISTENER) == (
        b"\x00\x00\x00\x01\xff"
    )


def _string(text: str | None, flexible: bool) -> bytes:
    if text is None:
        return b"\x00" if flexible else struct.pack(">h", -1)
    raw = text.encode()
    return (_uvarint(len(raw) + 1) if flexible else struct.pack(">h", len(raw))) + raw


def _metadata(version: int, brokers: list[tuple[int, str, int]]) -> tuple[bytes, bytes]:
    """A Metadata response and the part after its broker list (which must come through as is)."""
    flexible = version >= 9
    out = struct.pack(">i", 42) + (b"\x00" if flexible else b"")
    if version >= 3:
        out += struct.pack(">i", 0)
    out += _uvarint(len(brokers) + 1) if flexible else struct.pack(">i", len(brokers))
    for node, host, port in brokers:
        out += struct.pack(">i", node) + _string(host, flexible) + struct.pack(">i", port)
        if version >= 1:
            out += _string("rack-a", flexible)
        if flexible:
            out += b"\x00"
    rest = _string("cluster", flexible) + struct.pack(">i", 111) + b"topics..."
    return out + rest, rest


@pytest.mark.parametrize("version", [0, 1, 3, 8, 9, 12])
def test_metadata_points_clients_at_the_listener(version: int) -> None:
    payload, rest = _metadata(version, [(111, "127.0.0.1", 39192), (7, "elsewhere", 9092)])
    out = rewrite_response(METADATA, version, payload, BROKER, LISTENER)
    expected, _ = _metadata(version, [(111, "127.0.0.1", 39193), (7, "elsewhere", 9092)])
    assert out == expected
    assert out.endswith(rest)


def test_metadata_with_a_longer_host_name_stays_well_formed() -> None:
    payload, _ = _metadata(12, [(111, "localhost", 39192)])
    listener = Endpoint("compat.shopvec.internal", 39193)
    out = rewrite_response(METADATA, 12, payload, BROKER, listener)
    assert out == _metadata(12, [(111, "compat.shopvec.internal", 39193)])[0]


def _coordinator(version: int, host: str, port: int) -> bytes:
    flexible = version >= 3
    out = struct.pack(">i", 42) + (b"\x00" if flexible else b"")
    if version == 0:
        return out + struct.pack(">hi", 0, 111) + _string(host, False) + struct.pack(">i", port)
    out += struct.pack(">i", 0)
    if version <= 3:
        out += struct.pack(">h", 0) + _string(None, flexible) + struct.pack(">i", 111)
        out += _string(host, flexible) + struct.pack(">i", port)
        return out + (b"\x00" if flexible else b"")
    out += _uvarint(2) + _string("group-1", True) + struct.pack(">i", 111)
    out += _string(host, True) + struct.pack(">i", port) + struct.pack(">h", 0)
    return out + _string(None, True) + b"\x00" + b"\x00"


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 6])
def test_find_coordinator_points_clients_at_the_listener(version: int) -> None:
    payload = _coordinator(version, "127.0.0.1", 39192)
    out = rewrite_response(FIND_COORDINATOR, version, payload, BROKER, LISTENER)
    assert out == _coordinator(version, "127.0.0.1", 39193)


def test_a_truncated_response_is_refused_not_misread() -> None:
    payload, _ = _metadata(12, [(111, "127.0.0.1", 39192)])
    with pytest.raises(ValueError):
        rewrite_response(METADATA, 12, payload[:12], BROKER, LISTENER)


def test_request_header() -> None:
    frame = struct.pack(">hhi", 18, 3, 77) + _string("kcat", False)
    assert request_header(frame) == (18, 3, 77)
