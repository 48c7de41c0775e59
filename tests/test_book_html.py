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
# FR_BOOK_HTML: check another build (e.g. a small book built in /tmp)
HTML = os.environ.get("FR_BOOK_HTML") or os.path.join(ROOT, "_build", "html")
SHOTS = os.path.join(ROOT, "_build", "screenshots")
CHAPTER = "book/chapter_introduction/first-look.html"
LOSS_CHAPTER = "book/chapter_loss/index.html"
# pages whose widgets need the widget JavaScript, and their static fallback
WIDGET_PAGES = ["book/chapter_loss/margin-explorer.html",
                "book/chapter_deployment/verification-demo.html"]
# what myst-nb loads from CDNs unless _config.yml points it at book/_static
CDN_HINTS = ("cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com",
             "require.min.js", "html-manager")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html_dir():
    if not os.path.exists(os.path.join(HTML, "index.html")):
        pytest.fail("_build/html is missing: run `bash scripts/book.sh` first "
                    "(scripts/test.sh does it)")
    return HTML


def start_chromium(offline=False):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "install chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--disable-quic", "--window-size=1280,2000", "--lang=zh-CN"]
    if offline:
        # no host name resolves: every http(s) request fails, as on a
        # machine without network; file:// pages still load
        flags.append("--host-resolver-rules=MAP * ~NOTFOUND")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def offline_browser():
    driver = start_chromium(offline=True)
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


# A phone's width (CSS pixels): sections must fit it too, wide code, tables
# and formulas scrolling in their own boxes (book/_static/layout.css).
PHONE_WIDTH = 375

# What overflows the window: the document's width beyond the viewport, and
# every output image, display formula and table whose right edge lies beyond
# the viewport or beyond the article column (measured against the window and
# the column, not against <main>, which grows with what it holds).
LAYOUT_JS = """
    const vw = window.innerWidth;
    const col = document.querySelector('.bd-article-container, article, main')
                || document.body;
    const right = Math.min(vw, col.getBoundingClientRect().left + col.clientWidth);
    const imgs = Array.from(document.querySelectorAll('div.cell_output img'));
    const clipped = el => {            // inside a box that scrolls or clips
        for (let a = el.parentElement; a && a !== col; a = a.parentElement)
            if (getComputedStyle(a).overflowX != 'visible'
                    && a.getBoundingClientRect().right <= right + 1) return true;
        return false; };
    const wide = Array.from(document.querySelectorAll(
            'article img, article mjx-container, article table, article pre'))
        .filter(el => el.getBoundingClientRect().right > right + 1 && !clipped(el))
        .map(el => el.tagName.toLowerCase() + ' ' + Math.round(el.getBoundingClientRect().right)
             + ' "' + (el.textContent || el.getAttribute('src') || '').trim().slice(0, 40) + '"');
    return {viewport: vw, document: document.documentElement.scrollWidth,
            count: imgs.length,
            broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
            wide: wide.slice(0, 5),
            height: document.documentElement.scrollHeight};"""


def layout_problems(page, label):
    """What overflows the window in ``page`` as laid out now ([] when none)."""
    state = page.execute_script(LAYOUT_JS)
    problems = []
    if state["document"] > state["viewport"] + 2:
        problems.append(f"{label}: the page is {state['document']} px wide in a "
                        f"{state['viewport']} px window")
    if state["wide"]:
        problems.append(f"{label}: wider than the window or the text column: {state['wide']}")
    if state["broken"]:
        problems.append(f"{label}: {state['broken']} of {state['count']} images did not load")
    return problems, state


def set_viewport(page, width, height):
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def test_every_section_renders_its_figures(html_dir, browser):
    """Every notebook section: each output image loaded; the page, its images,
    formulas and tables fit a 1280 px window and a phone's width (wide ones
    scroll in their own box); a screenshot of the whole page (half scale) goes
    to ``_build/screenshots/sections/`` so that all pages can be looked at once.

    The screenshot is taken with the viewport made as tall as the page
    (device-metrics override), not with ``captureBeyondViewport``: in
    headless Chromium that mode drew random pages shifted sideways, their
    left part cut off, although nothing on them was wider than the window."""
    import base64
    import sync_notebooks as sync
    folder = os.path.join(SHOTS, "sections")
    os.makedirs(folder, exist_ok=True)
    problems = []
    for entry in sync.toc_files():
        if not os.path.exists(os.path.join(ROOT, entry + ".ipynb")):
            continue
        page = open_page(browser, entry + ".html")
        found, state = layout_problems(page, entry)
        problems += found
        width, height = state["viewport"], min(state["height"], 30000)
        set_viewport(page, width, height)
        try:
            found, _ = layout_problems(page, entry + " (full height)")
            problems += found
            shot = page.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "clip": {"x": 0, "y": 0, "width": width,
                                          "height": height, "scale": 0.5}})
            set_viewport(page, PHONE_WIDTH, 800)
            found, _ = layout_problems(page, f"{entry} ({PHONE_WIDTH} px)")
            problems += found
        finally:
            page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        name = entry.replace("book/", "").replace("/", "__") + ".png"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    assert not problems, "\n".join(problems)


def test_no_failed_notebooks_or_missing_glyphs(html_dir):
    reports = glob.glob(os.path.join(HTML, "reports", "*"))
    assert not reports, f"notebook failures: {reports}"
    for path in glob.glob(os.path.join(HTML, "book", "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert "missing from current font" not in text, path
        assert "Traceback (most recent call last)" not in text, path


def test_search_index_has_chinese_words(html_dir):
    # Sphinx's Chinese splitter indexes Han text only when jieba is installed;
    # without it the index holds Latin terms only (issue 14: 4,687 terms, no Han)
    import json
    with open(os.path.join(HTML, "searchindex.js"), encoding="utf-8") as f:
        text = f.read()  # Search.setIndex({...})
    index = json.loads(text[text.index("(") + 1:text.rindex(")")])
    terms = list(index["terms"]) + list(index["titleterms"])
    han = [t for t in terms if re.search(r"[\u4e00-\u9fff]", t)]
    assert len(han) > 20, (f"{len(han)} Chinese terms of {len(terms)} in "
                           "searchindex.js (is jieba installed?)")
    assert "损失" in han


def test_search_finds_the_loss_chapter(html_dir, browser):
    from selenium.webdriver.support.ui import WebDriverWait
    from urllib.parse import quote
    browser.get("file://" + os.path.join(HTML, "search.html") + "?q=" + quote("损失"))
    links = WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "const r = document.querySelectorAll('#search-results li a');"
        "return r.length ? Array.from(r).map(a => a.href) : null"))
    assert any(LOSS_CHAPTER in href for href in links), links[:10]


def _requested_urls(driver):
    import json
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.mark.parametrize("page", WIDGET_PAGES)
def test_widgets_work_offline_with_a_fallback(html_dir, offline_browser, page):
    from selenium.webdriver.support.ui import WebDriverWait
    path = os.path.join(HTML, page)
    with open(path, encoding="utf-8") as f:
        html = f.read()
    assert "application/vnd.jupyter.widget-state+json" in html, \
        f"{page}: no widget state (was the notebook executed with widgets?)"
    assert "fr-widget-fallback" in html, f"{page}: no static fallback figure"
    assert "在 Colab 中拖动" in html, f"{page}: no note on how to make it live"
    driver = offline_browser
    driver.get_log("performance")  # drop what earlier pages requested
    driver.get("file://" + path)
    # the widget manager (served from _static) draws the controls offline
    controls = WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "const w = document.querySelectorAll('.jupyter-widgets .widget-dropdown select,"
        " .jupyter-widgets .slider, .jupyter-widgets input');"
        "return w.length ? w.length : null"))
    assert controls >= 2
    state = driver.execute_script("""
        const fig = document.querySelector('figure.fr-widget-fallback');
        const img = fig && fig.querySelector('img');
        return {fallback_hidden: !!fig && getComputedStyle(fig).display == 'none',
                fallback_img: !!img && img.complete && img.naturalWidth > 100};""")
    assert state == {"fallback_hidden": True, "fallback_img": True}, state
    os.makedirs(SHOTS, exist_ok=True)
    widget = driver.find_elements("css selector", ".jupyter-widgets")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", widget)
    driver.save_screenshot(os.path.join(SHOTS, os.path.basename(page) + "-offline.png"))
    remote = [u for u in _requested_urls(driver) if not u.startswith(("file:", "data:", "blob:"))]
    assert not [u for u in remote if any(h in u for h in CDN_HINTS)], remote


def test_widget_fallback_shows_without_the_widget_javascript(html_dir, offline_browser):
    # the same page with the widget manager blocked (a reader with scripts off,
    # a broken copy): the static figure is visible instead
    driver = offline_browser
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*embed-amd.js"]})
    try:
        driver.get("file://" + os.path.join(HTML, WIDGET_PAGES[0]))
        import time
        time.sleep(3)
        state = driver.execute_script("""
            const fig = document.querySelector('figure.fr-widget-fallback');
            const img = fig && fig.querySelector('img');
            return {widgets: document.querySelectorAll('.jupyter-widgets').length,
                    fallback_visible: !!fig && getComputedStyle(fig).display != 'none',
                    fallback_img: !!img && img.complete && img.naturalWidth > 100};""")
        figures = driver.find_elements("css selector", "figure.fr-widget-fallback")
        if figures:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", figures[0])
            os.makedirs(SHOTS, exist_ok=True)
            driver.save_screenshot(os.path.join(SHOTS, "widget-fallback-no-js.png"))
    finally:
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    assert state == {"widgets": 0, "fallback_visible": True, "fallback_img": True}, state


def test_no_page_loads_widget_javascript_from_a_cdn(html_dir):
    pattern = re.compile(r'<script[^>]+src="(https?:[^"]*)"')
    for path in glob.glob(os.path.join(HTML, "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as f:
            remote = pattern.findall(f.read())
        bad = [u for u in remote if any(h in u for h in CDN_HINTS)]
        assert not bad, f"{os.path.relpath(path, HTML)} loads {bad}"
