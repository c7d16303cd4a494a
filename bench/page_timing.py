"""The page in Chromium: navigation start to model ready (ONNX Runtime loaded, model.onnx
compiled, one warm-up inference) and to the first prediction of a digit drawn at once, in 5
fresh browser contexts (nothing cached); then one inference, 200 times. From the project root:

    python bench/page_timing.py
"""

import functools
import http.server
import os
import statistics
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

WEB = Path(__file__).resolve().parents[1] / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

INFERENCES = """async () => {
    const pad = document.querySelector('#pad');
    const times = [];
    for (let k = 0; k < 200; k++) {
        await window.classify(pad);
        times.push(window.timings.lastInference);
    }
    return times;
}"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def draw_a_one(page):
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 240, steps=3)
    page.mouse.up()


def main():
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(WEB)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready, first, inferences = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        for visit in range(5):
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.evaluate("window.ready")
            draw_a_one(page)
            page.wait_for_function("window.timings.firstPrediction")
            timings = page.evaluate("window.timings")
            ready.append(timings["modelReady"])
            first.append(timings["firstPrediction"])
            if visit == 0:
                inferences = page.evaluate(INFERENCES)
            context.close()
        browser.close()
    server.shutdown()
    print("model ready (ms since navigation start):", [round(t) for t in ready],
          "median", round(statistics.median(ready)))
    print("first prediction shown:", [round(t) for t in first], "median", round(statistics.median(first)))
    print(f"one inference over 200 (ms): median {statistics.median(inferences):.2f}, "
          f"p90 {sorted(inferences)[179]:.2f}, min {min(inferences):.2f}")


if __name__ == "__main__":
    main()
