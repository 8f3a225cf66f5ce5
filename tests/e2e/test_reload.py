"""Hot reload of the running proxy: file edits, bad files, ConfigMap swaps, SIGHUP, POST /reload,
and reloads under concurrent load with no failed request."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import KEYS, POLICIES, Upstream, Veil, start_veil

CUSTOMER = "/customers/c-000005"

MASK_4 = "mask phone last 4"
MASK_2 = "mask phone last 2"


def ship(v: Veil) -> httpx.Response:
    """The profile as the warehouse sees it (contract basis: no consent involved)."""
    return v.get(CUSTOMER, caller="warehouse", purpose="orders.fulfillment")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a scrape (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def wait_for(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll until check() holds; the seconds it took."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def replace(path: Path, text: str) -> None:
    """Write atomically, as an editor or a deploy tool does (a new inode renamed over the old)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reload(v: Veil) -> httpx.Response:
    return v.client.post(f"{v.admin}/reload", headers={"Authorization": f"Bearer {v.tokens['reload']}"})


def errors(v: Veil) -> float:
    return sample(v.metrics(), "veil_policy_reloads_total", result="error")


@pytest.fixture(scope="module")
def reload_veil(tmp_path_factory: pytest.TempPathFactory, demo_upstream: Upstream) -> Iterator[Veil]:
    v = start_veil(tmp_path_factory.mktemp("reload") / "veil", demo_upstream.url, read_token=True)
    yield v
    v.stop()


@pytest.fixture
def routes(reload_veil: Veil) -> Iterator[Path]:
    """The veil's routes file; the original policy set is restored (and active) after the test."""
    path = reload_veil.policy_dir / "routes.veil"
    yield path
    for f in POLICIES.glob("*.veil"):
        replace(reload_veil.policy_dir / f.name, f.read_text())
    r = reload(reload_veil)
    assert r.status_code == 200, r.text


def test_edit_is_picked_up_by_the_watcher(reload_veil: Veil, routes: Path) -> None:
    before = ship(reload_veil)
    assert before.status_code == 200 and before.json()["phone"].count("*") == len(before.json()["phone"]) - 4
    routes.write_text(routes.read_text().replace(MASK_4, MASK_2))  # in place, as `echo >>` would
    took = wait_for(lambda: ship(reload_veil).headers["veil-policy"] != before.headers["veil-policy"],
                    timeout=4.0, what="the edited policy")
    after = ship(reload_veil)
    assert after.status_code == 200
    assert after.json()["phone"].count("*") == len(after.json()["phone"]) - 2
    assert took < 3.0, f"picked up after {took:.2f}s"
    print(f"\nwatcher: edit picked up after {took:.2f}s")
    (ready,) = reload_veil.readyz(details=True).json()["workers"]
    assert ready["policy_version"] == after.headers["veil-policy"] and ready["policy_error"] is None
    scrape = reload_veil.metrics()
    assert sample(scrape, "veil_policy_info", version=after.headers["veil-policy"]) == 1
    assert sample(scrape, "veil_policy_info", version=before.headers["veil-policy"]) == 0


@pytest.mark.parametrize("damage", ["garbage", "half_written", "purposes_deleted", "routes_deleted"])
def test_bad_policy_keeps_the_last_good_one(reload_veil: Veil, routes: Path, damage: str) -> None:
    good = ship(reload_veil)
    assert good.status_code == 200
    version = good.headers["veil-policy"]
    errors_before = errors(reload_veil)
    text = routes.read_text()
    if damage == "garbage":
        routes.write_bytes(b"\x00\xffroute GET {{{ not a policy")
    elif damage == "half_written":
        routes.write_text(text[: len(text) // 2])
    elif damage == "purposes_deleted":
        (reload_veil.policy_dir / "purposes.veil").unlink()
    else:
        routes.unlink()
    r = reload(reload_veil)
    assert r.status_code == 422, r.text
    assert r.json()["ok"] is False and r.json()["version"] == version and r.json()["error"]
    assert errors(reload_veil) >= errors_before + 1
    ready = reload_veil.readyz()
    assert ready.status_code == 200  # still serving: the last good policy is active
    # a probe sees the status only: no file path, no policy source (issue 21)
    assert ready.json() == {"status": "ready", "reasons": [], "mode": "enforce"}
    assert str(reload_veil.policy_dir) not in ready.text
    (details,) = reload_veil.readyz(details=True).json()["workers"]  # the read token shows why
    assert details["policy_error"] and details["policy_version"] == version
    if damage != "routes_deleted":  # diagnostics name the file (that one says no route is left)
        assert str(reload_veil.policy_dir) in details["policy_error"]
    still = ship(reload_veil)
    assert still.status_code == 200 and still.headers["veil-policy"] == version
    assert still.content == good.content
    if damage == "garbage":
        time.sleep(1.2)  # the watcher's next pass (1 s) sees nothing new to try: no flapping
        assert ship(reload_veil).headers["veil-policy"] == version


def test_reload_gauges_and_one_line_log_records(reload_veil: Veil, routes: Path) -> None:
    """A rejected reload sets veil_policy_last_reload_successful to 0 and keeps the success timestamp;
    the recovery sets both and says so in the log; every log record is one line."""
    scrape = reload_veil.metrics()
    assert sample(scrape, "veil_policy_last_reload_successful") == 1
    t0 = sample(scrape, "veil_policy_last_reload_success_timestamp_seconds")
    assert t0 > 0
    good = routes.read_text()
    replace(routes, good + "\nroute GET /broken {\n  for nothing.here {\n")
    assert reload(reload_veil).status_code == 422
    scrape = reload_veil.metrics()
    assert sample(scrape, "veil_policy_last_reload_successful") == 0
    assert sample(scrape, "veil_policy_last_reload_success_timestamp_seconds") == t0
    time.sleep(0.01)
    replace(routes, good)
    assert reload(reload_veil).status_code == 200
    scrape = reload_veil.metrics()
    assert sample(scrape, "veil_policy_last_reload_successful") == 1
    assert sample(scrape, "veil_policy_last_reload_success_timestamp_seconds") > t0
    log = Path(reload_veil.proc.log_path).read_text()  # type: ignore[attr-defined]
    lines = log.splitlines()
    rejected = [x for x in lines if "policy reload rejected" in x]
    assert rejected and re.search(r"1 error\(s\): \S+routes\.veil:\d+:\d+: error\[parse_error\]", rejected[-1])
    assert any("policy reload succeeded after a rejected one" in x for x in lines)
    assert any(" INFO veil: veil " in x and " listening: proxy " in x for x in lines)  # the startup line
    for line in lines:  # no record spans lines: each line is a record of its own
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line), line


def test_sighup_and_post_reload(reload_veil: Veil) -> None:
    ok = sample(reload_veil.metrics(), "veil_policy_reloads_total", result="ok")
    reload_veil.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: sample(reload_veil.metrics(), "veil_policy_reloads_total", result="ok") == ok + 1,
             timeout=5.0, what="a reload after SIGHUP")
    assert reload_veil.proc.poll() is None
    r = reload(reload_veil)
    assert r.status_code == 200 and r.json()["ok"] is True
    assert r.json()["version"] == ship(reload_veil).headers["veil-policy"]
    assert sample(reload_veil.metrics(), "veil_policy_reloads_total", result="ok") == ok + 2
    no_token = reload_veil.client.post(f"{reload_veil.admin}/reload")
    assert no_token.status_code == 401
    consent_token = {"Authorization": f"Bearer {reload_veil.tokens['consent']}"}
    wrong = reload_veil.client.post(f"{reload_veil.admin}/reload", headers=consent_token)
    assert wrong.status_code == 403


async def test_reload_under_load_fails_no_request(reload_veil: Veil, routes: Path) -> None:
    texts = [routes.read_text(), routes.read_text().replace(MASK_4, MASK_2)]
    expected: dict[str, bytes] = {}  # policy version → the body it produces
    for text in texts:
        replace(routes, text)
        assert reload(reload_veil).status_code == 200
        r = ship(reload_veil)
        assert r.status_code == 200
        expected[r.headers["veil-policy"]] = r.content
    assert len(expected) == 2 and len(set(expected.values())) == 2

    headers = {"Veil-Key": KEYS["warehouse"], "Veil-Purpose": "orders.fulfillment"}
    bad: list[str] = []
    seen: dict[str, int] = {}
    done = 0
    reloads = 0
    start = time.monotonic()
    stop = asyncio.Event()  # set by flip(): after 5 s and at least 10 reloads (20 s at most, a slow box)
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

        async def requests() -> None:
            nonlocal done
            while not stop.is_set():
                r = await client.get(reload_veil.url + CUSTOMER, headers=headers)
                version = r.headers.get("veil-policy", "")
                if r.status_code != 200 or expected.get(version) != r.content:
                    bad.append(f"{r.status_code} {version} {r.text[:200]}")
                seen[version] = seen.get(version, 0) + 1
                done += 1

        async def flip() -> None:
            nonlocal reloads
            try:
                while (time.monotonic() - start < 5.0 or reloads < 10) and time.monotonic() - start < 20.0:
                    replace(routes, texts[reloads % 2])
                    r = await client.post(f"{reload_veil.admin}/reload",
                                          headers={"Authorization": f"Bearer {reload_veil.tokens['reload']}"})
                    if r.status_code != 200:
                        bad.append(f"reload {r.status_code} {r.text[:200]}")
                    reloads += 1
                    await asyncio.sleep(0.1)
            finally:
                stop.set()

        await asyncio.gather(flip(), *(requests() for _ in range(8)))
    print(f"\nreload under load: {done} requests, {reloads} reloads, per version {seen}")
    assert not bad, bad[:5]
    assert reloads >= 10 and done >= 50
    assert set(seen) == set(expected)  # both versions served


@pytest.fixture
def configmap_veil(tmp_path: Path, demo_upstream: Upstream) -> Iterator[Veil]:
    """A policy directory laid out as the kubelet mounts a ConfigMap:
    policies/..2026_01_01/*.veil, policies/..data -> ..2026_01_01, policies/x.veil -> ..data/x.veil."""
    pdir = tmp_path / "veil" / "policies"
    data = pdir / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    for f in POLICIES.glob("*.veil"):
        shutil.copy(f, data / f.name)
        (pdir / f.name).symlink_to(Path("..data") / f.name)
    (pdir / "..data").symlink_to(data.name)
    v = start_veil(tmp_path / "veil", demo_upstream.url)
    yield v
    v.stop()


def swap_configmap(pdir: Path, files: dict[str, str], stamp: str) -> None:
    """The kubelet's atomic update: a new timestamped dir, a new symlink renamed over ..data, the old
    dir removed."""
    old = os.readlink(pdir / "..data")
    new = pdir / f"..{stamp}"
    new.mkdir()
    for name, text in files.items():
        (new / name).write_text(text)
    tmp = pdir / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, pdir / "..data")
    shutil.rmtree(pdir / old)


def test_configmap_swap_is_noticed(configmap_veil: Veil) -> None:
    v = configmap_veil
    first = ship(v)
    assert first.status_code == 200, first.text
    errors_before = errors(v)
    files = {f.name: f.read_text() for f in POLICIES.glob("*.veil")}
    files["routes.veil"] = files["routes.veil"].replace(MASK_4, MASK_2)
    swap_configmap(v.policy_dir, files, "2026_01_02_00_00_00.000000002")
    took = wait_for(lambda: ship(v).headers["veil-policy"] != first.headers["veil-policy"],
                    timeout=4.0, what="the swapped ConfigMap")
    r = ship(v)
    assert r.json()["phone"].count("*") == len(r.json()["phone"]) - 2
    assert took < 3.0
    print(f"\nwatcher: ConfigMap swap picked up after {took:.2f}s")
    # and back: the original content gives the original version
    files["routes.veil"] = (POLICIES / "routes.veil").read_text()
    swap_configmap(v.policy_dir, files, "2026_01_03_00_00_00.000000003")
    wait_for(lambda: ship(v).headers["veil-policy"] == first.headers["veil-policy"],
             timeout=4.0, what="the second swap")
    assert ship(v).content == first.content
    assert errors(v) == errors_before  # the versioned copies are never read as extra files
