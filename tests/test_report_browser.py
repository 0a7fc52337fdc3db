"""The audit report in a real browser: headless Chromium renders it with no console error and
makes no network request, the data map draws and shows a tooltip on hover; screenshots saved.

Chromium is driven over the DevTools protocol through --remote-debugging-pipe (a pair of file
descriptors, JSON messages ending in NUL), so no Python package is needed beyond the
standard library. Needs the Debian package `chromium`; skipped with a reason when absent.
Set SOICURATE_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.recording.synthetic import generate_run

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)"
)


class Browser:
    """A minimal DevTools-protocol client for headless Chromium over --remote-debugging-pipe."""

    def __init__(self, width: int = 1200, height: int = 900, timeout: float = 30.0):
        self.timeout = timeout
        self.profile_dir = tempfile.mkdtemp(prefix="soicurate-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # in the child: fd 3 reads commands, fd 4 writes replies (moved up first: no clash)
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        cmd = [CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--metrics-recording-only", "--mute-audio", f"--user-data-dir={self.profile_dir}",
               f"--window-size={width},{height}", "about:blank"]  # fmt: skip
        # close_fds=False: the dup2'ed fds 3 and 4 must survive; Python's own fds are not inheritable
        self.proc = subprocess.Popen(cmd, preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)  # fmt: skip

    # -- protocol ------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, *, session: bool = False):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = next((e for e in self.events if e["method"] == method), None)
        while seen is None:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    seen = event
        return seen

    def drain(self, seconds: float = 0.3) -> None:
        """Collect the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                event = self._read_message(deadline)
                if "method" in event:
                    self.events.append(event)
        except TimeoutError:
            pass

    # -- page helpers ----------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        self.drain()

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                        session=True)  # fmt: skip
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def mouse_move(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=True)

    def screenshot(self, path: Path, clip: dict | None = None, *, beyond_viewport: bool = False) -> Path:
        """A PNG of the viewport or of `clip` (page coordinates); beyond_viewport for a clip
        larger than the viewport (Chromium then resizes the page for the capture)."""
        params = {"format": "png", "captureBeyondViewport": beyond_viewport}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", params, session=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')} "
                           f"{p.get('exceptionDetails', {}).get('exception', {}).get('description', '')}")  # fmt: skip
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile_dir, ignore_errors=True)


def external_requests(browser: Browser, page_url: str) -> list[str]:
    """Requests other than the page itself and inline data: URIs."""
    return [u for u in browser.requests() if u != page_url and not u.startswith("data:")]


def shots_dir(tmp_path: Path) -> Path:
    keep = os.environ.get("SOICURATE_SCREENSHOT_DIR")
    out = Path(keep) if keep else tmp_path / "shots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """An audit with everything on: two seeds, a dataset with text, a comparison profile."""
    import polars as pl

    root = tmp_path_factory.mktemp("browser")
    runner = CliRunner()
    for seed in (0, 1):
        generate_run(root / f"s{seed}", 3000, 6, seed=seed)
    assert (
        runner.invoke(
            main, ["profile", str(root / "s0"), str(root / "s1"), "-o", str(root / "p.parquet"), "-q"]
        ).exit_code
        == 0
    )
    generate_run(root / "other", 3000, 6, seed=7, noise=0.6)
    assert runner.invoke(main, ["profile", str(root / "other"), "-o", str(root / "q.parquet"), "-q"]).exit_code == 0
    words = ["the plot was", 'a <b>bold</b> & "quoted" cast', "it was very dull", "superb story </script>"]
    pl.DataFrame({"example_id": range(3000), "text": [f"{words[i % 4]} #{i}" for i in range(3000)]}).write_csv(
        root / "train.csv"
    )
    out = root / "audit"
    result = runner.invoke(main, ["audit", str(root / "p.parquet"), "-o", str(out), "--dataset", str(root / "train.csv"),
                                  "--compare", str(root / "q.parquet"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def test_report_renders_offline_without_errors(report, browser, tmp_path):
    url = report.resolve().as_uri()
    browser.events.clear()
    browser.open(url)
    assert browser.console_errors() == []
    assert external_requests(browser, url) == []
    assert browser.js("document.title").startswith("Audit")
    drawn = browser.js("document.querySelector('.soimap').getAttribute('data-drawn')")
    assert int(drawn) >= 3000  # every example (3000 < the cap) plus nothing missing
    sections = browser.js("Array.from(document.querySelectorAll('h2')).map(h => h.id)")
    assert sections == ["shares", "map", "labels", "forgotten", "seeds", "transitions", "about"]
    # the transition heatmap is an inline PNG that decoded
    assert browser.js("Array.from(document.images).every(i => i.complete && i.naturalWidth > 100)")
    out = shots_dir(tmp_path)
    height = browser.js("document.documentElement.scrollHeight")
    browser.screenshot(out / "report-top.png", {"x": 0, "y": 0, "width": 1200, "height": 900})
    path = browser.screenshot(
        out / "report-full.png", {"x": 0, "y": 0, "width": 1200, "height": min(height, 12000)}, beyond_viewport=True
    )
    assert path.stat().st_size > 10_000
    print(f"screenshots: {out}")


def test_map_hover_shows_the_example(report, browser, tmp_path):
    url = report.resolve().as_uri()
    browser.events.clear()
    browser.open(url)
    # a flagged point (a likely label issue) carries text, labels and the predicted label
    i = browser.js("(() => { const m = window.soiMaps[0]; return m.d.f.indexOf(1); })()")
    assert i >= 0
    browser.js("document.querySelector('.soimap').scrollIntoView({block: 'start'})")
    pos = browser.js(
        f"(() => {{ const m = window.soiMaps[0], p = m.pointPixel({i}), b = m.overlay.getBoundingClientRect();"
        " return {x: b.left + p.x, y: b.top + p.y}; })()"
    )
    browser.mouse_move(pos["x"], pos["y"])
    browser.drain(0.4)
    shown = browser.js("document.querySelector('.soimap').getAttribute('data-shown')")
    expected = browser.js(f"window.soiMaps[0].d.id[{i}]")
    tip = browser.js("document.querySelector('.soimap-tip').innerText")
    # the nearest point under the cursor may be another one drawn at the same place
    assert shown and f"example {shown}" in tip
    if shown == expected:
        assert "likely label issue" in tip and "#" in tip  # the text travelled to the tooltip
    assert "category:" in tip and "label:" in tip
    # texts with markup are shown as text, never parsed as HTML
    assert browser.js("document.querySelectorAll('.soimap-tip b').length") == 1
    rect = browser.js(
        "(() => { const r = document.querySelector('.soimap').getBoundingClientRect();"
        " return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; })()"
    )
    out = shots_dir(tmp_path)
    browser.screenshot(
        out / "report-map-hover.png", {"x": 0, "y": rect["y"] - 10, "width": 1200, "height": rect["h"] + 20}
    )
    # a click pins the tooltip: it stays when the mouse leaves
    pos = browser.js(
        f"(() => {{ const m = window.soiMaps[0], p = m.pointPixel({i}), b = m.overlay.getBoundingClientRect();"
        " return {x: b.left + p.x, y: b.top + p.y}; })()"
    )
    browser.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": pos["x"], "y": pos["y"], "button": "left",
                                              "clickCount": 1}, session=True)  # fmt: skip
    browser.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": pos["x"], "y": pos["y"], "button": "left",
                                              "clickCount": 1}, session=True)  # fmt: skip
    browser.drain(0.2)
    pinned = browser.js("document.querySelector('.soimap').getAttribute('data-shown')")
    assert pinned
    browser.mouse_move(5, 5)
    browser.drain(0.2)
    assert browser.js("document.querySelector('.soimap').getAttribute('data-shown')") == pinned
    assert browser.console_errors() == []
    assert external_requests(browser, url) == []


def test_the_check_catches_a_network_request(browser, tmp_path):
    """The detector itself: a page that loads an image from a (closed) loopback port is caught."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    url = page.resolve().as_uri()
    browser.events.clear()
    browser.open(url)
    browser.drain(0.5)
    assert any(u.startswith("http://127.0.0.1:9/") for u in external_requests(browser, url))


def test_standalone_map_page(report, browser, tmp_path):
    """write_datamap_html: the map alone, as its own offline page."""
    from soicurate.profiling.pipeline import read_profile
    from soicurate.reporting.datamap import profile_metadata
    from soicurate.reporting.html import write_datamap_html

    profile = report.parent.parent / "p.parquet"
    page = write_datamap_html(read_profile(profile), tmp_path / "map.html", max_points=1000,
                              thresholds=profile_metadata(profile)["region_thresholds"])  # fmt: skip
    url = page.resolve().as_uri()
    browser.events.clear()
    browser.open(url)
    assert browser.console_errors() == [] and external_requests(browser, url) == []
    assert browser.js("document.querySelector('.soimap').getAttribute('data-drawn')") == "1000"
    assert "1,000 of 3,000 examples shown" in browser.js("document.querySelector('.soimap-caption').innerText")
    # hiding a category redraws without it
    browser.js("document.querySelector('.soimap-key').click()")
    assert browser.js("window.soiMaps[0].hidden[0]") is True
    assert browser.console_errors() == []
