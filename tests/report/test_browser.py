"""The published pages in a real headless Chromium: they render, link, show no code and run no CRM text.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so the test
needs nothing beyond the standard library and a Chromium binary. Without one
the test is skipped with a note on how to install it.
"""
from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import NAME_PAYLOAD, ROOT, make_suite, run_cli, write_hostile_names_sample

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"]
INSTALL_HINT = (
    "no Chromium found: install it (Debian/Ubuntu: apt-get install -y chromium) "
    "or set QUARTERPANIC_CHROMIUM=/path/to/chromium"
)


def find_chromium() -> str | None:
    explicit = os.environ.get("QUARTERPANIC_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Chromium:
    """A headless Chromium and one page in it, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, profile_dir: Path, width: int = 1280, height: int = 900):
        # Pipe ends above 9, so that moving them onto 3 and 4 in the child cannot overwrite one another.
        to_browser_read, self._to_browser = map(_above_nine, os.pipe())
        self._from_browser, from_browser_write = map(_above_nine, os.pipe())

        def wire_pipes() -> None:  # runs in the child: Chromium reads fd 3 and writes fd 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [
                executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--mute-audio", f"--user-data-dir={profile_dir}",
                "--remote-debugging-pipe", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False,  # other descriptors are non-inheritable (PEP 446)
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self.dialogs: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ["Page", "Runtime", "Log"]:
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # -- protocol ----------------------------------------------------------------------------------

    def call(self, method: str, *, session: bool = False, timeout: float = 30, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._changed:
            while message_id not in self._replies:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no reply to {method}")
            reply = self._replies.pop(message_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("method") == "Page.javascriptDialogOpening":
            # A dialog blocks the page; record it and dismiss it from this thread.
            self.dialogs.append(message["params"].get("message", ""))
            reply = {"id": next(self._ids), "method": "Page.handleJavaScriptDialog",
                     "params": {"accept": True}, "sessionId": self.session}
            os.write(self._to_browser, json.dumps(reply).encode() + b"\0")
        with self._changed:
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self._events.append(message)
            self._changed.notify_all()

    # -- page --------------------------------------------------------------------------------------

    def open(self, url: str, timeout: float = 30) -> None:
        with self._changed:
            self._events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{url} did not load")

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                          awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} raised {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def console_errors(self) -> list[str]:
        """Errors the page reported since it was opened: console.error, exceptions, failed loads, CSP."""
        time.sleep(0.2)  # let late log entries arrive
        errors = []
        with self._changed:
            events = list(self._events)
        for event in events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(params["entry"].get("text", ""))
        return errors

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


# What a reader must never see, and what must hold on every page.
VISIBLE_CODE = """
[...document.querySelectorAll(
  '.jp-CodeCell .jp-InputArea, .jp-InputArea-editor, .jp-InputPrompt, .jp-OutputPrompt,'
  + ' .input, .input_area, .prompt, pre.cm-line, .highlight'
)].filter(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden').length
"""
BROKEN_IMAGES = """
[...document.images].filter(img => !img.complete || img.naturalWidth === 0).map(img => img.outerHTML.slice(0, 80))
"""
LINKS = "[...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href])"
MISSING_ANCHORS = """
[...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1))
  .filter(id => id && !document.getElementById(decodeURIComponent(id)))
"""
SCRIPT_RAN = "typeof window.__xss !== 'undefined'"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    executable = find_chromium()
    if not executable:
        pytest.skip(INSTALL_HINT)
    suite = make_suite(tmp_path_factory.mktemp("browser"))
    out = suite["root"] / "reports"
    code, _ = run_cli(
        "--notebooks", str(suite["report"]), str(suite["broken"]), str(suite["panic"]),
        "-p", "data_dir", str(suite["data"]), "--out", str(out), "--run-id", "browser",
    )
    assert code == 1  # the broken notebook: a partial run, kept in its folder but not published as latest
    return {"executable": executable, "run_dir": out / "browser"}


@pytest.fixture
def browser(published, tmp_path):
    chromium = Chromium(published["executable"], tmp_path / "profile")
    yield chromium
    chromium.close()


def test_pages_render_link_and_never_run_crm_text(published, browser, tmp_path):
    index = published["run_dir"] / "index.html"
    browser.open(index.as_uri())
    assert browser.console_errors() == []
    assert browser.evaluate("document.querySelector('h1').textContent").startswith("Northwind <script>")
    links = browser.evaluate(LINKS)
    reports = [absolute for href, absolute in links if href.endswith(".html")]
    assert [Path(r).name for r in reports] == ["01_alpha.html", "02_broken.html", "04_panic.html"]
    for href, absolute in links:
        assert Path(absolute.removeprefix("file://")).is_file(), href  # index -> notebooks, manifest, pages
    browser.screenshot(tmp_path / "index.png")

    for report in reports:
        name = Path(report).stem
        browser.open(report)
        assert browser.console_errors() == [], name
        assert browser.evaluate(VISIBLE_CODE) == 0, name
        assert browser.evaluate(BROKEN_IMAGES) == [], name
        assert browser.evaluate(MISSING_ANCHORS) == [], name
        assert browser.evaluate(SCRIPT_RAN) is False, name
        back = browser.evaluate("document.querySelector('a.qp-back').href")
        assert back == index.as_uri(), name
        browser.screenshot(tmp_path / f"{name}.png")

    alpha = published["run_dir"] / "01_alpha.html"
    browser.open(alpha.as_uri())
    assert browser.evaluate("document.images.length") >= 1  # the chart
    text = browser.evaluate("document.body.innerText")
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(1)>" in text  # shown as text
    assert "contents" in text.lower() and "Section two" in text
    broken = published["run_dir"] / "02_broken.html"
    browser.open(broken.as_uri())
    assert "This report is incomplete" in browser.evaluate("document.body.innerText")
    # Following the back link really lands on the index.
    browser.open(browser.evaluate("document.querySelector('a.qp-back').href"))
    assert browser.evaluate("document.querySelectorAll('li.qp-report').length") == 3
    assert browser.dialogs == []  # no alert() ever opened
    assert (tmp_path / "01_alpha.png").stat().st_size > 10_000


# -- real name fields: the panic index page on a sample whose owners and accounts carry markup ----------------
@pytest.fixture(scope="module")
def published_names(tmp_path_factory):
    executable = find_chromium()
    if not executable:
        pytest.skip(INSTALL_HINT)
    root = tmp_path_factory.mktemp("names")
    names = write_hostile_names_sample(root / "data")
    out = root / "reports"
    code, stderr = run_cli("--notebooks", str(ROOT / "notebooks" / "04_panic_index.ipynb"),
                           "-p", "data_dir", str(root / "data"), "--out", str(out))
    assert code == 0, stderr
    return {"executable": executable, "page": (out / "latest" / "04_panic_index.html").resolve(), "names": names}


def test_owner_and_account_names_show_as_text_and_never_run(published_names, tmp_path):
    chromium = Chromium(published_names["executable"], tmp_path / "profile")
    try:
        chromium.open(published_names["page"].as_uri())
        assert chromium.console_errors() == []
        text = chromium.evaluate("document.body.innerText")
        assert "The deals behind the panic" in text
        payload = NAME_PAYLOAD.strip()
        owners = [o for o in published_names["names"]["owners"] if f"{o} {payload}" in text]
        accounts = [a for a in published_names["names"]["accounts"] if f"{a} {payload}" in text]
        assert owners and accounts  # the names table shows them, as text
        # Not one element came from the names: no <img> outside the charts, no handler attribute, no dialog.
        assert chromium.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert chromium.evaluate("[...document.images].filter(i => !i.src.startsWith('data:')).length") == 0
        assert chromium.dialogs == []
    finally:
        chromium.close()
