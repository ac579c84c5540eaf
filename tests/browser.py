"""Headless Chromium over the DevTools protocol, for tests of the static HTML pages: open a file,
wait for its load event, evaluate JavaScript, collect console errors."""

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's chromium when it can)")


@contextlib.contextmanager
def page(url: str, profile: str):
    """Yields (evaluate(expression) -> value, errors list) with ``url`` loaded."""
    from websockets.sync.client import connect

    proc = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            if m := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                port = int(m[1])
        assert port, "Chromium did not start its DevTools endpoint"
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        errors, loaded = [], False
        with connect(ws_url, max_size=None, open_timeout=20) as ws:
            seq = iter(range(1, 1_000_000))

            def on_event(msg):
                nonlocal loaded
                m = msg.get("method")
                if m == "Runtime.exceptionThrown":
                    errors.append(msg["params"]["exceptionDetails"].get("text"))
                elif m == "Runtime.consoleAPICalled" and msg["params"]["type"] in ("error", "assert"):
                    errors.append(str(msg["params"]["args"]))
                elif m == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                    errors.append(msg["params"]["entry"]["text"])
                elif m == "Page.loadEventFired":
                    loaded = True

            def call(method, **params):
                i = next(seq)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=60))
                    on_event(msg)
                    if msg.get("id") == i:
                        return msg.get("result", {})

            for domain in ("Page", "Runtime", "Log"):
                call(f"{domain}.enable")
            call("Page.navigate", url=url)
            while not loaded and time.time() < deadline:
                on_event(json.loads(ws.recv(timeout=60)))
            assert loaded

            def evaluate(expression: str):
                r = call("Runtime.evaluate", returnByValue=True, expression=expression)
                if "exceptionDetails" in r:
                    raise AssertionError(r["exceptionDetails"])
                return r["result"].get("value")

            yield evaluate, errors
    finally:
        proc.kill()
        proc.wait()
