"""The search page as a person uses it, found by role and label: words, a photo, a filter,
more like this, the user box, the keyboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.unit.http_fakes import COLOURS, png


def _results(page: Any) -> Any:
    return page.get_by_role("list", name="Results").get_by_role("listitem")


def _thumbnails_loaded(page: Any) -> None:
    images = page.get_by_role("list", name="Results").get_by_role("img")
    expect(images.first).to_be_visible()
    for i in range(images.count()):
        src = images.nth(i).get_attribute("src") or ""
        assert src.startswith("data:image/jpeg;base64,"), src[:40]
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")


def test_typing_words_shows_results_with_thumbnails(page: Any) -> None:
    page.get_by_label("Words").fill("red shirt")
    page.get_by_role("button", name="Search", exact=True).click()
    results = _results(page)
    expect(results.first).to_contain_text("red shirt")
    expect(page.get_by_role("status")).to_contain_text("text2product")
    _thumbnails_loaded(page)
    # The explanation: a bar per modality, each labelled.
    expect(results.first.get_by_role("group", name="Why this result")).to_be_visible()
    expect(results.first.get_by_role("meter").first).to_be_visible()
    expect(results.first).to_contain_text("€10.00")


def test_uploading_a_photo_shows_products(page: Any, tmp_path: Path) -> None:
    photo = tmp_path / "blue.png"
    photo.write_bytes(png(COLOURS["blue"], size=64))
    page.get_by_label("Photo").set_input_files(str(photo))
    expect(page.get_by_role("img", name="the photo searched with")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("image2image")
    results = _results(page)
    expect(results.first).to_contain_text("blue")
    _thumbnails_loaded(page)
    page.get_by_role("button", name="Remove photo").click()
    expect(page.get_by_label("Photo")).to_be_focused()


def test_a_filter_narrows_the_results(page: Any) -> None:
    page.get_by_label("Words").fill("green")
    page.get_by_label("Words").press("Enter")
    expect(_results(page)).to_have_count(6)
    page.get_by_label("Category").fill("Shoe")
    page.get_by_label("Category").press("Enter")
    expect(_results(page)).to_have_count(3)
    for title in _results(page).get_by_role("heading").all_inner_texts():
        assert title.endswith("shoe"), title
    page.get_by_label("In stock only").check()
    expect(page.get_by_role("status")).to_contain_text("0 results")


def test_more_like_this_and_the_user_box(page: Any) -> None:
    user = page.get_by_label("Pseudonymous id")
    assert (user.input_value() or "").startswith("shopper-")
    page.get_by_label("Words").fill("red shoe")
    page.get_by_label("Words").press("Enter")
    expect(_results(page).first).to_contain_text("red shoe")
    with page.expect_request("**/v1/events") as event:
        page.get_by_role("button", name="More like red shoe").click()
    assert '"product_id":"red-shoe"' in (event.value.post_data or "")
    expect(page.get_by_role("status")).to_contain_text("more_like_this")
    expect(_results(page).first).not_to_contain_text("red shoe")
    page.get_by_role("button", name="New id").click()
    assert user.input_value() != ""


def test_keyboard_alone_reaches_every_control(page: Any) -> None:
    expect(page.get_by_label("Words")).to_be_focused()
    reached = set()
    for _ in range(20):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id"))
    assert {"go", "photo", "category", "brand", "price-min", "in-stock", "user"} <= reached
    for control in page.locator("input, button").all():
        if control.is_visible():
            name = control.evaluate("e => e.labels && e.labels.length ? 'label' : e.textContent")
            assert name, control.evaluate("e => e.outerHTML")
