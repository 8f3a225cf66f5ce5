"""`veil playground` in headless Chromium: a real server (the CLI, on 127.0.0.1), the page typed into
like a person would; the output follows every edit, a broken policy gets an error marker at the right
line, and a saved case passes `veil test`. The page loads nothing from the network."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import spawn, stop

from .conftest import BROKEN_WORDS, run_axe, serious, shot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("packs", "*.md"))
    log = tmp_path / "playground.log"
    proc = spawn([sys.executable, "-m", "veil", "playground", str(policies), "--port", "0"], log)
    deadline = time.monotonic() + 20
    url = None
    while url is None and time.monotonic() < deadline:
        m = re.search(r"http://127\.0\.0\.1:\d+/", log.read_text() if log.exists() else "")
        url = m.group(0) if m else None
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    assert url, "the playground did not start"
    yield url, policies
    stop(proc)


def _page(browser: Any, url: str, outside: list[str]) -> Any:
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = ctx.new_page()
    # record any request that is not to the playground itself: there must be none
    page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:") else outside.append(r.url))
    page.goto(url)
    page.wait_for_selector("body[data-evaluated]")
    return page


def _settle(page: Any, before: str | None = None) -> None:
    """Wait until the page has shown the answer to the latest edit."""
    page.wait_for_function(
        "(b) => document.body.dataset.evaluated && !document.body.dataset.pending"
        " && document.body.dataset.evaluated !== b", arg=before)


def _edit(page: Any, find: str, replace: str) -> None:
    """Select `find` in the editor and type `replace` over it, key by key."""
    before = page.evaluate("document.body.dataset.evaluated")
    page.evaluate("""(find) => {
        const ed = document.getElementById('editor');
        const i = ed.value.indexOf(find);
        if (i < 0) throw new Error('not in the editor: ' + find);
        ed.focus();
        ed.setSelectionRange(i, i + find.length);
    }""", find)
    page.keyboard.type(replace, delay=5)
    _settle(page, before)


def _fate(page: Any, path: str) -> str:
    return str(page.locator(f'#fields tr[data-path="{path}"]').get_attribute("data-fate"))


def test_edits_errors_and_a_saved_case(browser: Any, playground: tuple[str, Path]) -> None:
    url, policies = playground
    outside: list[str] = []
    page = _page(browser, url, outside)
    assert page.inner_text("#decision") == "redact"
    assert page.get_attribute("#tabs [aria-selected=true]", "title") == str(policies / "routes.veil")
    assert _fate(page, "email") == "transformed"
    shot(page, "playground.png")

    # 1. typing into the policy changes the output
    _edit(page, "hash email", "keep email")
    assert _fate(page, "email") == "kept"
    assert '"email": "someone@example.com"' in page.inner_text("#response")
    assert "+  \"email\"" not in page.inner_text("#diff")  # no longer changed on the way out

    # 2. a broken policy: an error marker at the right line, the message with file:line:col
    lines = page.evaluate("document.getElementById('editor').value").splitlines()
    line_no = next(i for i, ln in enumerate(lines, 1) if "keep email" in ln)
    _edit(page, "keep email", "keep email, @nosuch")
    marker = page.locator(f'#gutter .marker.error[data-line="{line_no}"]')
    assert marker.count() == 1
    assert "unknown_category" in str(marker.get_attribute("title"))
    assert page.inner_text("#decision") == "policy has errors"
    col = lines[line_no - 1].index("keep email") + len("keep email, ") + 1  # at the @
    assert f"routes.veil:{line_no}:{col}: error[unknown_category]" in page.inner_text("#diagnostics")
    assert page.locator("#gutter .marker.error").count() == 1
    shot(page, "playground-error.png")
    _edit(page, "keep email, @nosuch", "keep email")
    assert page.locator("#gutter .marker.error").count() == 0 and page.inner_text("#decision") == "redact"

    # 3. the example: a GPC signal for the advertising purpose blocks; withdrawn consent blocks
    before = page.evaluate("document.body.dataset.evaluated")
    page.select_option("#caller", "ad_partner")
    page.fill("#purpose", "advertising.targeted")
    page.check("#gpc")
    _settle(page, before)
    assert page.inner_text("#decision") == "block" and page.inner_text("#reason") == "gpc_opt_out (403)"
    before = page.evaluate("document.body.dataset.evaluated")
    page.uncheck("#gpc")
    page.select_option("#consent-advertising", "withdrawn")
    _settle(page, before)
    assert page.inner_text("#reason") == "consent_withdrawn (403)"

    # 4. save the example as a test case, save the policy: `veil test` passes it
    page.fill("#case-name", "ads blocked after a withdrawal")
    page.click("#save-case")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Saved')")
    assert "not saved yet" in page.inner_text("#status")  # the policy edit is only in the page so far
    page.click("#save-files")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Wrote')")
    case_file = policies / "tests" / "playground.yaml"
    assert "ads blocked after a withdrawal" in case_file.read_text(encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "veil", "test", str(case_file)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
    assert outside == []


def test_playground_is_accessible_and_keeps_words_whole(browser: Any, playground: tuple[str, Path]) -> None:
    url, _ = playground
    page = _page(browser, url, [])
    found = run_axe(page)
    assert serious(found) == [], "\n".join(serious(found))
    broken = [b for b in page.evaluate(BROKEN_WORDS) if b["tag"] != "TEXTAREA"]
    assert broken == []
