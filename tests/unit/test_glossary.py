"""The glossary that gives a query's Chinese words their English senses (CC-CEDICT)."""

from __future__ import annotations

import pytest

from shopvec.search.glossary import MAX_SENSES_CHARS, Glossary, cedict_glossary


def _entry(simplified: str, definitions: list[str], pinyin: str = "ci2", trad: str = "") -> dict:
    return {
        "traditional": trad or simplified,
        "simplified": simplified,
        "pinyin": pinyin,
        "definitions": definitions,
    }


ENTRIES = [
    _entry("牛仔裤", ["jeans"], "niu2 zai3 ku4"),
    _entry("衬衫", ["CL:件[jian4]", "shirt", "blouse"], "chen4 shan1"),
    _entry("白色", ["white", "fig. reactionary"], "bai2 se4"),
    _entry("北京", ["Beijing, capital of the People's Republic"], "Bei3 jing1"),
    _entry("T恤", ["T-shirt"], "T xu4"),
    _entry("上衣", ["(coll.) jacket", "upper outer garment"], "shang4 yi1"),
    _entry("连衣裙", ["a very long sense of four words", "woman's dress"], "lian2 yi1 qun2"),
    _entry("长裤", ["trousers"], "chang2 ku4", trad="長褲"),
    _entry("凉鞋", ["variant of 涼鞋", "see 涼鞋"], "liang2 xie2"),
    _entry("红色", ["red (color)"], "hong2 se4"),
    _entry("长", ["long"], "chang2", trad="長"),
    _entry("裤", ["trousers"], "ku4", trad="褲"),
    _entry("着", ["wear"], "zhuo2", trad="著"),
    _entry("著名", ["famous"], "zhu4 ming2"),
]


@pytest.fixture(scope="module")
def glossary() -> Glossary:
    return Glossary.from_entries(ENTRIES)


def test_first_sense_that_translates(glossary: Glossary) -> None:
    assert glossary.english("牛仔裤") == ["jeans"]
    assert glossary.english("衬衫") == ["shirt"]  # the classifier is no translation
    assert glossary.english("白色") == ["white"]
    assert glossary.english("上衣") == ["jacket"]  # the note in parentheses dropped
    assert glossary.english("红色") == ["red"]
    assert glossary.english("连衣裙") == ["woman's dress"]  # four words are no query word
    assert glossary.english("T恤") == ["T-shirt"]  # a one-letter syllable is not a name
    assert glossary.english("北京") == []  # a name
    assert glossary.english("凉鞋") == []  # only pointers elsewhere
    assert glossary.english("長褲") == ["trousers"]  # the traditional form
    assert glossary.english("blue") == []
    assert Glossary.from_entries(ENTRIES, per_word=2).english("衬衫") == ["shirt", "blouse"]


def test_translate_adds_senses_after_the_words(glossary: Glossary) -> None:
    assert glossary.translate("白色牛仔裤") == "白色牛仔裤 white jeans"
    assert glossary.translate("Blue Tshirts") == "Blue Tshirts"
    assert glossary.translate("红色 dress") == "红色 dress red"
    assert glossary.translate("白色白色") == "白色白色 white"  # each sense once
    assert glossary.translate("北京") == "北京"  # nothing to add
    assert glossary.translate("") == ""


def test_a_traditional_query_is_cut_in_simplified_characters(glossary: Glossary) -> None:
    # jieba's dictionary is simplified: "長褲" is cut as "长裤", one word.
    assert glossary.translate("長褲") == "長褲 trousers"
    # A character simplified Chinese writes too stays as it is.
    assert glossary.senses("著名") == "famous"


def test_a_word_the_dictionary_lacks_by_its_parts(glossary: Glossary) -> None:
    # jieba's search mode cuts a longer word into the dictionary's words it holds.
    assert "jeans" in glossary.english("白色牛仔裤子")


def test_cc_cedict_as_packaged() -> None:
    glossary = cedict_glossary()
    assert len(glossary) > 100_000
    assert glossary.english("牛仔裤") == ["jeans"]
    assert glossary.english("蓝色") == ["blue"]
    assert glossary.english("T恤") == ["T-shirt"]
    assert glossary.translate("黑色运动鞋") == "黑色运动鞋 black sports shoes"
    assert glossary.translate("藍色牛仔褲") == "藍色牛仔褲 blue jeans"  # traditional
    assert cedict_glossary() is glossary


def test_a_long_query_gains_a_bounded_number_of_senses() -> None:
    words = {chr(0x4E00 + i) * 2: (f"sense{i:04d}",) for i in range(600)}
    glossary = Glossary(words)
    text = " ".join(words)[:1024]
    senses = glossary.senses(text)
    assert MAX_SENSES_CHARS - 10 < len(senses) <= MAX_SENSES_CHARS
    found = senses.split()
    assert len(set(found)) == len(found) and set(found) <= {s for (s,) in words.values()}
    assert glossary.translate(text) == f"{text} {senses}"
