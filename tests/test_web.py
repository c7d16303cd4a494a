"""The page in web/, in a real Chromium (Playwright, Debian's /usr/bin/chromium): it loads
cleanly from its own origin, reads digits drawn with the mouse, works from the keyboard and
for a screen reader (axe-core finds nothing serious), fits a phone, and agrees with predict.py.

Skipped with the reason where Chromium, Playwright or web/node_modules is missing; under
CI (CI=true) that is a failure instead. WEB_SCREENSHOT=path keeps the screenshot taken
after drawing (web/screenshot.png is one)."""

import base64
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import data
from conftest import ROOT, synthetic_digits

WEB = ROOT / "web"
AXE = WEB / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PARITY_IMAGES = 200


def missing(reason):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """web/ on a local port, as `python -m http.server -d web` serves it; yields its origin."""
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        missing("web/node_modules is missing: run npm ci --prefix web")
    handler = functools.partial(QuietHandler, directory=str(WEB))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -r requirements.txt)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Page:
    """A fresh tab on the page, recording console errors and every requested URL."""

    def __init__(self, browser, origin, width=1100, height=620):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(origin + "/")
        self.page.evaluate("window.ready")

    def draw(self, *strokes, moves=36, lift=True):
        """Each stroke: a list of (x, y) in pad pixels (the pad is 280 x 280), drawn in
        about MOVES pointer moves (each one a round trip to the browser). With lift=False
        the last stroke is left unfinished, the button still down."""
        box = self.page.locator("#pad").bounding_box()
        mouse = self.page.mouse
        for stroke in strokes:
            steps = max(1, moves // len(stroke))
            mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            mouse.down()
            for x, y in stroke[1:]:
                mouse.move(box["x"] + x, box["y"] + y, steps=steps)
            if lift or stroke is not strokes[-1]:
                mouse.up()
        return self.shown_digit()

    def serious_violations(self):
        """axe-core's serious and critical findings on the page as it is now."""
        if not AXE.is_file():
            missing("web/node_modules/axe-core is missing: run npm ci --prefix web")
        self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate("async () => (await axe.run(document)).violations"
                                   ".map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
        return [v for v in found if v["impact"] in ("serious", "critical")]

    def shown_digit(self):
        """The digit on show once every inference has finished."""
        self.page.wait_for_function("document.querySelector('#digit').textContent !== '–'")
        self.page.evaluate("window.classify(document.querySelector('#pad'))")  # waits its turn
        return self.page.locator("#digit").text_content()

    def clear(self):
        self.page.click("#clear")


@pytest.fixture
def page(browser, server):
    tab = Page(browser, server)
    yield tab
    tab.page.close()


@pytest.fixture(scope="module")
def pad(browser, server):
    """One tab shared by the tests that only draw and read (each clears the pad first):
    loading the page and its model costs about a second a tab."""
    tab = Page(browser, server)
    yield tab
    tab.page.close()


@pytest.fixture
def clear_pad(pad):
    pad.clear()
    return pad


@pytest.fixture
def phone(browser, server):
    tab = Page(browser, server, width=390, height=844)
    yield tab
    tab.page.close()


def ellipse(cx, cy, rx, ry, points=40):
    angles = np.linspace(0, 2 * np.pi, points + 1)
    return [(cx + rx * np.sin(a), cy - ry * np.cos(a)) for a in angles]


# Digits drawn as a person would, off-centre and at different sizes: (x, y) on the pad.
DRAWINGS = [
    ("1", "tall, centred", [[(140, 40), (138, 240)]]),
    ("1", "small, top left", [[(50, 20), (48, 90)]]),
    ("1", "slanted, bottom right", [[(230, 150), (205, 265)]]),
    ("0", "large", [ellipse(140, 140, 70, 110)]),
    ("0", "small, top right", [ellipse(225, 55, 25, 38)]),
    ("7", "centred", [[(80, 50), (200, 50), (120, 250)]]),
    ("7", "small, bottom left", [[(20, 170), (90, 170), (50, 270)]]),
]


def test_loads_with_no_console_error_and_no_request_off_its_origin(page, server):
    timings = page.page.evaluate("window.timings")
    page.draw(*DRAWINGS[0][2])
    assert page.errors == []
    assert page.requests and all(url.startswith(server + "/") for url in page.requests), page.requests
    assert "model.onnx" in {urlsplit(url).path.rsplit("/", 1)[-1] for url in page.requests}
    print(f"\nmodel ready {timings['modelReady']:.0f} ms after navigation start")


@pytest.mark.parametrize(("expected", "how", "strokes"), DRAWINGS, ids=[f"{d[0]} {d[1]}" for d in DRAWINGS])
def test_mouse_drawn_digits_are_read(clear_pad, expected, how, strokes):
    assert clear_pad.draw(*strokes) == expected
    clear_pad.clear()
    assert clear_pad.page.locator("#digit").text_content() == "–"
    assert clear_pad.errors == []


def test_screenshot_after_drawing_shows_the_digit_its_probabilities_and_time(clear_pad, tmp_path):
    page = clear_pad
    assert page.draw(*DRAWINGS[5][2]) == "7"
    path = Path(os.environ.get("WEB_SCREENSHOT", tmp_path / "screenshot.png"))
    page.page.screenshot(path=path)
    assert Image.open(path).size == (1100, 620)
    top_bar = page.page.locator("#bars li.top span").first.text_content()
    assert top_bar == "7"
    assert page.page.locator("#time").text_content().startswith("inference ")


def test_blank_pad_then_a_chosen_file_then_a_dropped_one(page, tmp_path):
    assert page.page.evaluate("window.classify(document.querySelector('#pad')).catch(e => e.message)") \
        == "no ink found (blank image)"
    digit = np.full((90, 60), 255, np.uint8)
    digit[10:80, 28:34] = 0  # a dark "1" on white
    Image.fromarray(digit).save(tmp_path / "one.png")
    page.page.set_input_files("#file", tmp_path / "one.png")
    # The file is read after the change event returns: wait until the answer is no longer
    # the blank pad's "–" (a non-empty text is not enough: "–" is one), then read it.
    read = "(() => { const t = document.querySelector('#digit').textContent; return t !== '–' && t; })()"
    assert page.page.wait_for_function(read).json_value() == "1"
    ring = Image.new("L", (80, 100), 255)
    ImageDraw.Draw(ring).ellipse((15, 10, 65, 90), outline=0, width=8)  # a "0"
    buffer = io.BytesIO()
    ring.save(buffer, format="PNG")
    page.page.evaluate("""async (base64) => {
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const drop = new DataTransfer();
        drop.items.add(new File([bytes], 'zero.png', { type: 'image/png' }));
        const event = new DragEvent('drop', { dataTransfer: drop, bubbles: true });
        document.querySelector('#pad').dispatchEvent(event);
    }""", base64.b64encode(buffer.getvalue()).decode())
    page.page.wait_for_function("document.querySelector('#digit').textContent === '0'")


FOUR = [[(80, 40), (60, 170), (220, 170)], [(170, 60), (170, 260)]]


def test_axe_finds_no_serious_violation_when_loaded_or_after_drawing(page):
    assert page.serious_violations() == []
    page.draw(*FOUR)
    assert page.serious_violations() == []


def test_only_the_answer_is_announced_and_only_when_a_stroke_ends(page):
    live = page.page.evaluate("Array.from(document.querySelectorAll("
                              "'[aria-live], [role=status], [role=alert], [role=log], output'), (e) => e.id)")
    assert live == ["answer"]
    assert page.page.get_attribute("#pad", "role") == "img" and page.page.get_attribute("#pad", "aria-label")
    answer = page.page.locator("#answer")
    page.draw([(80, 50), (200, 50), (120, 250)], lift=False)  # a 7, the button still down
    assert page.page.locator("#digit").text_content() == "7" and answer.text_content() == ""
    page.page.mouse.up()
    page.page.wait_for_function("document.querySelector('#answer').textContent.startsWith('Read as 7')")


def test_an_image_is_chosen_from_the_keyboard(page, tmp_path):
    digit = np.full((90, 60), 255, np.uint8)
    digit[10:80, 28:34] = 0  # a dark "1" on white
    Image.fromarray(digit).save(tmp_path / "one.png")
    # The wait for the chooser starts before the first key press. Starting it turns on Playwright's
    # file-chooser interception (Page.setInterceptFileChooserDialog), sent without waiting for
    # Chromium's answer; Chromium applies it in the page's renderer, where key events can overtake
    # it. A Space sent at once could open a chooser that is not intercepted: headless Chromium
    # cancels it (the input gets a "cancel" event) and Playwright never hears of it. The Tab
    # presses and focus checks are round trips to that renderer, so interception is on by Space.
    with page.page.expect_file_chooser(timeout=10_000) as chooser:
        for _ in range(10):  # Tab through the page to the file chooser
            page.page.keyboard.press("Tab")
            if page.page.evaluate("document.activeElement.id") == "file":
                break
        assert page.page.evaluate("document.activeElement.id") == "file"
        page.page.keyboard.press("Space")
    chooser.value.set_files(tmp_path / "one.png")
    page.page.wait_for_function("document.querySelector('#answer').textContent.startsWith('Read as 1')")
    assert page.page.locator("#digit").text_content() == "1"


def test_on_a_phone_the_pad_and_the_answer_fit_one_screen(phone):
    assert phone.draw(*FOUR) == "4"
    for selector in ("#pad", "#digit"):
        box = phone.page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, selector


def test_classify_accepts_image_data_and_canvas_alike(clear_pad):
    page = clear_pad
    page.draw(*DRAWINGS[3][2])
    same = page.page.evaluate("""async () => {
        const pad = document.querySelector('#pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height);
        const [a, b] = [await window.classify(pad), await window.classify(data)];
        return a.digit === b.digit && a.probabilities.every((p, i) => p === b.probabilities[i]);
    }""")
    assert same


REAL_MNIST = all(data.is_verified(data.raw_dir(ROOT / "data") / name) for name in data.MNIST_MD5)


def parity_digits(source):
    """PARITY_IMAGES digits, dark on white, at different sizes and places: MNIST's first
    test digits, or synthetic ones (the shapes the IDX tests use); or "paper": synthetic
    digits photographed on paper in robustness.py's styles (grain, a shadow, a fine pen)."""
    if source == "paper":
        import robustness  # only here: the other tests need none of its fonts and corruptions

        digits, _ = synthetic_digits(PARITY_IMAGES // 2, seed=4)
        images = robustness.to_unit_interval(torch.from_numpy(digits))
        styles, rng, photos = list(robustness.PAPER.values()), np.random.default_rng(0), []
        for i in range(len(images)):
            (gray,) = robustness.photographed(images[i:i + 1], rng, **styles[i % len(styles)])
            photos.append(np.round(gray * 255).astype(np.uint8))
        return photos
    if source == "MNIST":
        pixels, _ = data.read_split(ROOT / "data", train=False)
        digits = pixels[:PARITY_IMAGES].numpy()  # uint8 already: 255 is full ink
    else:
        digits, _ = synthetic_digits(PARITY_IMAGES, seed=3)
    rng = np.random.default_rng(0)
    images = []
    for digit in digits:
        scale = int(rng.integers(1, 5))
        big = np.kron(255 - digit, np.ones((scale, scale), np.uint8))
        paper = np.full((big.shape[0] + int(rng.integers(0, 60)), big.shape[1] + int(rng.integers(0, 60))),
                        255, np.uint8)
        top, left = (int(rng.integers(0, paper.shape[i] - big.shape[i] + 1)) for i in (0, 1))
        paper[top:top + big.shape[0], left:left + big.shape[1]] = big
        images.append(paper)
    return images


@pytest.mark.parametrize("source", [
    pytest.param("MNIST", marks=pytest.mark.skipif(not REAL_MNIST, reason="real MNIST is not in ./data")),
    "synthetic", "paper"])
def test_page_agrees_with_predict_py(pad, tmp_path, source):
    page = pad
    images = parity_digits(source)
    paths, urls = [], []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(buffer.getvalue())
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    command = [sys.executable, str(ROOT / "predict.py"), "--json", "--top-k", "10", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    expected = []
    for row in json.loads(result.stdout):
        probabilities = [0.0] * 10
        for top in row["top_k"]:
            probabilities[top["digit"]] = top["probability"]
        expected.append(probabilities)
    got = page.page.evaluate("""async (urls) => {
        const out = [];
        for (const url of urls) out.push((await window.classify(url)).probabilities);
        return out;
    }""", urls)
    expected, got = np.array(expected), np.array(got)
    agreement = (expected.argmax(1) == got.argmax(1)).mean()
    max_diff = np.abs(expected - got).max()
    print(f"\n{len(images)} {source} digits: same prediction for {100 * agreement:.1f}%, "
          f"max probability difference {max_diff:.2e}")
    assert agreement >= 0.99
    assert max_diff <= 0.02
