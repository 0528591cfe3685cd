"""review.html in real headless Chromium (issue 25): keys change decisions, the saved review.geojson has the
schema, reopening resumes (from the browser's copy and from the file next to the page), another slide's file is
refused, a slide with no flagged cell says so, and the page fits a 1366 px screen."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from report_helpers import CELLS, TAX, make_detections
from test_report_chromium import CHROMIUM, DevTools

from wsi_pipeline.config import ReportConfig
from wsi_pipeline.export import write_report
from wsi_pipeline.store import review as decisions

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make chromium` installs it)"),
]

SPECIAL = {"Enter": ("Enter", 13), "Escape": ("Escape", 27), "ArrowRight": ("ArrowRight", 39),
           "ArrowLeft": ("ArrowLeft", 37)}


def press(tools: DevTools, key: str) -> None:
    if key in SPECIAL:
        code, vk = SPECIAL[key]
        params = {"key": key, "code": code, "windowsVirtualKeyCode": vk}
    else:
        params = {"key": key, "text": key}
    tools.call("Input.dispatchKeyEvent", type="keyDown", **params)
    tools.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in params.items() if k != "text"})


def js(tools: DevTools, expression: str):
    result = tools.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


def open_page(tools: DevTools, page: Path) -> None:
    for domain in ("Page", "Runtime", "Log", "DOM", "Network"):
        tools.call(f"{domain}.enable")
    tools.events.clear()
    tools.call("Page.navigate", url=page.resolve().as_uri())
    tools.wait_for("Page.loadEventFired")


def page_errors(tools: DevTools) -> list[dict]:
    return [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
            or e.get("method") == "Network.loadingFailed"
            or (e.get("method") == "Network.requestWillBeSent"  # offline: nothing but the file and inline data
                and not e["params"]["request"]["url"].startswith(("file:", "data:", "blob:")))]


def states(tools: DevTools) -> list[tuple[str, str, str | None, str | None]]:
    doc = js(tools, "JSON.stringify(wsiReview.document())")
    return [(f["id"], f["properties"]["review"], f["properties"]["classification"]["name"], f["properties"]["rejected_as"])
            for f in json.loads(doc)["features"]]


@pytest.fixture()
def run_folder(tmp_path, field_info):
    det = make_detections(tmp_path / "detections.parquet", CELLS, field_info)
    out = tmp_path / "out"
    write_report(det, out, ReportConfig(), TAX)
    return det, out


def test_keys_decide_the_saved_file_has_the_schema_and_reopening_resumes(tmp_path, run_folder, field_info):
    det, out = run_folder
    page = out / "review.html"
    pending = json.loads((out / "review.geojson").read_text())
    assert [f["id"] for f in pending["features"]] == ["cell-6", "cell-4", "cell-5", "cell-7"]  # HSIL, LSIL x2, uncounted HSIL
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    tools = DevTools(tmp_path / "profile")
    try:
        tools.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        open_page(tools, page)
        assert [s[1] for s in states(tools)] == ["pending"] * 4
        assert js(tools, "document.getElementById('progress').textContent").startswith("0 of 4 reviewed")
        js(tools, "var r = document.getElementById('reviewer'); r.value = 'Dr Tester'; r.dispatchEvent(new Event('change')); 1")
        press(tools, "Enter")  # cell 1 (HSIL): accept the model's call
        press(tools, "3")  # cell 2 (LSIL): key 3 is ASC-US, the third taxonomy class: corrected
        press(tools, "r")  # cell 3 (LSIL): reject ...
        assert js(tools, "document.getElementById('reasons').classList.contains('open')")
        press(tools, "2")  # ... as the second reason, debris
        assert states(tools) == [("cell-6", "confirmed", "HSIL", None), ("cell-4", "corrected", "ASC-US", None),
                                 ("cell-5", "rejected", "Rejected", "debris"), ("cell-7", "pending", "HSIL", None)]
        press(tools, "ArrowLeft")  # back to cell 3, undo, decide again: reject as neutrophils
        press(tools, "u")
        assert states(tools)[2][1] == "pending"
        press(tools, "r")
        press(tools, "1")
        assert states(tools)[2][1:] == ("rejected", "Rejected", "neutrophils")
        progress = js(tools, "document.getElementById('progress').textContent")
        assert progress.startswith("3 of 4 reviewed") and "1 confirmed" in progress and "1 corrected" in progress

        press(tools, "s")  # save: a download of review.geojson
        saved = downloads / "review.geojson"
        deadline = time.monotonic() + 20
        while not saved.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        doc = json.loads(saved.read_text())
        decisions.validate(doc, saved)
        assert doc["type"] == "FeatureCollection" and doc["schema"] == "wsi_pipeline.review" and doc["version"] == 1
        assert doc["slide"] == {"name": field_info["name"], "fingerprint": field_info["fingerprint"]}
        by_id = {f["id"]: f for f in doc["features"]}
        hsil = by_id["cell-6"]
        assert hsil["geometry"]["coordinates"][0][0] == [980.0, 492.0]  # level-0 box of the detection
        assert hsil["properties"]["classification"]["name"] == "HSIL" and hsil["properties"]["review"] == "confirmed"
        assert hsil["properties"]["model_class"] == "HSIL" and hsil["properties"]["model_score"] == pytest.approx(0.95)
        assert hsil["properties"]["reviewer"] == "Dr Tester" and hsil["properties"]["timestamp"].endswith("Z")
        assert by_id["cell-4"]["properties"]["classification"]["name"] == "ASC-US"
        assert by_id["cell-4"]["properties"]["model_class"] == "LSIL"  # the model's call is kept beside it
        assert by_id["cell-5"]["properties"]["rejected_as"] == "neutrophils"
        assert by_id["cell-7"]["properties"]["review"] == "pending" and by_id["cell-7"]["properties"]["timestamp"] is None

        open_page(tools, page)  # reopened in the same browser: resumes from the browser's copy
        assert [s[1] for s in states(tools)] == ["confirmed", "corrected", "rejected", "pending"]
        assert js(tools, "wsiReview.current()") == 3, "it opens at the first pending cell"
        assert page_errors(tools) == []
    finally:
        tools.close()

    # the saved file next to the page; the report rerun keeps its decisions and embeds them: a fresh browser resumes
    shutil.copy(saved, out / "review.geojson")
    write_report(det, out, ReportConfig(), TAX)
    assert decisions.counts(json.loads((out / "review.geojson").read_text()))["confirmed"] == 1
    fresh = DevTools(tmp_path / "profile2")
    try:
        open_page(fresh, page)
        assert [s[1] for s in states(fresh)] == ["confirmed", "corrected", "rejected", "pending"]
        # another slide's decisions are refused in one line and change nothing
        other = json.loads(saved.read_text())
        other["slide"] = {"name": "other", "fingerprint": "0" * 64}
        for f in other["features"]:
            f["properties"].update(review="rejected", rejected_as="debris")
        (tmp_path / "other.geojson").write_text(json.dumps(other))
        node = fresh.call("DOM.querySelector", nodeId=fresh.call("DOM.getDocument")["root"]["nodeId"], selector="#file")
        fresh.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(tmp_path / "other.geojson")])
        deadline = time.monotonic() + 10
        while "not loaded" not in (js(fresh, "document.getElementById('message').textContent") or ""):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        msg = js(fresh, "document.getElementById('message').textContent")
        assert "other.geojson" in msg and "other" in msg and "\n" not in msg
        assert [s[1] for s in states(fresh)] == ["confirmed", "corrected", "rejected", "pending"]
        assert page_errors(fresh) == []
    finally:
        fresh.close()


def test_the_page_fits_a_1366_px_screen(tmp_path, run_folder):
    _, out = run_folder
    tools = DevTools(tmp_path / "profile")
    try:
        tools.call("Emulation.setDeviceMetricsOverride", width=1366, height=768, deviceScaleFactor=1, mobile=False)
        open_page(tools, out / "review.html")
        layout = json.loads(js(tools, """JSON.stringify({
            scroll: document.documentElement.scrollWidth,
            crop: document.getElementById('crop').getBoundingClientRect().toJSON(),
            accept: document.getElementById('accept').getBoundingClientRect().toJSON(),
            classes: document.getElementById('classes').getBoundingClientRect().toJSON(),
            natural: document.getElementById('crop').naturalWidth})"""))
        assert layout["scroll"] <= 1366, "no sideways scrolling"
        assert layout["natural"] > 0 and layout["crop"]["width"] >= 250  # the cell is shown large
        for part in ("crop", "accept", "classes"):  # the cell and the decision keys in the first screen
            assert layout[part]["bottom"] <= 768 and layout[part]["right"] <= 1366, (part, layout[part])
        assert page_errors(tools) == []
    finally:
        tools.close()


def test_a_slide_with_no_flagged_cell_says_so(tmp_path, field_info):
    det = make_detections(tmp_path / "detections.parquet", [("NILM", 0.9, 300, 300, 50), ("INFL", 0.8, 600, 400, 24)],
                          field_info)
    out = tmp_path / "out"
    write_report(det, out, ReportConfig(), TAX)
    assert json.loads((out / "review.geojson").read_text())["features"] == []
    tools = DevTools(tmp_path / "profile")
    try:
        open_page(tools, out / "review.html")
        text = js(tools, "document.getElementById('empty').textContent")
        assert text.startswith("No flagged cells on this slide")
        assert js(tools, "document.getElementById('grid')") is None
        assert page_errors(tools) == []
    finally:
        tools.close()
