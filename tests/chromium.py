"""A headless Chromium for tests, driven through the Chrome DevTools Protocol over a pipe.

``--remote-debugging-pipe`` makes the browser read protocol messages (JSON, each ended by a NUL byte) from its file
descriptor 3 and write replies and events to descriptor 4: no port to collide with another test worker, no
third-party client. `Chromium.open` loads a page, waits until it and everything it loads have arrived, and reports
what a person would see go wrong: uncaught JavaScript exceptions, console errors, requests that failed or were
answered with an error status, images that did not decode. It also takes a screenshot of the whole page.
"""
import base64
import fcntl
import itertools
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

# flags that work headless in a container as root without a GPU; every background service off, so the browser
# talks to nothing but the pages it is sent to
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--no-proxy-server",
         "--hide-scrollbars", "--mute-audio",
         # WebGL (Emperor draws with three.js) from the SwiftShader software renderer, as there is no GPU
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader")

# what the page reports about itself once loaded
_PAGE_STATE = """JSON.stringify({
  title: document.title,
  text: document.body ? document.body.innerText : "",
  images: Array.from(document.images, i => ({src: i.currentSrc || i.src, loaded: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll("a[href]"), a => a.href),
  scripts: Array.from(document.querySelectorAll("script[src]"), s => s.src),
  stylesheets: Array.from(document.querySelectorAll("link[rel=stylesheet][href]"), l => l.href),
  tables: Array.from(document.querySelectorAll("table"), t => t.rows.length),
})"""


def find_chromium():
    """Path of the chromium executable, or None."""
    for name in (os.environ.get("AAM_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


@dataclass
class PageReport:
    """What happened while a page loaded, and what it shows."""
    url: str
    title: str = ""
    text: str = ""
    exceptions: list = field(default_factory=list)       # uncaught JavaScript exceptions (messages)
    console_errors: list = field(default_factory=list)   # console.error() and browser-logged errors
    failed_requests: list = field(default_factory=list)  # (url, reason) of every request that did not succeed
    requested: list = field(default_factory=list)        # every URL the page requested
    images: list = field(default_factory=list)           # {"src", "loaded"} of every <img>
    links: list = field(default_factory=list)            # absolute href of every <a>
    scripts: list = field(default_factory=list)
    stylesheets: list = field(default_factory=list)
    tables: list = field(default_factory=list)           # row count of every <table>
    values: dict = field(default_factory=dict)           # the results of `open`'s `values` expressions
    screenshot: str = None                               # path of the PNG of the whole page

    def problems(self):
        """Every error a reader of the page would meet, one line each (empty when the page is clean)."""
        lines = [f"JavaScript exception: {m}" for m in self.exceptions]
        lines += [f"console error: {m}" for m in self.console_errors]
        lines += [f"request failed: {u} ({why})" for u, why in self.failed_requests]
        lines += [f"image did not load: {i['src']}" for i in self.images if not i["loaded"]]
        return lines


class Chromium:
    """One headless browser process; `open` pages in it, then `close` it (or use it as a context manager).

    Parameters
    ----------
    executable : str
        The chromium executable (see `find_chromium`).
    profile_dir : str
        A fresh, empty directory for the browser's profile (the test's own temporary directory).
    timeout : float
        Seconds to wait for any single reply or page; generous, because CI machines are slow and shared.
    """

    def __init__(self, executable, profile_dir, timeout=180.0):
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._replies, self._events = {}, []
        self._cond = threading.Condition()
        self._closed = False
        self.log_path = os.path.join(profile_dir, "chromium.log")
        # the pipe ends the browser gets, first moved above 2..4 so the dup2s below cannot overwrite each other
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        argv = [executable, *FLAGS, f"--user-data-dir={os.path.join(profile_dir, 'profile')}",
                "--remote-debugging-pipe", "about:blank"]
        try:
            # posix_spawn: no fork of this (threaded) test process; setsid so that close() can end the browser's
            # helper processes with it, by the group id of the process started here
            self.pid = os.posix_spawn(
                executable, argv, dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                              (os.POSIX_SPAWN_DUP2, child_r, 3), (os.POSIX_SPAWN_DUP2, child_w, 4)],
                setsid=True)
        finally:
            for fd in (child_r, child_w, log):
                os.close(fd)
        self._reader = threading.Thread(target=self._read, name="chromium-cdp-reader", daemon=True)
        self._reader.start()
        self.version = self.send("Browser.getVersion")["product"]

    # --- protocol ------------------------------------------------------------------------------------------------
    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.append(message)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _wait(self, ready, what, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                value = ready()
                if value:
                    return value
                if self._closed:
                    raise BrowserError(f"chromium exited while waiting for {what}; its log: {self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"no {what} within {timeout or self.timeout:.0f} s")
                self._cond.wait(min(left, 1.0))

    def send(self, method, params=None, session=None, timeout=None):
        """Send one command; its result (raises BrowserError on a protocol error)."""
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        reply = self._wait(lambda: self._replies.pop(message_id, None), f"reply to {method}", timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _session_events(self, session, start=0):
        return [e for e in self._events[start:] if e.get("sessionId") == session]

    def evaluate(self, session, expression, timeout=None):
        """Value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session, timeout)
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating {expression[:60]!r}: {_exception_text(result['exceptionDetails'])}")
        return result["result"].get("value")

    # --- pages ---------------------------------------------------------------------------------------------------
    def open(self, url, screenshot=None, ready=None, values=None, quiet_seconds=1.0, width=1280, height=900):
        """Load `url` in a new tab and report on it.

        Parameters
        ----------
        url : str
        screenshot : str, optional
            Where to write a PNG of the whole page.
        ready : str, optional
            A JavaScript expression that is true once the page has drawn itself (for pages that build their
            content after loading, e.g. Emperor); waited for before the report is made.
        values : dict, optional
            name -> JavaScript expression, evaluated in the loaded page into `PageReport.values`.
        quiet_seconds : float
            The page counts as loaded once its load event fired, `ready` holds and no request has been pending
            for this long (a wait, never an assertion: slow machines only wait longer).
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.send(f"{domain}.enable", session=session)
            self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False}, session)
            with self._cond:
                start = len(self._events)
            navigated = self.send("Page.navigate", {"url": url}, session)
            if navigated.get("errorText"):
                raise BrowserError(f"{url} did not load: {navigated['errorText']}")
            self._wait(lambda: any(e["method"] == "Page.loadEventFired"
                                   for e in self._session_events(session, start)), f"load event of {url}")
            if ready:
                deadline = time.monotonic() + self.timeout
                while not self.evaluate(session, f"Boolean({ready})"):
                    if time.monotonic() > deadline:
                        raise BrowserError(f"{url}: `{ready}` still false after {self.timeout:.0f} s")
                    time.sleep(0.25)
            self._wait_until_quiet(session, start, quiet_seconds)
            report = self._report(url, session, start)
            report.__dict__.update(json.loads(self.evaluate(session, _PAGE_STATE)))
            report.values = {key: self.evaluate(session, expression) for key, expression in (values or {}).items()}
            if screenshot:
                report.screenshot = self._screenshot(session, screenshot)
            return report
        finally:
            self.send("Target.closeTarget", {"targetId": target})

    def _pending(self, session, start):
        pending = set()
        for e in self._session_events(session, start):
            if e["method"] == "Network.requestWillBeSent":
                pending.add(e["params"]["requestId"])
            elif e["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
                pending.discard(e["params"]["requestId"])
        return pending

    def _wait_until_quiet(self, session, start, quiet_seconds):
        deadline = time.monotonic() + self.timeout
        quiet_since = None
        while True:
            with self._cond:
                busy = bool(self._pending(session, start))
                seen = len(self._events)
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet_seconds:
                return
            if now > deadline:
                raise BrowserError(f"requests still pending after {self.timeout:.0f} s")
            with self._cond:
                if len(self._events) == seen:
                    self._cond.wait(0.2)

    def _report(self, url, session, start):
        report = PageReport(url)
        with self._cond:
            events = self._session_events(session, start)
        urls = {}
        for e in events:
            method, p = e["method"], e["params"]
            if method == "Runtime.exceptionThrown":
                report.exceptions.append(_exception_text(p["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                report.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                      for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                report.console_errors.append(f"{p['entry']['text']} ({p['entry'].get('url', '')})")
            elif method == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
                report.requested.append(p["request"]["url"])
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
                report.failed_requests.append((p["response"]["url"], f"HTTP {p['response']['status']}"))
            elif method == "Network.loadingFailed":
                report.failed_requests.append((urls.get(p["requestId"], p["requestId"]), p["errorText"]))
        return report

    def _screenshot(self, session, path):
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": max(1, int(size["width"])), "height": max(1, min(int(size["height"]), 12000)),
                "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip},
                         session)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    # --- shutdown ------------------------------------------------------------------------------------------------
    def log_tail(self, chars=3000):
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-chars:]
        except OSError:
            return ""

    def close(self):
        if self.pid is None:
            return
        try:
            if not self._closed:
                self.send("Browser.close", timeout=30)
        except (BrowserError, OSError):
            pass
        exited, deadline = False, time.monotonic() + 30
        while not exited and time.monotonic() < deadline:
            exited = os.waitpid(self.pid, os.WNOHANG)[0] != 0
            if not exited:
                time.sleep(0.1)
        try:
            # helper processes left in the browser's process group (the group started here, nothing else)
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not exited:
            os.waitpid(self.pid, 0)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _exception_text(details):
    exception = details.get("exception") or {}
    text = exception.get("description") or details.get("text", "")
    where = details.get("url", "")
    return f"{text} ({where}:{details.get('lineNumber', '?')})" if where else text
