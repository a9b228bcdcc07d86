"""Which failures are worth waiting out: transient ones (the broker or Milvus away, a timeout, a
collection not loaded yet) against permanent ones (a bad request, a schema mismatch, a bug), and
which Milvus answers say a collection is released.

The consume loops retry a transient failure for as long as it lasts and treat anything else as
a fault of the messages, so an error is transient only when nothing about the request has to
change for it to succeed later.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from confluent_kafka import KafkaError, KafkaException

__all__ = ["RELEASED_CODES", "is_released", "is_transient"]

RELEASED_CODES = frozenset({101, 201})
"""Milvus status codes of a collection (101, CollectionNotLoaded) or a partition (201,
PartitionNotLoaded) that is not loaded. Milvus Lite answers 101 for a collection in state
'released' or 'loading', in both its code and its legacy error_code."""

# Codes Milvus marks retriable, and the released ones: the stores load the collection again
# on such an answer, so a retry meets it loaded. 2: service unavailable (pymilvus also uses it
# for "Fail connecting to server"), 4: request limit, 8: rate limit, 12: resource insufficient,
# 103: collection not fully loaded, 106: collection on recovering.
_MILVUS_TRANSIENT_CODES = frozenset({2, 4, 8, 12, 103, 106}) | RELEASED_CODES

# Codes that name no particular fault (0 and 1 from pymilvus' own wrappers, 65535 Milvus'
# catch-all): only for these does the message text decide.
_GENERIC_CODES = frozenset({0, 1, 65535})

_RELEASED_TEXT = re.compile(r"not loaded|\breleased\b", re.IGNORECASE)
_TRANSIENT_TEXT = re.compile(
    r"server unavailable|connection refused|connection reset|deadline exceeded|timed? ?out",
    re.IGNORECASE,
)

# pymilvus' own exception types for a server away (not every version has each).
_MILVUS_TRANSIENT_TYPES = (
    "ConnectError",
    "MilvusUnavailableException",
    "SchemaMismatchRetryableException",
)

_GRPC_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED")

# librdkafka's local errors for a broker that is away or slow: transient, though an error built
# from one of them does not always say retriable().
_KAFKA_TRANSIENT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
    }
)

# OSErrors about the file system's state rather than a connection: waiting does not fix them.
_LASTING_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

_MAX_CAUSES = 8


def _module(name: str) -> Any:
    # Looked up, not imported: an exception of a library this process never imported cannot
    # have been raised, and importing pymilvus costs half a second to processes that do not.
    return sys.modules.get(name)


def _milvus_exception(exc: BaseException) -> Any:
    mod = _module("pymilvus.exceptions")
    if mod is not None and isinstance(exc, mod.MilvusException):
        return exc
    return None


def is_released(exc: BaseException) -> bool:
    """Whether Milvus answered that the collection (or partition) asked is not loaded: its
    status code where it gives one, the message only where the code is a generic one."""
    milvus = _milvus_exception(exc)
    if milvus is None:
        return False
    code = milvus.code
    if isinstance(code, int) and code in RELEASED_CODES:
        return True
    generic = code in _GENERIC_CODES and milvus.compatible_code in _GENERIC_CODES
    return generic and bool(_RELEASED_TEXT.search(str(milvus.message)))


def _grpc_transient(code: Any) -> bool:
    grpc = _module("grpc")
    return grpc is not None and any(code is getattr(grpc.StatusCode, n) for n in _GRPC_TRANSIENT)


def _milvus_transient(exc: Any) -> bool | None:
    """True or False where the exception itself decides; None to look at its cause."""
    mod = _module("pymilvus.exceptions")
    if isinstance(exc, mod.ParamError) or getattr(exc, "is_input_error", False):
        return False
    if isinstance(exc, tuple(getattr(mod, n) for n in _MILVUS_TRANSIENT_TYPES if hasattr(mod, n))):
        return True
    if getattr(exc, "retriable", False) or is_released(exc):
        return True
    code = exc.code
    if not isinstance(code, int):
        # pymilvus puts the gRPC status code here when its own retries ran out.
        return _grpc_transient(code)
    if code in _MILVUS_TRANSIENT_CODES:
        return True
    if code not in _GENERIC_CODES:
        return False
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        # A wrapper of something pymilvus did not expect: the message only repeats the cause.
        return None
    return bool(_TRANSIENT_TEXT.search(str(exc.message)))


def _kafka_transient(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError) or err.fatal():
        return False
    return bool(err.retriable()) or err.code() in _KAFKA_TRANSIENT_CODES


def _verdict(exc: BaseException) -> bool | None:
    if isinstance(exc, KafkaException):
        return _kafka_transient(exc)
    milvus = _milvus_exception(exc)
    if milvus is not None:
        return _milvus_transient(milvus)
    grpc = _module("grpc")
    if grpc is not None:
        if isinstance(exc, grpc.FutureTimeoutError):
            return True
        if isinstance(exc, grpc.RpcError):
            code = getattr(exc, "code", None)
            return callable(code) and _grpc_transient(code())
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, socket errors
        return not isinstance(exc, _LASTING_OS_ERRORS)
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether the failure may go away by itself, so the same call is worth retrying: Milvus or
    the broker unavailable, a refused or reset connection, a timeout, gRPC UNAVAILABLE or
    DEADLINE_EXCEEDED, a KafkaException whose error is retriable, a collection not loaded (the
    stores load it again). Permanent: parameter and schema errors, ValueError, TypeError and
    anything else not known to pass. A wrapper (pymilvus wraps what it did not expect) is
    judged by the exception it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CAUSES:
        seen.add(id(current))
        verdict = _verdict(current)
        if verdict is not None:
            return verdict
        # Only an explicit `raise ... from`: an error raised while handling a transient one
        # (__context__) is not transient for that.
        current = current.__cause__
    return False
