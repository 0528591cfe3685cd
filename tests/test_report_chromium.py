"""report.html in real headless Chromium (DevTools protocol): loads offline, no console errors, images decode."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from wsi_pipeline.config import ReportConfig
from wsi_pipeline.export import write_report

from report_helpers import CELLS, TAX, make_detections

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make chromium` installs it)"),
]

IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, cls: i.className, complete: i.complete, "
    "w: i.naturalWidth, h: i.naturalHeight})))"
)


class DevTools:
    """A minimal DevTools-protocol client for one page of a headless Chromium started by the test."""

    def __init__(self, profile: Path) -> None:
        import websocket  # websocket-client, a test dependency

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("headless Chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture()
def browser(tmp_path):
    tools = DevTools(tmp_path / "profile")
    yield tools
    tools.close()


def test_report_html_loads_offline_without_errors_and_images_decode(tmp_path, browser, field_info):
    det = make_detections(tmp_path / "detections.parquet", CELLS, field_info)
    html = write_report(det, tmp_path / "out", ReportConfig(), TAX).html

    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=html.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    images = json.loads(browser.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)["result"]["value"])
    title = browser.call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
    category = browser.call("Runtime.evaluate", expression="document.querySelector('#category .v').textContent",
                            returnByValue=True)["result"]["value"]
    events = browser.events

    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or e["method"] == "Network.loadingFailed"]
    assert errors == []
    requested = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested  # nothing online
    assert title.startswith("Cytology screening report") and category == "HSIL"
    crops = [i for i in images if i["cls"] == "crop"]
    assert len(crops) == 3  # 2 LSIL + 1 HSIL above threshold
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
