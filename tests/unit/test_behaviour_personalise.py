"""Personalised ranking on in-memory stores, and through SearchService."""

from __future__ import annotations

import pytest

from schemas.search import SearchRequest
from shopvec.encoders.hashing import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.search import SearchService
from shopvec.store import SearchFilter
from tests.unit.behaviour_fakes import DIM, World, click


def _hats_fan(w: World, user: str = "alice") -> None:
    w.engine.apply(w.inbound(*(click(user, f"hat-{i}", i) for i in range(3))))


def test_rerank_lifts_the_users_taste_and_explains_it() -> None:
    w = World(weight_taste=1.0)
    _hats_fan(w)
    hits = w.products.search("fused_vec", w.products.rows["shoe-0"]["fused_vec"][None, :], 10)[0]
    assert hits[0].id.startswith("shoe")
    ranked = w.personaliser.rerank("alice", hits)
    assert ranked is not None
    assert ranked[0].hit.id.startswith("hat")
    top = ranked[0].explanation
    assert top["personalised"] and top["taste"] > 0.5 and top["weights"]["taste"] == 1.0
    assert top["query"] == pytest.approx(next(h.score for h in hits if h.id == ranked[0].hit.id))
    assert w.personaliser.rerank("bob", hits) is None  # no history: the order stays


def test_cf_boosts_what_others_did_together() -> None:
    w = World(weight_taste=0.0, weight_cf=1.0)
    for user in ("u1", "u2", "u3"):
        w.engine.apply(w.inbound(click(user, "shoe-0", 0), click(user, "hat-4", 1)))
    w.engine.apply(w.inbound(click("me", "shoe-0", 5)))
    hits = w.products.search("fused_vec", w.products.rows["shoe-1"]["fused_vec"][None, :], 10)[0]
    ranked = w.personaliser.rerank("me", hits)
    assert ranked is not None and ranked[0].hit.id == "hat-4"
    assert ranked[0].explanation["cf"] == 1.0


def test_recommendations_follow_taste_and_skip_what_the_user_has() -> None:
    w = World()
    _hats_fan(w)
    ids = [r.hit.id for r in w.personaliser.recommend("alice", 3)]
    assert sorted(ids[:2]) == ["hat-3", "hat-4"]  # the hats alice has not had yet
    assert ids[2].startswith("shoe")
    only_shoes = w.personaliser.recommend("alice", 3, SearchFilter(category="Shoes"))
    assert all(r.hit.id.startswith("shoe") for r in only_shoes)


def test_a_new_user_gets_recent_popularity() -> None:
    w = World()
    for user in ("u1", "u2", "u3"):
        w.engine.apply(w.inbound(click(user, "shoe-3", 0)))
    w.engine.apply(w.inbound(click("u4", "hat-2", 1)))
    recs = w.personaliser.recommend("stranger", 2)
    assert [r.hit.id for r in recs] == ["shoe-3", "hat-2"]
    assert recs[0].explanation == {
        "personalised": False,
        "taste": 0.0,
        "cf": 0.0,
        "popularity": 1.0,
        "weights": {"taste": 0.0, "cf": 0.0, "popularity": 1.0},
    }


class _NoImages:
    def load_many(self, sources: object) -> list:
        raise AssertionError("no images in these tests")


def _service(w: World) -> SearchService:
    encoder = HashingEncoder(joint_dim=DIM, visual_dim=4)
    fusion = Fusion("weighted", 0.5, DIM)
    return SearchService(encoder, w.products, fusion, _NoImages(), personaliser=w.personaliser)


def test_search_service_personalises_only_requests_with_a_user() -> None:
    w = World(weight_taste=3.0)
    _hats_fan(w)
    service = _service(w)

    def order(user: str | None) -> list[str]:
        reply = service.search(
            SearchRequest(request_id="r", text="shoe", top_k=5, user_id=user, explain=True)
        )
        assert reply.error is None
        return [r.product_id for r in reply.results]

    plain = order(None)
    assert order("alice") != plain and order("alice")[0].startswith("hat")
    assert order("bob") == plain
    reply = service.search(SearchRequest(request_id="r", text="shoe", top_k=5, user_id="alice"))
    expl = reply.results[0].explanation or {}
    assert {"query", "taste", "cf", "weights"} <= set(expl) and expl["field"] == "fused_vec"


def test_a_user_id_alone_is_a_recommendation() -> None:
    w = World()
    _hats_fan(w)
    request = SearchRequest(request_id="r", user_id="alice", top_k=2)
    assert request.resolved_scenario() == "recommend"
    reply = _service(w).search(request)
    assert reply.scenario == "recommend" and len(reply.results) == 2
    assert all(r.product_id.startswith("hat") for r in reply.results)
    assert [r.rank for r in reply.results] == [1, 2]
    no_personaliser = SearchService(
        HashingEncoder(joint_dim=DIM, visual_dim=4),
        w.products,
        Fusion("weighted", 0.5, DIM),
        _NoImages(),
    )
    assert no_personaliser.search(request).error is not None
