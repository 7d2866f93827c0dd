"""The web page in real Chromium: sign up, upload two photos, see their labels, search, filter; screenshots."""

import re
import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.conftest import PASSWORD
from tests.e2e.photos import photo

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
THUMBNAILS_LOADED = "[...document.querySelectorAll('.card img')].every((img) => img.complete && img.naturalWidth > 0)"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, api_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=api_url)
    page = context.new_page()
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page, problems
    context.close()


def test_sign_up_upload_search_and_filter(page, tmp_path):
    page, problems = page
    files = []
    for name in ("chelsea.png", "coffee.png"):
        (tmp_path / name).write_bytes(photo(name))
        files.append(tmp_path / name)
    page.goto("/")
    page.get_by_role("tab", name="Create account").click()
    page.get_by_label("Username").fill(f"web_{uuid.uuid4().hex[:8]}")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("No photos yet")).to_be_visible()

    page.set_input_files("#file-input", [str(path) for path in files])
    cards = page.locator(".gallery .card")
    expect(cards).to_have_count(2, timeout=30_000)
    expect(page.locator(".card .category", has_text="espresso")).to_be_visible(timeout=30_000)
    expect(page.locator(".card .category", has_text="cat")).to_be_visible(timeout=30_000)
    expect(page.locator(".card .labels li").first).to_contain_text("%")
    expect(page.locator(".card .thumb img").first).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator(".chip", has_text="espresso")).to_contain_text("1")

    page.get_by_label("Search by tag").fill("cat")
    page.get_by_role("button", name="Search").click()
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".category")).to_contain_text("cat")

    page.locator(".chip", has_text="espresso").click()
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".category")).to_have_text("espresso")
    page.locator(".chip", has_text="All").click()
    expect(cards).to_have_count(2)
    page.wait_for_function(THUMBNAILS_LOADED)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-desktop.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=ARTIFACTS / "web-phone.png", full_page=True)

    coffee = cards.filter(has_text="espresso")
    with page.expect_download() as download:
        coffee.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == "coffee.png"
    assert Path(download.value.path()).read_bytes() == photo("coffee.png")
    page.once("dialog", lambda dialog: dialog.accept())
    coffee.get_by_role("button", name="Delete").click()
    expect(cards).to_have_count(1)
    expect(page.locator(".chip", has_text="espresso")).to_have_count(0)
    assert not problems, problems


def test_sign_in_page_on_a_phone(browser, api_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=api_url)
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Your photos, labelled for you")).to_be_visible()
    page.get_by_label("Username").fill("nobody_here")
    page.get_by_label("Password", exact=True).fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#auth-error")).to_contain_text("password")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-sign-in-phone.png")
    width = page.evaluate("document.documentElement.scrollWidth")
    context.close()
    assert width <= 390
