"""Words normalised for full-text search (shopvec.terms)."""

from __future__ import annotations

import pytest

from shopvec.terms import index_terms, query_terms, stem


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("tshirts", "tshirt"),
        ("shoes", "shoe"),
        ("dresses", "dress"),
        ("sunglasses", "sunglass"),
        ("watches", "watch"),
        ("boxes", "box"),
        ("accessories", "accessory"),
        ("jeans", "jean"),
        ("dress", "dress"),
        ("status", "status"),
        ("chassis", "chassis"),
        ("bus", "bus"),
        ("its", "its"),
        ("kurta", "kurta"),
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_plural_and_singular_titles_meet() -> None:
    # The analyzer lowercases after cutting; what must meet is the lowercase form.
    assert index_terms("Yellow Polo Tshirts").split()[-1] == index_terms("Tshirt").lower()
    assert index_terms("Blue Dresses").split()[-1] == index_terms("dress")


def test_hyphenated_compounds_keep_their_parts_and_join() -> None:
    assert index_terms("Blue T-shirt") == "Blue t shirt tshirt"
    assert "tshirt" in index_terms("T-Shirts").split()
    assert index_terms("e-mail") == "e mail email"


def test_possessives_go_and_case_changes_only_where_a_word_changes() -> None:
    assert index_terms("Women's Heels") == "women heel"
    assert index_terms("Puma Men Black") == "Puma Men Black"


def test_other_scripts_and_numbers_pass_through() -> None:
    assert index_terms("修身蓝色牛仔裤 42 3-4") == "修身蓝色牛仔裤 42 3-4"
    # jieba's dictionary knows "T恤", so the case of a Latin letter inside Chinese stays.
    assert index_terms("蓝色T恤") == "蓝色T恤"
    assert index_terms("") == ""


def test_query_terms_add_the_changed_words_as_typed() -> None:
    assert query_terms("Blue Tshirts") == "Blue tshirt tshirts"
    assert query_terms("blue shirt") == "blue shirt"
    assert query_terms("Dresses dresses") == "dress dress dresses"
    assert query_terms("红色 shoes") == "红色 shoe shoes"
