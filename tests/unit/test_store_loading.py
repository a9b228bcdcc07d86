"""Released collections are loaded again, once, by the stores; failures are sorted into
transient and permanent. Milvus is a fake client here that answers as Milvus Lite does (the
integration test test_restart.py meets the real one)."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException
from pymilvus.client.types import LoadState
from pymilvus.exceptions import MilvusException, ParamError

from shopvec.behaviour.milvus import MilvusStatsStore, MilvusUserStore
from shopvec.encoders.base import EncoderInfo
from shopvec.errors import is_released, is_transient
from shopvec.store.base import CollectionSpec
from shopvec.store.loading import CollectionLoader
from shopvec.store.milvus import MilvusProductStore


def released(name: str = "c") -> MilvusException:
    # Exactly what pymilvus raises for Milvus Lite's CollectionNotLoadedError.
    return MilvusException(
        101, f"Collection {name!r} is in state 'released'; call load() before search/get/query", 101
    )


class FakeClient:
    """Collections that come back released after a restart, as Milvus Lite's do."""

    def __init__(self, *names: str, aliases: dict[str, str] | None = None) -> None:
        self.loaded = dict.fromkeys(names, False)
        self.aliases = aliases or {}
        self.loads: list[str] = []
        self.calls = 0

    def _require(self, name: str) -> None:
        self.calls += 1
        name = self.aliases.get(name, name)
        if not self.loaded[name]:
            raise released(name)

    def has_collection(self, name: str, timeout: float) -> bool:
        return name in self.loaded

    def list_aliases(self, timeout: float) -> dict[str, Any]:
        return {"aliases": list(self.aliases)}

    def describe_alias(self, alias: str, timeout: float) -> dict[str, Any]:
        return {"alias": alias, "collection_name": self.aliases[alias]}

    def describe_collection(self, name: str, timeout: float) -> dict[str, Any]:
        return {"fields": [{"name": "taste_vec", "params": {"dim": 4}}]}

    def get_load_state(self, name: str, timeout: float) -> dict[str, Any]:
        return {"state": LoadState.Loaded if self.loaded[name] else LoadState.NotLoad}

    def load_collection(self, name: str, timeout: float) -> None:
        self.loads.append(name)
        self.loaded[self.aliases.get(name, name)] = True

    def search(self, name: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self._require(name)
        return [[] for _ in kwargs["data"]]

    def get(self, name: str, **kwargs: Any) -> list[dict[str, Any]]:
        self._require(name)
        return []

    def query(self, name: str, **kwargs: Any) -> list[dict[str, Any]]:
        self._require(name)
        return [{"count(*)": 0}] if kwargs["output_fields"] == ["count(*)"] else []

    def upsert(self, name: str, **kwargs: Any) -> None:
        self.calls += 1  # Milvus Lite writes to a released collection


def spec() -> CollectionSpec:
    return CollectionSpec(
        alias="products",
        encoder=EncoderInfo("enc", "1", joint_dim=4, visual_dim=4),
        fusion_key="concat",
        fused_dim=8,
        metric="IP",
    )


def product_store(client: FakeClient) -> MilvusProductStore:
    return MilvusProductStore(client, spec(), timeout_s=1.0)  # type: ignore[arg-type]


# -- loading ----------------------------------------------------------------------------------


def test_a_released_collection_is_loaded_and_the_call_retried_once() -> None:
    client = FakeClient(spec().name)
    store = product_store(client)
    assert store.search("fused_vec", np.zeros((2, 8)), 3) == [[], []]
    assert store.count() == 0
    assert client.loads == [spec().name]
    assert client.calls == 3  # the failed search, its retry, the count


def test_a_collection_released_again_after_the_load_fails_the_call() -> None:
    client = FakeClient(spec().name)
    client.load_collection = lambda name, timeout: client.loads.append(name)  # type: ignore[method-assign]
    store = product_store(client)
    with pytest.raises(MilvusException) as caught:
        store.get(["a"])
    assert is_released(caught.value)
    assert client.loads == [spec().name] and client.calls == 2


def test_other_failures_are_not_retried_and_load_nothing() -> None:
    client = FakeClient(spec().name)

    def refuse(name: str, **kwargs: Any) -> None:
        client.calls += 1
        raise MilvusException(100, "collection not found[collection=x]")

    client.search = refuse  # type: ignore[assignment,method-assign]
    with pytest.raises(MilvusException):
        product_store(client).search("fused_vec", np.zeros(8), 3)
    assert client.loads == [] and client.calls == 1


def test_ensure_loads_the_collection_and_the_one_behind_the_alias() -> None:
    old = "products_old"
    client = FakeClient(spec().name, old, aliases={"products": old})
    product_store(client).ensure()
    assert client.loads == [spec().name, old]
    product_store(client).ensure()  # loaded now: nothing to do
    assert client.loads == [spec().name, old]


def test_behaviour_stores_load_at_start_and_when_released() -> None:
    client = FakeClient("users", "users_counts")
    users = MilvusUserStore(client, "users", 4, timeout_s=1.0)  # type: ignore[arg-type]
    stats = MilvusStatsStore(client, "users_counts", timeout_s=1.0)  # type: ignore[arg-type]
    users.ensure()
    stats.ensure()
    assert client.loads == ["users", "users_counts"]
    client.loaded = dict.fromkeys(client.loaded, False)  # Milvus restarted
    assert users.get(["p"]) == {} and users.count() == 0
    assert stats.find("pop", ["Shoes"]) == [] and stats.all() == []
    assert client.loads == ["users", "users_counts", "users", "users_counts"]


def test_the_loader_loads_only_what_is_not_loaded() -> None:
    client = FakeClient("a", "b")
    client.loaded["a"] = True
    CollectionLoader(client, "a").ensure("b")  # type: ignore[arg-type]
    assert client.loads == ["b"]


# -- classification ---------------------------------------------------------------------------


def test_released_by_code_or_else_by_message() -> None:
    assert is_released(released())
    assert is_released(MilvusException(201, "partition not loaded"))
    assert is_released(MilvusException(1, "collection products was not loaded into memory"))
    assert not is_released(MilvusException(100, "collection not found"))
    assert not is_released(MilvusException(1100, "invalid parameter: not loaded"))
    assert not is_released(ValueError("collection not loaded"))


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _wrapped(cause: BaseException) -> MilvusException:
    """As pymilvus wraps what it did not expect."""
    try:
        raise cause
    except BaseException as exc:
        try:
            raise MilvusException(message=f"Unexpected error, message=<{exc!s}>") from exc
        except MilvusException as wrapper:
            return wrapper


@pytest.mark.parametrize(
    "exc",
    [
        MilvusException(2, "Fail connecting to server on 127.0.0.1:1, server unavailable"),
        MilvusException(8, "rate limit exceeded"),
        MilvusException(103, "collection not fully loaded"),
        MilvusException(65535, "service not ready", retriable=True),
        MilvusException(grpc.StatusCode.UNAVAILABLE, "[search] Retry timeout: 15s"),
        MilvusException(1, "wait for loading collection timeout, collection: c"),
        released(),
        _Rpc(grpc.StatusCode.UNAVAILABLE),
        _Rpc(grpc.StatusCode.DEADLINE_EXCEEDED),
        grpc.FutureTimeoutError(),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        OSError(104, "Connection reset by peer"),
        KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT, retriable=True)),
        KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
        _wrapped(ConnectionRefusedError(111, "Connection refused")),
    ],
    ids=repr,
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ParamError(message="timeout must be a positive number"),
        MilvusException(1100, "invalid parameter[expected=...]", is_input_error=True),
        MilvusException(100, "collection not found[collection=c]"),
        MilvusException(1, "field price: type mismatch"),
        MilvusException(grpc.StatusCode.INVALID_ARGUMENT, "bad"),
        _Rpc(grpc.StatusCode.INVALID_ARGUMENT),
        _Rpc(grpc.StatusCode.RESOURCE_EXHAUSTED),  # a message over the size limit stays so
        ValueError("bad vector"),
        TypeError("not a list"),
        KeyError("id"),
        FileNotFoundError(2, "No such file"),
        KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)),
        KafkaException(KafkaError(KafkaError._FATAL, fatal=True, retriable=True)),
        _wrapped(ValueError("timeout must be positive")),
    ],
    ids=repr,
)
def test_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_an_error_raised_while_handling_a_transient_one_is_not_transient_for_that() -> None:
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError:
            raise ValueError("bad row") from None
    except ValueError as exc:
        assert not is_transient(exc)
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError:
            raise ValueError("bad row")  # noqa: B904
    except ValueError as exc:
        assert not is_transient(exc)
