"""`veil discover report` and `suggest` on a state built in memory: findings first, fates from the
compiled plan, category lines new and extended, statements in the right rule, all checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.cli import main
from veil.discovery.detectors import Detect
from veil.discovery.observe import Limits, Observer
from veil.discovery.recorder import write_state
from veil.discovery.report import build_report, markdown
from veil.discovery.state import State
from veil.discovery.suggest import apply, plan, render
from veil.policy.fmt import format_text
from veil.policy.load import load_policy

POLICY = '''category contact = email
category health sensitive = diagnosis

purpose support {
  description "Support"
  basis contract
  retention 1 year
  recipients "Support desk"
}

route GET /tickets/{id} {
  # the first cut: whole objects
  for support {
    keep id, customer, card  # careless
  }
}
'''
DOC = {"id": "t-1", "customer": {"email": "jane.roe@example.org", "mobile": "+44 20 7946 0958",
                                 "ssn_like": "536-90-4399"},
       "card": "4111 1111 1111 1111", "internal": "x"}


def _state(n: int = 3) -> State:
    st = State()
    sh = st.observation("GET /tickets/{id}", "support")
    assert sh is not None
    for _ in range(n):
        Observer(Detect(), Limits()).observe(DOC, sh)
    return st


def test_report_lists_findings_first_with_the_engines_fates(tmp_path: Path) -> None:
    (tmp_path / "p.veil").write_text(POLICY)
    policy = load_policy([tmp_path])
    [rep] = build_report(policy, _state())
    rows = {r.path: r for r in rep.rows}
    assert rows["customer.mobile"].detector == "phone" and rows["customer.mobile"].fate == "kept"
    assert rows["card"].detector == "card" and rows["card"].finding
    assert rows["customer.email"].category == "contact" and rows["customer.email"].finding
    assert rows["internal"].fate == "removed" and not rows["internal"].finding
    assert rows["customer.ssn_like"].personal is not None
    assert rows["customer.ssn_like"].personal.category == "identity.government_id"
    assert all(r.finding for r in rep.rows[:len(rep.findings)])
    assert rows["id"].statement.startswith("keep id, customer, card")
    text = markdown([rep], _state())
    assert "**Personal and in clear:**" in text and "4111" not in text


def test_suggestions_pass_the_checks_and_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.veil").write_text(POLICY)
    policy = load_policy([tmp_path])
    s = plan(policy, build_report(policy, _state()))
    assert not s.problems
    out = render(s)
    assert "category payment.card = card" in out
    assert "category contact.phone = customer.mobile" in out
    assert "category contact = email, customer.email" not in out  # email is already in a category
    assert "mask card last 4" in out and "hash customer.email" in out and "mask customer.mobile last 4" in out
    # a government id is sensitive, but the rule keeps `customer` in clear under a contract purpose:
    # suggested as not sensitive, with a note, so that the policy still passes the checks
    assert "category identity.government_id = customer.ssn_like" in out and "note: sensitive" in out
    assert "drop customer.ssn_like" in out
    [written] = apply(s)
    text = written.read_text()
    assert format_text(text) == text and "# careless" in text and "# the first cut" in text
    assert main(["check", str(tmp_path)]) == 0
    state = tmp_path / "s.json"
    write_state(state, _state())
    capsys.readouterr()
    assert main(["discover", "report", str(state), "--policy", str(tmp_path)]) == 0  # nothing left in clear
    assert main(["discover", "suggest", str(state), "--policy", str(tmp_path)]) == 0
    assert "nothing to suggest" in capsys.readouterr().out


def test_merge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_state(a, _state(2))
    write_state(b, _state(3))
    assert main(["discover", "merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 0
    (tmp_path / "p.veil").write_text(POLICY)
    capsys.readouterr()
    assert main(["discover", "report", str(tmp_path / "m.json"), "--policy", str(tmp_path), "--format", "json"]) == 1
    assert '"responses": 5' in capsys.readouterr().out
    assert main(["discover", "report", str(tmp_path / "nope.json"), "--policy", str(tmp_path)]) == 1
    assert main(["discover", "report", str(a), "--policy", str(tmp_path), "--min-rate", "0"]) == 2
