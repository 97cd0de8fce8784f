"""Headless Chromium opening the viewer page: how tests and benchmarks check what a thin
browser client sees, without a screen."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [chromium, *_FLAGS, f"--user-data-dir={profile}", *flags, url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield browser, Path(profile)
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
