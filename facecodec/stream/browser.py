"""Headless Chromium opening the viewer page: how tests and benchmarks check what a thin
browser client sees, without a screen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# No sandbox (containers run as root), no GPU, and none of the background traffic a first run
# would start: the page must talk only to the viewer.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def headless_chromium(url: str, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Chromium showing `url` with a throw-away profile; yields the process and the profile
    folder (where `--remote-debugging-port=0` leaves DevToolsActivePort). Stopped on exit."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed")
    # Chromium's helper processes (renderer, GPU, crash handler) can outlive the main one and
    # keep writing to the profile: run it in its own process group and stop the whole group,
    # and never let a straggler's file turn clean-up into an error.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [chromium, *_FLAGS, f"--user-data-dir={profile}", *flags, url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield browser, Path(profile)
        finally:
            _stop_group(browser)


def _stop_group(browser: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Chromium's process group, SIGKILL to what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(browser.pid, signal.SIGTERM)
    try:
        browser.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(browser.pid, signal.SIGKILL)
    browser.wait()


async def devtools(profile: Path, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
    """The result of one DevTools protocol call on the page of the Chromium whose profile is
    `profile` (started by headless_chromium with --remote-debugging-port=0)."""
    import aiohttp

    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not (port_file.is_file() and port_file.read_text().strip()):
        if time.monotonic() > deadline:
            raise TimeoutError("chromium wrote no DevToolsActivePort")
        await asyncio.sleep(0.1)
    port = port_file.read_text().split()[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        target = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"]) as ws:
            await ws.send_json({"id": 1, "method": method, "params": params or {}})
            while (reply := await ws.receive_json(timeout=timeout)).get("id") != 1:
                pass
    return reply["result"]
