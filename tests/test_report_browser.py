"""Headless-Chromium check of the offline report: every image renders.

The page's inline script writes the number of images with ``naturalWidth > 0`` into
``#img-check``; Chromium's ``--dump-dom`` (after a virtual-time budget) returns the DOM
with those attributes. Skipped only when no chromium binary is installed. Budget: ~20 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from loradyn.reproduce.runner import reproduce

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def _dump_dom(url: str, profile) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_every_image_renders(tmp_path):
    res = reproduce(tmp_path / "rep", scale="test", only="fig6,fig8", progress=False)
    page = res.report.resolve()
    dom = _dump_dom(page.as_uri(), tmp_path / "profile")
    m = re.search(r'id="img-check"[^>]*', dom)
    assert m, dom[:2000]
    total = int(re.search(r'data-total="(-?\d+)"', m.group(0)).group(1))
    loaded = int(re.search(r'data-loaded="(-?\d+)"', m.group(0)).group(1))
    assert total == 2 and loaded == total
    assert "F-energy-damped" in dom  # the claims table is in the page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_missing_image_is_detected(tmp_path):
    """The check can fail: delete one PNG and the count drops."""
    res = reproduce(tmp_path / "rep", scale="test", only="fig6,fig8", progress=False)
    (res.out / "figures" / "fig8.png").unlink()
    dom = _dump_dom(res.report.resolve().as_uri(), tmp_path / "profile")
    m = re.search(r'id="img-check"[^>]*', dom)
    assert 'data-loaded="1"' in m.group(0) and 'data-total="2"' in m.group(0)
