"""The built book, looked at in a real headless browser (Debian's Chromium).

Needs `_build/html` from `bash scripts/book.sh` (scripts/test.sh builds it
first). Screenshots go to `_build/screenshots/`.
"""
import glob
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTML = os.path.join(ROOT, "_build", "html")
SHOTS = os.path.join(ROOT, "_build", "screenshots")
CHAPTER = "book/chapter_introduction/first-look.html"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html_dir():
    if not os.path.exists(os.path.join(HTML, "index.html")):
        pytest.fail("_build/html is missing: run `bash scripts/book.sh` first "
                    "(scripts/test.sh does it)")
    return HTML


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "install chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--window-size=1280,2000", "--lang=zh-CN"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, relpath):
    browser.get("file://" + os.path.join(HTML, relpath))
    browser.execute_script("return document.fonts.ready")
    return browser


def chinese_chars(text):
    return len(re.findall(r"[\u4e00-\u9fff]", text))


def test_index_page(html_dir, browser):
    page = open_page(browser, "index.html")
    body = page.find_element("tag name", "body").text
    assert chinese_chars(body) > 50
    assert "动手学人脸识别" in page.title
    os.makedirs(SHOTS, exist_ok=True)
    assert page.save_screenshot(os.path.join(SHOTS, "index.png"))


def test_chapter_page_has_text_code_output_and_figure(html_dir, browser):
    page = open_page(browser, CHAPTER)
    body = page.find_element("tag name", "body").text
    assert chinese_chars(body) > 300, "Chinese prose"
    inputs = page.find_elements("css selector", "div.cell_input")
    outputs = page.find_elements("css selector", "div.cell_output")
    assert len(inputs) >= 5, "code cells"
    assert len(outputs) >= 3, "executed outputs"
    assert any(o.text.strip() for o in outputs), "an output with text"
    loaded = page.execute_script(
        "return Array.from(document.querySelectorAll('div.cell_output img'))"
        ".filter(i => i.complete && i.naturalWidth > 100).length")
    assert loaded >= 1, "a figure produced by the notebook, loaded by the browser"
    os.makedirs(SHOTS, exist_ok=True)
    figure = page.find_elements("css selector", "div.cell_output img")[0]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
    assert page.save_screenshot(os.path.join(SHOTS, "chapter.png"))


def test_chinese_renders_with_a_cjk_font(html_dir, browser):
    page = open_page(browser, CHAPTER)
    # Missing glyphs all draw as the same box ("tofu"): draw two different
    # Chinese characters in the page's font and require different pixels.
    pixels = page.execute_script("""
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 40;
        const c = canvas.getContext('2d');
        c.font = '32px ' + getComputedStyle(document.body).fontFamily;
        const draw = ch => { c.clearRect(0, 0, 40, 40); c.fillText(ch, 2, 32);
                             return Array.from(c.getImageData(0, 0, 40, 40).data)
                                         .filter((v, i) => i % 4 == 3); };
        return [draw('人'), draw('脸'), draw('\\u{10FFFD}')];""")
    ren, lian, missing = pixels
    assert sum(ren) > 0 and sum(lian) > 0, "Chinese text drew nothing"
    assert ren != lian, "two Chinese characters look the same: missing glyphs"
    assert ren != missing


def test_every_toc_page_was_built(html_dir):
    import sync_notebooks as sync
    missing = [e for e in sync.toc_files()
               if not os.path.exists(os.path.join(HTML, e + ".html"))]
    assert not missing


def test_no_failed_notebooks_or_missing_glyphs(html_dir):
    reports = glob.glob(os.path.join(HTML, "reports", "*"))
    assert not reports, f"notebook failures: {reports}"
    for path in glob.glob(os.path.join(HTML, "book", "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert "missing from current font" not in text, path
        assert "Traceback (most recent call last)" not in text, path
