import base64
import json

import pytest
from pydantic import ValidationError

import schemas
from schemas import (
    MAX_FILTER_ATTRIBUTES,
    DeadLetter,
    ProductDelete,
    ProductUpsert,
    SearchFilters,
    SearchReply,
    SearchRequest,
    UserEvent,
    parse_product_event,
)
from schemas.export import SCHEMA_DIR, render_all
from schemas.product import PRODUCT_ID_PATTERN

UPSERT = {
    "kind": "upsert",
    "id": "sku-1",
    "version": 3,
    "updated_at": "2026-01-31T12:00:00Z",
    "title": "Blue denim jeans",
    "category_path": ["Apparel", "Bottomwear", "Jeans"],
    "price": "39.90",
    "currency": "EUR",
    "images": [{"url": "https://cdn.example.com/1.jpg"}],
}


def test_product_upsert_round_trip() -> None:
    event = parse_product_event(json.dumps(UPSERT))
    assert isinstance(event, ProductUpsert)
    assert event.schema_version == 1
    assert event.text == "Blue denim jeans"
    again = parse_product_event(event.to_bytes())
    assert again == event


def test_product_delete_is_discriminated() -> None:
    event = parse_product_event(
        b'{"kind": "delete", "id": "sku-1", "version": 4, "updated_at": "2026-01-31T12:00:00Z"}'
    )
    assert isinstance(event, ProductDelete)


@pytest.mark.parametrize(
    "change",
    [
        {"version": -1},
        {"updated_at": "2026-01-31T12:00:00"},  # no time zone
        {"currency": "euro"},
        {"surprise": 1},
        {"images": [{"url": "https://a/b.jpg", "data_base64": "AAAA"}]},
        {"title": "", "images": []},
        {"id": "has spaces"},
        # Past what the Milvus fields hold: a write refused there failed the event late,
        # and a run of such events stopped the indexer as a fault of the system.
        {"version": 2**63},
        {"brand": "商" * 86},  # 86 characters, 258 bytes
        {"category_path": ["商" * 43]},
        {"attributes": {"n": 2**64}},
        {"attributes": {"n": [{"m": -(2**63) - 1}]}},
        {"attributes": {"n": float("nan")}},
        {"attributes": {"n": float("inf")}},
        {"attributes": {"blob": "x" * 16_384}},
    ],
)
def test_product_upsert_refuses(change: dict) -> None:
    with pytest.raises(ValidationError):
        parse_product_event(json.dumps({**UPSERT, **change}))


def test_product_events_take_the_largest_values_milvus_holds() -> None:
    event = parse_product_event(
        json.dumps(
            {
                **UPSERT,
                "version": 2**63 - 1,
                "brand": "商" * 85,
                "category_path": ["商" * 42],
                "attributes": {"n": -(2**63), "m": [2**63 - 1, 1.5, None, {"k": "v"}]},
            }
        )
    )
    assert isinstance(event, ProductUpsert) and event.version == 2**63 - 1
    with pytest.raises(ValidationError):
        ProductDelete(id="sku-1", version=2**63, updated_at="2026-01-01T00:00:00Z")


def test_not_json_is_reported_as_json_invalid() -> None:
    with pytest.raises(ValidationError) as info:
        parse_product_event(b"{not json")
    assert info.value.errors()[0]["type"] == "json_invalid"


def test_search_request_needs_a_query_and_infers_the_scenario() -> None:
    with pytest.raises(ValidationError):
        SearchRequest(request_id="r1")
    assert SearchRequest(request_id="r", text="red").resolved_scenario() == "text2product"
    img = base64.b64encode(b"x").decode()
    assert SearchRequest(request_id="r", image_base64=img).resolved_scenario() == "image2image"
    both = SearchRequest(request_id="r", text="red", image_base64=img)
    assert both.resolved_scenario() == "cross"
    assert SearchRequest(request_id="r", text="x", scenario="text2image").resolved_scenario() == (
        "text2image"
    )


@pytest.mark.parametrize(
    "filters",
    [
        '{"price_min": Infinity}',
        '{"price_max": NaN}',
        '{"attributes": {"size": NaN}}',
        '{"attributes": {"": "x"}}',
        json.dumps({"category": "c" * 129}),
        json.dumps({"brand": "b" * 129}),
        json.dumps({"attributes": {"k": "v" * 1025}}),
        json.dumps({"attributes": {f"k{i}": i for i in range(MAX_FILTER_ATTRIBUTES + 1)}}),
    ],
)
def test_search_filters_refuse_what_no_product_holds_or_no_expression_can_say(
    filters: str,
) -> None:
    body = '{"request_id": "r", "text": "shirt", "filters": ' + filters + "}"
    with pytest.raises(ValidationError):
        SearchRequest.from_bytes(body)


def test_search_filters_keep_attribute_value_types() -> None:
    many = {f"k{i}": i for i in range(MAX_FILTER_ATTRIBUTES - 4)}
    flt = SearchFilters.model_validate(
        {"attributes": {**many, "a": "x", "b": True, "c": 2, "d": 2.5}, "price_max": 1e9}
    )
    assert flt.attributes["b"] is True and flt.attributes["c"] == 2
    assert isinstance(flt.attributes["c"], int) and flt.attributes["d"] == 2.5


def test_search_reply_and_dead_letter_and_user_event() -> None:
    reply = SearchReply(request_id="r1", took_ms=3.2)
    assert SearchReply.from_bytes(reply.to_bytes()) == reply
    dead = DeadLetter(
        worker="indexer",
        error_kind="not_json",
        error_message="bad",
        topic="t",
        partition=0,
        offset=7,
        value_base64=DeadLetter.encode(b"\x00raw"),
        failed_at="2026-01-01T00:00:00Z",
    )
    assert dead.value == b"\x00raw"
    UserEvent(
        event_id="e1",
        user_id="u1",
        product_id="p1",
        type="click",
        timestamp="2026-01-01T00:00:00+01:00",
    )


def test_json_schema_files_are_up_to_date() -> None:
    """Regenerate with `shopvec schemas export` when a contract changes."""
    for name, text in render_all().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} missing: run `shopvec schemas export`"
        assert path.read_text() == text, f"{name} is stale: run `shopvec schemas export`"


def test_public_surface_is_declared() -> None:
    for name in schemas.__all__:
        assert hasattr(schemas, name), name


GOOD_IDS = [
    "sku-1",
    "myntra-27152",
    "10022",
    "p1",
    "shop:42.blue_XL",
    "a@b+c",
    "ürün-5",
    "商品:1",
    "हिन्दी",  # combining vowel signs
    "x" * 128,
    "商" * 42,  # 126 bytes in UTF-8
]
BAD_IDS = [
    "",
    "a/b",
    "/etc/passwd",
    "a\\b",
    "a\nb",
    "sku-1\n",
    "\x1b[2J",
    "a\x1b]0;pwned\x07",
    "a\x00b",
    "a\x9bb",
    "abc\u202edcba",
    "a\u200bb",
    "has spaces",
    " sku-1",
    "sku-1 ",
    "a\tb",
    "a\u00a0b",
    "x" * 129,
    "商" * 43,  # 43 characters, 129 bytes: past the Milvus key
    'a"b',
    "a'b",
    "a,b",
    "a%2Fb",
    "a..b/",
]


def _id_uses(product_id: str) -> list:
    return [
        lambda: parse_product_event(json.dumps({**UPSERT, "id": product_id})),
        lambda: ProductDelete(id=product_id, version=1, updated_at="2026-01-01T00:00:00Z"),
        lambda: SearchRequest(request_id="r", like_product_id=product_id),
        lambda: UserEvent(
            event_id="e1",
            user_id="u1",
            product_id=product_id,
            type="click",
            timestamp="2026-01-01T00:00:00Z",
        ),
    ]


@pytest.mark.parametrize("product_id", GOOD_IDS)
def test_product_ids_accepted_everywhere(product_id: str) -> None:
    for use in _id_uses(product_id):
        use()
    assert parse_product_event(json.dumps({**UPSERT, "id": product_id})).id == product_id


@pytest.mark.parametrize("product_id", BAD_IDS)
def test_product_ids_refused_everywhere(product_id: str) -> None:
    for use in _id_uses(product_id):
        with pytest.raises(ValidationError):
            use()


def test_exported_id_pattern_means_what_the_model_does() -> None:
    """Read the published pattern with a second engine that has Unicode classes, as
    ECMAScript, Java and Go do; it must accept exactly the ids the model accepts."""
    regex = pytest.importorskip("regex")
    for name in ("product-event", "user-event", "search-request"):
        text = (SCHEMA_DIR / f"{name}.schema.json").read_text()
        assert json.dumps(PRODUCT_ID_PATTERN) in text, name
    assert "/" not in PRODUCT_ID_PATTERN
    for product_id in GOOD_IDS:
        assert regex.fullmatch(PRODUCT_ID_PATTERN, product_id), repr(product_id)
    for product_id in BAD_IDS:
        # Lengths are the schema's maxLength (characters) and its description (bytes).
        if len(product_id.encode()) <= 128:
            assert not regex.fullmatch(PRODUCT_ID_PATTERN, product_id), repr(product_id)


def test_like_product_id_may_be_absent() -> None:
    assert SearchRequest(request_id="r", text="red").like_product_id is None
