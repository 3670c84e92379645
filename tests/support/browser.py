"""Headless Chromium for page tests: the DOM it builds, its screenshots, and colours counted in them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")  # fmt: skip
"""Chromium without a sandbox (containers), a GPU or any network of its own."""


def chromium() -> str:
    """The Chromium executable; the test fails with an install hint when it is missing (never a skip)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is missing: `apt-get install -y chromium` (deploy/scripts/test.sh does it)")


def _run(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def dump_dom(url: str, profile: Path) -> str:
    """The DOM Chromium built from the page (after parsing: escaped text stays text)."""
    proc = _run(profile, "--dump-dom", url)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-800:]
    return proc.stdout


def screenshot(url: str, png: Path, profile: Path, size: str = "1280,2000") -> Image.Image:
    """Chromium's screenshot of the page at ``url`` (a ``file://`` URI or http), as RGB."""
    proc = _run(profile, f"--screenshot={png}", f"--window-size={size}", url)
    assert png.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-800:]}"
    return Image.open(png).convert("RGB")


def pixels_near(img: Image.Image, hex_colour: str, tol: int = 12) -> int:
    """How many pixels of ``img`` are within ``tol`` of ``hex_colour`` on every channel."""
    target = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        count
        for count, rgb in img.getcolors(maxcolors=1 << 20) or []
        if all(abs(a - b) <= tol for a, b in zip(rgb, target, strict=True))
    )
