"""Headless Chromium for the browser tests (Debian's `chromium` package, driven by Playwright for
Python; Playwright's own browser downloads are never used). The tests skip where no browser is
installed, and fail under CI=true. Shared helpers: axe-core (vendored) and the layout check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

CHROMIUM = os.environ.get("VEIL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# Set to a directory (docs/screenshots) to keep the README's screenshots from a test run.
SHOTS = os.environ.get("VEIL_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: Playwright's sync API keeps its event loop
    marked running while it is open, which would break the asyncio tests that run after these."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "playwright (pip install -e '.[test]')")
    require(Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None, f"chromium at {CHROMIUM}")
    assert sync_playwright is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page (WCAG 2.x A/AA and best practices), worst first."""
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")  # DevTools evaluation: no CSP applies
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})")
    order = {"critical": 0, "serious": 1, "moderate": 2, "minor": 3}
    return sorted(result["violations"], key=lambda v: order.get(v.get("impact") or "minor", 4))


def serious(violations: list[dict[str, Any]]) -> list[str]:
    return [f"{v['impact']}: {v['id']}: {v['help']} ({len(v['nodes'])}x: {v['nodes'][0]['target']})"
            for v in violations if v.get("impact") in ("serious", "critical")]


# A word is cut when two of its letters or digits sit on different lines. Every text node's words are
# measured with Range.getClientRects (line boxes as laid out, whatever the font), character by
# character where a word spans lines; a break after '-', '/', '.', '_' or '@' is a legal wrap point.
BROKEN_WORDS = r"""
(root) => {
  const out = [];
  const letter = /[\p{L}\p{N}]/u;
  const walker = document.createTreeWalker(root || document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent;
    const words = /\S+/g;
    let m;
    while ((m = words.exec(text))) {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const rects = Array.from(range.getClientRects()).filter((r) => r.width > 0 && r.height > 0);
      if (rects.length < 2) continue;
      let prev = null;
      for (let i = 0; i < m[0].length; i++) {
        const c = document.createRange();
        c.setStart(n, m.index + i);
        c.setEnd(n, m.index + i + 1);
        const r = c.getClientRects()[0];
        if (!r) continue;
        if (prev !== null && r.top > prev.top + prev.height / 2
            && letter.test(m[0][i - 1]) && letter.test(m[0][i])) {
          out.push({word: m[0], at: i, tag: n.parentElement.tagName});
        }
        prev = r;
      }
    }
  }
  return out;
}
"""

PAGE_OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def shot(page: Any, name: str, **kw: Any) -> Path | None:
    """Keep a screenshot for the README when VEIL_SCREENSHOT_DIR is set."""
    if not SHOTS:
        return None
    path = Path(SHOTS) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), **kw)
    return path
