"""The HTTP API on the in-memory backend (the real SearchService on the hashing encoder and the
in-memory store): contracts in and out, errors as JSON with a reply's error kinds, the size
limit, the page and its assets; and a property-based run that finds no 500 and no reply that
breaks the contract."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schemas import SearchReply
from schemas.product import PRODUCT_ID_PATTERN
from shopvec.http import MemoryBackend, ProductView, create_app
from shopvec.settings import HttpSettings, Settings
from tests.unit.http_fakes import COLOURS, memory_backend, png

KINDS = {"invalid_request", "unsupported", "internal", "timeout"}


@pytest.fixture(scope="module")
def backend() -> MemoryBackend:
    return memory_backend()


@pytest.fixture(scope="module")
def client(backend: MemoryBackend) -> Iterator[TestClient]:
    settings = Settings(http=HttpSettings(max_body_bytes=64 * 1024, timeout_s=10))
    with TestClient(create_app(settings, backend), raise_server_exceptions=False) as c:
        yield c


def _error(response: Any, status: int, kind: str = "invalid_request") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["kind"] == kind, body
    return str(body["error"]["message"])


def test_words_search_returns_the_reply_contract_with_thumbnails(client: TestClient) -> None:
    response = client.post("/v1/search", json={"text": "red shirt", "top_k": 3})
    assert response.status_code == 200, response.text
    reply = SearchReply.model_validate(response.json())
    assert reply.scenario == "text2product" and reply.results[0].product_id == "red-shirt"
    assert all(r.thumbnail and r.thumbnail.startswith("data:image/jpeg") for r in reply.results)
    assert reply.request_id  # set by the service
    assert "fused_vec" in str(reply.results[0].explanation)


def test_filters_and_more_like_this(client: TestClient) -> None:
    shirts = client.post(
        "/v1/search", json={"text": "red", "filters": {"category": "Shirt", "in_stock": True}}
    ).json()
    assert shirts["results"] and all("Shirt" in r["category_path"] for r in shirts["results"])
    alike = client.post("/v1/search", json={"like_product_id": "red-shirt", "top_k": 2}).json()
    assert alike["scenario"] == "more_like_this"
    assert "red-shirt" not in [r["product_id"] for r in alike["results"]]


def test_photo_upload(client: TestClient) -> None:
    response = client.post(
        "/v1/search/photo",
        files={"photo": ("blue.png", png(COLOURS["blue"]), "image/png")},
        data={"query": json.dumps({"top_k": 2, "filters": {"brand": "Zed"}})},
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["scenario"] == "image2image"
    assert [r["product_id"] for r in reply["results"]] == ["blue-shirt", "blue-shoe"]


def test_bad_photo_and_bad_query_field(client: TestClient) -> None:
    not_an_image = client.post(
        "/v1/search/photo", files={"photo": ("x.png", b"not a picture", "image/png")}
    )
    assert not_an_image.status_code == 400
    assert not_an_image.json()["error"]["kind"] == "invalid_request"
    _error(client.post("/v1/search/photo", data={"query": "{}"}), 422)
    message = _error(
        client.post(
            "/v1/search/photo",
            files={"photo": ("b.png", png(COLOURS["blue"]), "image/png")},
            data={"query": "[1"},
        ),
        422,
    )
    assert "not JSON" in message
    # Deeper than Python's json reads (RecursionError, not ValueError): a 500 before.
    deep = client.post(
        "/v1/search/photo",
        files={"photo": ("b.png", png(COLOURS["blue"]), "image/png")},
        data={"query": "[" * 1000 + "]" * 1000},
    )
    assert _error(deep, 422) == "query: nested too deep"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "a search needs text"),
        ({"text": "x", "request_id": "mine"}, "set by the service"),
        ({"text": "x", "reply_topic": "elsewhere"}, "set by the service"),
        ({"text": "x", "top_k": 0}, "top_k"),
        ({"text": "x", "colour": "red"}, "colour"),
        ({"text": "x", "filters": {"price_min": -1}}, "filters.price_min"),
    ],
)
def test_invalid_bodies_get_422_with_the_reason(client: TestClient, body: Any, reason: str) -> None:
    assert reason in _error(client.post("/v1/search", json=body), 422)


def test_refusals_by_the_search_service_are_400(client: TestClient) -> None:
    message = _error(client.post("/v1/search", json={"text": "x", "top_k": 45, "offset": 10}), 400)
    assert "top_k + offset" in message
    body = client.post("/v1/search", json={"text": "x", "top_k": 45, "offset": 10}).json()
    assert SearchReply.model_validate(body).error is not None


def test_not_json_and_too_large(client: TestClient) -> None:
    _error(
        client.post("/v1/search", content=b"{", headers={"content-type": "application/json"}), 422
    )
    big = {"text": "x" * 100_000}
    assert "MAX_BODY_BYTES" in _error(client.post("/v1/search", json=big), 413)


def test_products_and_events(client: TestClient, backend: MemoryBackend) -> None:
    found = client.get("/v1/products/green-shoe")
    assert found.status_code == 200
    view = ProductView.model_validate(found.json())
    assert view.title == "green shoe" and view.thumbnail and view.in_stock is False
    _error(client.get("/v1/products/nothing-here"), 404)
    assert _error(client.get("/v1/products/a b"), 422).startswith("path.product_id: String")
    documented = client.app.openapi()["paths"]["/v1/products/{product_id}"]["get"]
    assert documented["parameters"][0]["schema"]["pattern"] == PRODUCT_ID_PATTERN
    sent = client.post("/v1/events", json={"user_id": "u1", "product_id": "red-shoe"})
    assert sent.status_code == 202
    assert backend.events[-1].product_id == "red-shoe" and backend.events[-1].type == "click"
    _error(client.post("/v1/events", json={"user_id": "u1", "product_id": "x", "type": "hug"}), 422)


def test_health_page_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "/static/app.js" in page.text and "//cdn" not in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    _error(client.get("/static/../settings.py"), 404)
    spec = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/search/photo", "/v1/products/{product_id}"} <= set(spec["paths"])
    query = spec["components"]["schemas"]["SearchQuery"]["properties"]
    assert "text" in query and "request_id" not in query and "reply_topic" not in query
    _error(client.get("/v1/nothing"), 404)
    _error(client.delete("/v1/search"), 405, "unsupported")


# -- property-based: no 500, every answer JSON of the contract --------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_texts = st.text(max_size=40) | st.sampled_from(["red", "shirt", "蓝色", " ", ""])
_filters = st.fixed_dictionaries(
    {},
    optional={
        "category": st.none() | _texts,
        "brand": st.none() | _texts,
        "price_min": _scalars,
        "price_max": _scalars,
        "in_stock": _scalars,
        "attributes": st.dictionaries(st.text(max_size=5), _scalars, max_size=2),
    },
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "text": st.none() | _texts,
        "image_base64": st.none()
        | st.sampled_from(["", "xx", base64.b64encode(png((1, 2, 3))).decode()]),
        "image_url": st.none() | st.sampled_from(["http://images.invalid/a.jpg", "ftp://x", "x"]),
        "user_id": st.none() | _texts,
        "top_k": _scalars,
        "offset": _scalars,
        "filters": st.none() | _filters | _scalars,
        "scenario": st.sampled_from(
            ["auto", "image2image", "text2image", "cross", "recommend", "x"]
        ),
        "ranker": st.sampled_from(["fused", "rrf", "weighted", "nope"]),
        "like_product_id": st.none() | st.sampled_from(["red-shirt", "gone", "a b"]) | _texts,
        "deadline_ms": _scalars,
        "explain": _scalars,
        "schema_version": st.sampled_from([1, 2]),
    },
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies | st.lists(_scalars, max_size=2) | _scalars)
def test_any_body_gets_the_contract_or_a_json_error(body: Any) -> None:
    with TestClient(
        create_app(Settings(), _PROPERTY_BACKEND), raise_server_exceptions=False
    ) as client:
        response = client.post("/v1/search", json=body)
    assert response.status_code < 500 or response.status_code == 504, response.text
    data = response.json()
    if response.status_code == 200:
        reply = SearchReply.model_validate(data)
        assert reply.error is None
        assert all(r.rank >= 1 for r in reply.results)
    else:
        assert data["error"]["kind"] in KINDS and data["error"]["message"]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.binary(max_size=64)
    | st.sampled_from(
        [
            b'{"text": "x", "filters": {"price_min": Infinity}}',
            b'{"text": "x", "top_k": NaN}',
            b'{"text": "x", "deadline_ms": 1e400}',
            b'{"text": "\\ud800"}',
            b'{"text": "x"} trailing',
            b"\xff\xfe{}",
        ]
    )
)
def test_any_bytes_get_a_json_answer(raw: bytes) -> None:
    with TestClient(
        create_app(Settings(), _PROPERTY_BACKEND), raise_server_exceptions=False
    ) as client:
        response = client.post(
            "/v1/search", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code < 500 or response.status_code == 504, response.text
    if response.status_code != 200:
        assert response.json()["error"]["kind"] in KINDS


_PROPERTY_BACKEND = memory_backend()


def test_curl_default_form_content_type_is_read_as_json(client: TestClient) -> None:
    response = client.post(
        "/v1/search",
        content=b'{"text": "green shoe", "top_k": 1}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["product_id"] == "green-shoe"
