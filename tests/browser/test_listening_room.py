"""The listening room in a real browser: Debian's headless Chromium driven by Selenium over a running stack.

Skips with the reason where Chromium, chromedriver or selenium is missing (`make install` installs Chromium
when it can). The upload step needs a real clip from ../shared/data/audio (ENCORE_DATASETS_DIR) and skips on its
own without it. ENCORE_ROOM_SCREENSHOT=path saves a screenshot of the page after the upload (how
docs/listening_room.png was made).
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from encore.settings import EncoreSettings
from tests.stack_world import API_KEY, needs_query_encoder, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first one builds the quick world

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CLIP = EncoreSettings().datasets_dir / "audio" / "gtzan_country.00000.wav"  # ENCORE_DATASETS_DIR, ../shared/data
WAIT_S = 60  # the longest any step may take on a busy 2-core machine (an upload encodes 30 s of audio)

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no headless Chromium here (chromium and chromedriver not on PATH): `apt-get install chromium "
        "chromium-driver`, which `make install` tries as root",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def stack(booted_world, tmp_path_factory):
    with running_stack(booted_world, tmp_path_factory.mktemp("browser_logs")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1400")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = WAIT_S):
    return WebDriverWait(driver, timeout).until(condition)


def texts(driver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def type_key(driver) -> None:
    """The key field, cleared first: the page refills it from the tab's sessionStorage, so typing into it again
    would send the key twice over (a 403 on every rating)."""
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(API_KEY)


def show_user(driver, user: str) -> None:
    Select(driver.find_element(By.ID, "demo-users")).select_by_value(user)
    wait(driver, lambda d: f"for {user} ·" in d.find_element(By.ID, "recs-meta").text)


def test_the_page_shows_a_demo_users_list_and_history(stack, browser) -> None:
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#demo-users option")) > 1)
    show_user(browser, "1")
    items = browser.find_elements(By.CSS_SELECTOR, "#recs li")
    assert len(items) == 10
    assert all("score 0." in t for t in texts(browser, "#recs li .score"))
    assert all(t.strip() for t in texts(browser, "#recs li .reason"))
    assert texts(browser, "#recs li .rank")[:2] == ["1.", "2."]
    assert browser.find_elements(By.CSS_SELECTOR, "#history li"), "a known user has a history"
    assert browser.find_element(By.ID, "degraded").get_attribute("hidden") is not None
    wait(browser, lambda d: d.find_element(By.ID, "status").text == "ranker ready · embedder ready")


def test_an_unknown_user_is_told_why_there_is_no_history(stack, browser) -> None:
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) > 0)
    field = browser.find_element(By.ID, "user-id")
    field.send_keys("somebody-new")
    browser.find_element(By.ID, "show").click()
    wait(browser, lambda d: "for somebody-new ·" in d.find_element(By.ID, "recs-meta").text)
    assert "popularity" in browser.find_element(By.ID, "recs-meta").text
    wait(browser, lambda d: "unknown to the bundle" in d.find_element(By.ID, "history-meta").text)


def test_a_real_clip_uploads_and_is_placed_in_the_listeners_list(stack, browser) -> None:
    if not CLIP.is_file():
        pytest.skip(f"upload step skipped: no real clip at {CLIP} (../shared is absent in a bare clone)")
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#demo-users option")) > 1)
    show_user(browser, "0")
    type_key(browser)
    browser.find_element(By.ID, "file").send_keys(str(CLIP))  # what a drop hands the page, through the file input
    wait(browser, ec.text_to_be_present_in_element((By.ID, "placement"), "0"), timeout=180)
    upload_id = browser.find_element(By.ID, "upload-id").text
    assert upload_id
    assert browser.find_elements(By.CSS_SELECTOR, "#upload-result .tag"), "MusiCNN's tags are shown"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#similar li")) == 5
    placement = browser.find_element(By.ID, "placement").text
    assert placement.startswith(("In 0's list at rank", "Not in 0's top")), placement
    if shot := os.environ.get("ENCORE_ROOM_SCREENSHOT"):
        browser.save_screenshot(shot)
    # listen: the page gets a signed link with the key, and the player loads the audio through it
    browser.find_element(By.XPATH, "//div[@id='upload-result']//button[contains(., 'play')]").click()
    wait(browser, lambda d: "sig=" in (d.find_element(By.ID, "player").get_attribute("src") or ""))
    wait(browser, lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1)
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None


def test_a_new_listener_presses_like_and_the_list_changes(stack, browser) -> None:
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) > 0)
    type_key(browser)
    listener = f"browser-{uuid.uuid4().hex[:8]}"
    browser.find_element(By.ID, "user-id").send_keys(listener)
    browser.find_element(By.ID, "show").click()
    wait(browser, lambda d: f"for {listener} · " in d.find_element(By.ID, "recs-meta").text)
    before = [e.get_attribute("data-track") for e in browser.find_elements(By.CSS_SELECTOR, "#recs li")]
    liked = before[0]
    browser.find_element(By.CSS_SELECTOR, f"#recs li[data-track='{liked}'] button[data-event='like']").click()
    answered = (By.ID, "event-answer"), (By.ID, "error")
    wait(browser, lambda d: any(d.find_element(*where).text for where in answered))
    error = browser.find_element(By.ID, "error")
    assert error.get_attribute("hidden") is not None, error.text
    assert f"like {liked}" in browser.find_element(By.ID, "event-answer").text
    wait(browser, lambda d: "foldin" in d.find_element(By.ID, "recs-meta").text)
    after = [e.get_attribute("data-track") for e in browser.find_elements(By.CSS_SELECTOR, "#recs li")]
    assert after and after != before
    assert liked not in after, "a liked track is not recommended again"
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None


@needs_query_encoder
def test_words_steer_the_list(stack, browser) -> None:
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#demo-users option")) > 1)
    show_user(browser, "1")
    browser.find_element(By.ID, "query").send_keys("classical strings")
    browser.find_element(By.ID, "ask").click()
    wait(browser, lambda d: "steered by" in d.find_element(By.ID, "recs-meta").text)
    assert all(t.startswith("match ") for t in texts(browser, "#recs li .match"))
    assert texts(browser, "#recs li .match"), "each tagged track shows how well it matches"


@needs_query_encoder
def test_the_address_names_the_listener_and_the_words(stack, browser) -> None:
    """?user_id=&q= opens that listener's list, steered; showing another listener rewrites the address."""
    browser.get(stack.url("ranker") + "/?user_id=2&q=classical+strings")
    wait(browser, lambda d: "for 2 ·" in d.find_element(By.ID, "recs-meta").text)
    assert "steered by “classical strings”" in browser.find_element(By.ID, "recs-meta").text
    assert browser.find_element(By.ID, "query").get_attribute("value") == "classical strings"
    assert Select(browser.find_element(By.ID, "demo-users")).first_selected_option.get_attribute("value") == "2"
    browser.find_element(By.ID, "clear-query").click()
    wait(browser, lambda d: "steered" not in d.find_element(By.ID, "recs-meta").text)
    show_user(browser, "1")
    assert browser.execute_script("return location.search") == "?user_id=1"
    browser.get(stack.url("ranker") + "/?user_id=somebody-new")  # not a demo user: typed into the id field
    wait(browser, lambda d: "for somebody-new ·" in d.find_element(By.ID, "recs-meta").text)
    assert browser.find_element(By.ID, "user-id").get_attribute("value") == "somebody-new"


def test_the_page_fits_a_phone_screen(stack, browser) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(stack.url("ranker") + "/")
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) > 0)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        browser.set_window_size(1280, 1400)


OPERATIONS = [("ranker", "/recommend"), ("embedder", "/embed"), ("retriever", "/candidates")]


@pytest.mark.parametrize(("service", "operation"), OPERATIONS)
def test_docs_render_their_operations_offline(stack, browser, service: str, operation: str) -> None:
    browser.get(stack.url(service) + "/docs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) > 2)
    assert operation in [p.replace("\u200b", "") for p in texts(browser, ".opblock-summary-path")]


def test_a_stopped_embedder_is_reported_and_the_list_still_shows(stack, browser) -> None:
    """Last: stops the embedder. The page answers within its timeouts and shows what it can."""
    stack.procs["embedder"].terminate()
    stack.procs["embedder"].wait(timeout=30)
    browser.get(stack.url("ranker") + "/")
    wait(browser, lambda d: "embedder NOT ready" in d.find_element(By.ID, "status").text)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) > 0)
    type_key(browser)
    browser.find_element(By.CSS_SELECTOR, "#recs li button").click()  # play: needs the embedder
    wait(browser, lambda d: "embedder cannot be reached" in d.find_element(By.ID, "error").text)
