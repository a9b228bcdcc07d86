"""Rewrites of three broker responses, so that clients with older protocol parsers can use the
embedded broker through the compatibility listener (shopvec.kafka.compat).

- ApiVersions v3 and later: the embedded broker writes every top-level tagged field, default
  values included (SupportedFeatures and FinalizedFeatures empty, FinalizedFeaturesEpoch -1,
  ZkMigrationReady false). librdkafka up to at least 2.0.2 skips one byte too few of each tagged
  field's value, so an 8-byte field puts it out of step and the handshake fails with
  "Read underflow". Apache Kafka leaves fields that hold their default out; so does this rewrite.
- Metadata and FindCoordinator: the broker addresses they carry are the broker's own; they are
  replaced by the listener's, so that a client keeps talking through it.

Everything else passes through unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "API_VERSIONS",
    "FIND_COORDINATOR",
    "METADATA",
    "REWRITTEN",
    "Endpoint",
    "request_header",
    "rewrite_response",
]

API_VERSIONS = 18
METADATA = 3
FIND_COORDINATOR = 10
REWRITTEN = frozenset({API_VERSIONS, METADATA, FIND_COORDINATOR})

# Tagged fields of the ApiVersions response body whose value is the default one.
_DEFAULT_TAGS = {
    0: b"\x01",  # SupportedFeatures: empty compact array
    1: b"\xff" * 8,  # FinalizedFeaturesEpoch: -1
    2: b"\x01",  # FinalizedFeatures: empty compact array
    3: b"\x00",  # ZkMigrationReady: false
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def request_header(payload: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame's payload."""
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", payload, 0)
    return api_key, api_version, correlation_id


def rewrite_response(
    api_key: int, api_version: int, payload: bytes, broker: Endpoint, listener: Endpoint
) -> bytes:
    """The response payload (correlation id first) as the client behind the listener gets it."""
    if api_key == API_VERSIONS and api_version >= 3:
        return _api_versions(payload)
    if api_key == METADATA:
        return _endpoints(payload, api_version, broker, listener, _metadata_layout(api_version))
    if api_key == FIND_COORDINATOR:
        return _endpoints(payload, api_version, broker, listener, _coordinator_layout(api_version))
    return payload


class _Reader:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, n: int) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise ValueError("response shorter than its fields")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self, flexible: bool) -> str | None:
        n = self.uvarint() - 1 if flexible else self.int16()
        return None if n < 0 else self.take(n).decode()

    def tags(self) -> list[tuple[int, bytes]]:
        return [(self.uvarint(), self.take(self.uvarint())) for _ in range(self.uvarint())]


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(value: str, flexible: bool) -> bytes:
    raw = value.encode()
    return (_uvarint(len(raw) + 1) if flexible else struct.pack(">h", len(raw))) + raw


def _api_versions(payload: bytes) -> bytes:
    # The response header of ApiVersions is v0 at every version: no header tags.
    r = _Reader(payload, 4 + 2)  # correlation id, error code
    for _ in range(r.uvarint() - 1):  # api keys: key, min, max, tags
        r.take(6)
        r.tags()
    r.take(4)  # throttle time
    body_end = r.offset
    kept = [(tag, value) for tag, value in r.tags() if _DEFAULT_TAGS.get(tag) != value]
    out = bytearray(payload[:body_end])
    out += _uvarint(len(kept))
    for tag, value in kept:
        out += _uvarint(tag) + _uvarint(len(value)) + value
    return bytes(out)


# A layout says where the broker addresses sit in a response: the fields to step over before
# them, whether they form an array, and what follows host and port inside one entry.
@dataclass(frozen=True)
class _Layout:
    flexible: bool
    before: tuple[str, ...]  # "i16", "i32", "str" (nullable string)
    array: bool
    entry_before: tuple[str, ...]
    entry_after: tuple[str, ...]  # after the port, "tags" included where flexible


def _metadata_layout(version: int) -> _Layout:
    flexible = version >= 9
    after = (("str",) if version >= 1 else ()) + (("tags",) if flexible else ())
    before = ("i32",) if version >= 3 else ()
    return _Layout(flexible, before, True, ("i32",), after)


def _coordinator_layout(version: int) -> _Layout:
    flexible = version >= 3
    if version >= 4:
        return _Layout(flexible, ("i32",), True, ("str", "i32"), ("i16", "str", "tags"))
    before = ("i16", "i32") if version == 0 else ("i32", "i16", "str", "i32")
    return _Layout(flexible, before, False, (), ())


def _skip(r: _Reader, kinds: tuple[str, ...], flexible: bool) -> None:
    for kind in kinds:
        if kind == "i16":
            r.take(2)
        elif kind == "i32":
            r.take(4)
        elif kind == "str":
            r.string(flexible)
        else:
            r.tags()


def _endpoints(
    payload: bytes, version: int, broker: Endpoint, listener: Endpoint, layout: _Layout
) -> bytes:
    r = _Reader(payload, 4)
    if layout.flexible:
        r.tags()  # response header v1
    _skip(r, layout.before, layout.flexible)
    out = bytearray(payload[: r.offset])
    if layout.array:
        count = r.uvarint() - 1 if layout.flexible else r.int32()
        out += payload[len(out) : r.offset]
    else:
        count = 1
    for _ in range(max(count, 0)):
        start = r.offset
        _skip(r, layout.entry_before, layout.flexible)
        out += payload[start : r.offset]
        host = r.string(layout.flexible) or ""
        port = r.int32()
        if port == broker.port:  # the host may be spelled otherwise (localhost, an address)
            host, port = listener.host, listener.port
        out += _string(host, layout.flexible) + struct.pack(">i", port)
        start = r.offset
        _skip(r, layout.entry_after, layout.flexible)
        out += payload[start : r.offset]
    out += payload[r.offset :]
    return bytes(out)
