from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from veil.audit import AuditLog, find_chains, verify
from veil.errors import VeilError
from veil.keys import KeyRing, generate_key


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "k1")


async def write_log(path: Path, ring: KeyRing, n: int, **kw: Any) -> Path:
    log = AuditLog(path, ring, flush_interval=0, **kw)
    await log.start()
    for i in range(n):
        await log.append({"id": f"d{i}", "caller": "storefront", "decision": "allow", "subject": "s" * 32})
    await log.close()
    return log.path


def read(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def resign(line: bytes, key: bytes, **changes: Any) -> bytes:
    """What someone holding the key could write."""
    rec = {k: v for k, v in orjson.loads(line).items() if k != "mac"}
    rec.update(changes)
    mac = hmac.new(key, orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()
    return orjson.dumps({**rec, "mac": mac}, option=orjson.OPT_SORT_KEYS) + b"\n"


async def test_an_untouched_log_verifies(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    result = verify([path], ring)
    assert result.ok and result.records == 12 and result.files == 1
    assert result.render() == "ok: 12 records in 1 files"


async def test_modified_record(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    lines[4] = lines[4].replace(b'"allow"', b'"block"')
    write(path, lines)
    result = verify([path], ring)
    assert (result.ok, result.problem, result.first_bad) == (False, "mac_mismatch", (path, 5))
    assert result.render().startswith(f"FAILED at {path}:5: mac_mismatch")


async def test_deleted_record(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    del lines[4]
    write(path, lines)
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("seq_gap", (path, 5))


async def test_deleted_first_record(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    write(path, read(path)[1:])
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("seq_gap", (path, 1))


async def test_inserted_forged_record(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    lines.insert(6, lines[5].replace(b'"d4"', b'"d99"'))
    write(path, lines)
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("mac_mismatch", (path, 7))


async def test_replayed_record(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    lines.insert(6, lines[2])
    write(path, lines)
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("seq_repeat", (path, 7))


async def test_reordered_records(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    lines[4], lines[5] = lines[5], lines[4]
    write(path, lines)
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("reordered", (path, 5))


async def test_record_spliced_in_with_the_key(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    lines = read(path)
    lines[4] = resign(lines[4], ring.current, prev="0" * 64)
    write(path, lines)
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("chain_break", (path, 5))


async def test_truncated_at_the_end(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    write(path, read(path)[:-3])
    result = verify([path], ring)
    assert (result.problem, result.first_bad) == ("truncated", (path, 10))


async def test_truncated_and_head_removed(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 10)
    write(path, read(path)[:-3])
    (tmp_path / "decisions.log.head").unlink()
    assert verify([path], ring).problem == "truncated"
    assert verify([path], ring, require_head=False).problem == "truncated"  # no final checkpoint


async def test_archive_without_head_ends_in_a_checkpoint(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    (tmp_path / "decisions.log.head").unlink()
    assert not verify([path], ring).ok
    assert verify([path], ring, require_head=False).ok


async def test_malformed_and_unreadable_head(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    lines = read(path)
    write(path, [*lines[:2], b"not json\n", *lines[2:]])
    assert (verify([path], ring).problem, verify([path], ring).first_bad) == ("malformed", (path, 3))
    write(path, lines)
    (tmp_path / "decisions.log.head").write_text("{")
    assert verify([path], ring).problem == "malformed"


async def test_wrong_key(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    other = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    assert (verify([path], other).problem, verify([path], other).first_bad) == ("mac_mismatch", (path, 1))
    assert verify([path], KeyRing.single(ring.current, "other")).problem == "unknown_key"
    assert verify([path], KeyRing.single(ring.current, "*")).ok  # a key without an id


async def test_tampering_in_a_rotated_file_names_that_file(tmp_path: Path, ring: KeyRing) -> None:
    await write_log(tmp_path / "decisions.log", ring, 30, max_bytes=1500)
    seg = tmp_path / "decisions.log.2"
    assert verify([tmp_path], ring).ok
    lines = read(seg)
    del lines[2]
    write(seg, lines)
    result = verify([tmp_path / "decisions.log"], ring)  # one file names its whole chain
    assert (result.problem, result.first_bad) == ("seq_gap", (seg, 3))


async def test_deleted_rotated_file(tmp_path: Path, ring: KeyRing) -> None:
    await write_log(tmp_path / "decisions.log", ring, 30, max_bytes=1500)
    (tmp_path / "decisions.log.2").unlink()
    result = verify([tmp_path], ring)
    assert result.problem == "seq_gap" and result.first_bad == (tmp_path / "decisions.log.3", 1)


async def test_restarts_and_rotation_verify_together(tmp_path: Path, ring: KeyRing) -> None:
    for _ in range(3):
        await write_log(tmp_path / "decisions.log", ring, 10, max_bytes=2000)
    result = verify([tmp_path], ring)
    assert result.ok and result.files > 1 and result.records == 36 + result.files - 1  # + rotate checkpoints


async def test_directories_and_globs_find_every_chain(tmp_path: Path, ring: KeyRing) -> None:
    await write_log(tmp_path / "decisions.log", ring, 5, chain_id="w1", max_bytes=800)
    await write_log(tmp_path / "decisions.log", ring, 5, chain_id="w2")
    expected = [tmp_path / "decisions-w1.log", tmp_path / "decisions-w2.log"]
    assert find_chains([tmp_path]) == expected
    assert find_chains([str(tmp_path / "*.log*")]) == expected
    assert find_chains([tmp_path / "decisions-w1.log.1"]) == expected[:1]
    assert find_chains([tmp_path / "decisions-w2.log.head"]) == expected[1:]
    by_dir, by_glob = verify([tmp_path], ring), verify([str(tmp_path / "decisions-*")], ring)
    assert by_dir.ok and by_dir.chains == 2 and by_dir == by_glob
    with pytest.raises(VeilError):
        verify([tmp_path / "nothing.log"], ring)
    with pytest.raises(VeilError):
        verify([str(tmp_path / "nothing*")], ring)


async def test_second_chain_failure_is_reported(tmp_path: Path, ring: KeyRing) -> None:
    await write_log(tmp_path / "decisions.log", ring, 5, chain_id="a")
    p = await write_log(tmp_path / "decisions.log", ring, 5, chain_id="b")
    write(p, read(p)[:-1])
    result = verify([tmp_path], ring)
    assert (result.problem, result.first_bad) == ("truncated", (p, 7))


async def test_an_incomplete_last_line_is_a_torn_write_not_tampering(tmp_path: Path, ring: KeyRing) -> None:
    """A crash in the middle of a write leaves part of a record with no newline at the end of the
    active file: verify says so (ok, with where to cut) rather than calling it malformed."""
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    size = path.stat().st_size
    partial = resign(read(path)[-1], ring.current, seq=6)[:57]
    with open(path, "ab") as f:
        f.write(partial)
    result = verify([path], ring)
    assert result.ok and result.records == 5 and result.problem is None
    (torn,) = result.torn_tails
    assert (torn.file, torn.line, torn.bytes, torn.offset) == (path, 6, 57, size)
    assert result.render() == (
        f"ok: 5 records in 1 files\nnote: {path}:6: incomplete last line (57 bytes, no newline): a write cut "
        f"short by a crash, never acknowledged; `veil serve` cuts it off when it next starts "
        f"(offline: truncate -s {size} {path})")
    # the offline repair the note gives
    with open(path, "r+b") as f:
        f.truncate(torn.offset)
    assert verify([path], ring).torn_tails == ()


async def test_a_complete_record_without_its_newline_is_torn_too(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    whole = resign(read(path)[-1], ring.current, seq=6, prev="x")
    with open(path, "ab") as f:
        f.write(whole.rstrip(b"\n"))  # written but for the newline: still never acknowledged
    result = verify([path], ring)
    assert result.ok and len(result.torn_tails) == 1 and result.records == 5


async def test_a_malformed_line_in_the_middle_is_tampering(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    lines = read(path)
    lines[2] = lines[2][:40] + b"\n"  # a record cut short, with lines after it
    write(path, lines)
    result = verify([path], ring)
    assert (result.ok, result.problem, result.first_bad) == (False, "malformed", (path, 3))
    assert "changed after it was written" in result.message


async def test_a_torn_looking_tail_the_head_vouches_for_is_truncation(tmp_path: Path, ring: KeyRing) -> None:
    """The head file says the last record was complete on disk: cutting it short is not a crash."""
    path = await write_log(tmp_path / "decisions.log", ring, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # the final checkpoint, which the head names, loses its end
    result = verify([path], ring)
    assert (result.ok, result.problem) == (False, "truncated")


async def test_a_torn_line_in_a_rotated_segment_is_malformed(tmp_path: Path, ring: KeyRing) -> None:
    path = await write_log(tmp_path / "decisions.log", ring, 30, max_bytes=2000)
    segments = sorted(tmp_path.glob("decisions.log.*[0-9]"))
    assert segments
    data = segments[0].read_bytes()
    segments[0].write_bytes(data[:-10])
    result = verify([path], ring)
    assert (result.ok, result.problem, result.first_bad[0] if result.first_bad else None) == (
        False, "malformed", segments[0])
