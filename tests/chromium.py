"""Headless Chromium for tests, driven over the Chrome DevTools Protocol with aiohttp's
websocket client (no new dependency).

Debian's `chromium` (scripts/dev.py SYSTEM_PACKAGES installs it) is started with
`--remote-debugging-port=0`; it writes the port it chose and the browser's websocket
path to `DevToolsActivePort` in its profile directory. A page is a target attached
in flat mode (`Target.attachToTarget` with `flatten`): its commands and events carry
its `sessionId` on the one browser websocket.

The browser is kept on 127.0.0.1: background networking, component updates and
reporting are off, and the host resolver maps every name but 127.0.0.1 to nothing.
It is stopped by its pid.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

START_TIMEOUT_S = 60.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed: `python3 scripts/dev.py test ...` installs it "
                         "(Debian package chromium, scripts/dev.py SYSTEM_PACKAGES)")


@dataclass
class Page:
    browser: Chromium
    session_id: str
    events: list[dict] = field(default_factory=list)  # every event of this page, in order

    async def send(self, method: str, params: dict | None = None) -> dict:
        return await self.browser.send(method, params, session_id=self.session_id)

    async def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0) -> object:
        """Poll until the expression is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not true within {timeout_s} s: {expression} (last: {value!r})")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        result = await self.send("Page.navigate", {"url": url})
        assert "errorText" not in result, result

    async def screenshot(self, width: int = 1200) -> bytes:
        """A PNG of the whole page at `width` CSS pixels."""
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        metrics = await self.send("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"]) + 1
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(shot["data"])


class Chromium:
    def __init__(self, profile: Path):
        self.profile = profile
        self.log_path = profile.parent / f"{profile.name}.log"
        self.proc: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._pages: dict[str, Page] = {}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> None:
        self.profile.mkdir(parents=True, exist_ok=True)
        args = [
            chromium_binary(), "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-domain-reliability",
            "--disable-client-side-phishing-detection", "--disable-default-apps", "--disable-extensions",
            "--disable-sync", "--no-pings", "--disable-breakpad", "--metrics-recording-only",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        port_file = self.profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}:\n{self.output()}"
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[0].isdigit() and lines[1].startswith("/devtools/"):
                break
            assert loop.time() < deadline, f"chromium did not open its DevTools port:\n{self.output()}"
            await asyncio.sleep(0.1)
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif "sessionId" in data and data["sessionId"] in self._pages:
                self._pages[data["sessionId"]].events.append(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(AssertionError(f"the DevTools connection closed:\n{self.output()}"))

    async def send(self, method: str, params: dict | None = None, *, session_id: str | None = None) -> dict:
        assert self._ws is not None, "start() first"
        message_id = next(self._ids)
        message: dict = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        await self._ws.send_json(message)
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the browser process, by its pid: it ends its own helpers
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
