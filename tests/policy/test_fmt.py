"""`veil fmt`: canonical layout, comments kept, idempotent, meaning-preserving (hypothesis), and the
parser only ever fails with veil's own Diagnostics (fuzzing)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from veil.errors import Diagnostics, Severity
from veil.policy.checks import run_checks
from veil.policy.compile import compile_policy
from veil.policy.fmt import format_text, parse_module, same_meaning

POLICIES = Path(__file__).parents[2] / "policies"


def test_example_policies_are_canonical() -> None:
    for f in sorted(POLICIES.glob("*.veil")):
        text = f.read_text(encoding="utf-8")
        assert format_text(text, str(f)) == text


def test_layout_and_comments() -> None:
    src = (
        "# file comment\n\n# about p\npurpose  a.b { basis consent consent \"k\\u00e9\" # trailing\n"
        "  # before retention\n  retention 3 months\n  tcf purposes 1,2 legitimate_interest\n"
        "  # at the end\n}\n"
        "category c = x, y\ncategory d sensitive = \"odd key\".z\n"
        "caller svc { may a\n  key env FOO   description \"hi\"\n vendor 3 }  # after\n"
        "route GET /a/{id} { for a.b { keep x, y.z  # keep\n replace q with -1.5e3 mask m first 2 last 3 } "
        "subject path.id }\n# the end\n"
    )
    assert format_text(src) == (
        "# file comment\n\n# about p\npurpose a.b {\n  basis consent\n  consent \"ké\"  # trailing\n"
        "  # before retention\n  retention 3 months\n  tcf purposes 1, 2 legitimate_interest\n"
        "  # at the end\n}\n\n"
        "category c = x, y\ncategory d sensitive = \"odd key\".z\n\n"
        "caller svc {\n  may a\n  key env FOO\n  description \"hi\"\n  vendor 3\n}  # after\n\n"
        "route GET /a/{id} {\n  for a.b {\n    keep x, y.z  # keep\n    replace q with -1500.0\n"
        "    mask m first 2 last 3\n  }\n  subject path.id\n}\n# the end\n"
    )


def test_notice_section_and_localized_descriptions_round_trip() -> None:
    src = ('notice {controller "Acme \\"GmbH\\""  jurisdictions gdpr,ccpa # where\n dpo none }\n'
           'purpose p { description "d" description de "Beschreibung" basis contract }\n')
    out = format_text(src)
    assert out == (
        'notice {\n  controller "Acme \\"GmbH\\""\n  jurisdictions gdpr, ccpa  # where\n  dpo none\n}\n\n'
        'purpose p {\n  description "d"\n  description de "Beschreibung"\n  basis contract\n}\n'
    )
    assert format_text(out) == out
    assert same_meaning(parse_module(out, "a"), parse_module(src, "a"))
    assert not same_meaning(parse_module(out, "a"), parse_module(out.replace("dpo none", 'dpo "none"'), "a"))


def test_profiling_statements_and_notice_sources_round_trip() -> None:
    src = ('purpose p {basis consent processing profiling profiling_logic "We \\"rank\\"" profiling_logic de "Wir"\n'
           ' profiling_effects  "e" # why\n automated_decisions none }\n'
           'purpose q { automated_decisions "Limits" automated_decisions de "Limits (de)" }\n'
           'notice { source "Partner shops" public_sources none obligation "Name and address are needed." }\n')
    out = format_text(src)
    assert out == (
        'purpose p {\n  basis consent\n  processing profiling\n  profiling_logic "We \\"rank\\""\n'
        '  profiling_logic de "Wir"\n  profiling_effects "e"  # why\n  automated_decisions none\n}\n\n'
        'purpose q {\n  automated_decisions "Limits"\n  automated_decisions de "Limits (de)"\n}\n\n'
        'notice {\n  source "Partner shops"\n  public_sources none\n  obligation "Name and address are needed."\n}\n'
    )
    assert format_text(out) == out
    assert same_meaning(parse_module(out, "a"), parse_module(src, "a"))
    # `none` and "none" differ: the first states there is no automated decision, the second is a text
    assert not same_meaning(parse_module(out, "a"),
                            parse_module(out.replace("automated_decisions none", 'automated_decisions "none"'), "a"))


def test_strings_are_reescaped() -> None:
    out = format_text('purpose p { description "tab\\there \\u0041 \\/ \\u2028" }')
    assert 'description "tab\\there A / \\u2028"' in out


# ---------------------------------------------------------------- generated policies
NAMES = st.sampled_from(["a", "b", "cd", "keep", "p1", "x_y"])
DOTTED = st.lists(NAMES, min_size=1, max_size=3).map(".".join)
PATHS = st.sampled_from(["x", "a.b", "items[*].email", "*.phone", '"odd key".x', "keep", "**.ssn", "a[0]"])
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
STRINGS = st.tuples(TEXT, st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]))
COMMENT = TEXT.map(lambda t: "#" + t)


def _targets(draw: st.DrawFn) -> list[str]:
    items = draw(st.lists(st.one_of(PATHS, DOTTED.map(lambda d: "@" + d)), min_size=1, max_size=3))
    out: list[str] = []
    for i, t in enumerate(items):
        out += ([","] if i else []) + [t]
    return out


@st.composite
def statements(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["keep", "drop", "hash", "null", "mask", "replace", "generalize", "suppress",
                                 "require_consent", "require_caller", "respect", "block"]))
    if kind in ("keep", "drop", "hash", "null"):
        return [kind, *_targets(draw)]
    if kind == "mask":
        return ["mask", *_targets(draw), "first", str(draw(st.integers(0, 9))), "last", "4"]
    if kind == "replace":
        value = draw(st.one_of(STRINGS, st.sampled_from(["true", "false", "null", "-1.5e3", "7", "0.25"])))
        return ["replace", *_targets(draw), "with", value]
    if kind == "generalize":
        method = draw(st.sampled_from(["prefix 3", "bucket 10", "round 2", "month", "year", "ip"]))
        return ["generalize", *_targets(draw), *method.split()]
    if kind == "suppress":
        return ["suppress", "g[*]", "where", "n", "<", str(draw(st.integers(2, 50)))]
    if kind == "require_consent":
        return ["require", "consent", draw(STRINGS)]
    if kind == "require_caller":
        return ["require", "caller", draw(NAMES)]
    if kind == "respect":
        return ["respect", "gpc"]
    return ["block", draw(STRINGS)]


@st.composite
def items(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["purpose", "category", "caller", "route", "import"]))
    if kind == "import":
        return ["import", draw(STRINGS)]
    if kind == "category":
        sens = ["sensitive"] if draw(st.booleans()) else []
        paths = [t for t in _targets(draw) if not t.startswith("@")]
        paths = paths if paths and paths[0] != "," and paths[-1] != "," else ["x"]
        return ["category", draw(DOTTED), *sens, "=", *[t for i, t in enumerate(paths)
                                                        if t != "," or paths[i - 1] != ","]]
    if kind == "purpose":
        attrs = draw(st.lists(st.sampled_from([
            ["description", '"d"'], ["basis", "consent"], ["consent", '"k"'], ["retention", "13", "months"],
            ["recipients", '"a"', ",", '"b"'], ["processing", "profiling", ",", "sale"], ["gpc", "honor"],
            ["consent_max_age", "1", "year"], ["notice_version", ">=", "2"],
            ["consent_from", "store", ",", "tcf"],
            ["tcf", "purposes", "1", ",", "3", "special_features", "1", "legitimate_interest"],
            ["profiling_logic", '"l"'], ["profiling_logic", "de", '"L"'], ["profiling_effects", '"e"'],
            ["profiling_effects", "pt-BR", '"E"'], ["automated_decisions", "none"],
            ["automated_decisions", '"a"'], ["automated_decisions", "de", '"A"'],
        ]), max_size=5))
        return ["purpose", draw(DOTTED), "{", *[t for a in attrs for t in a], "}"]
    if kind == "caller":
        attrs = draw(st.lists(st.sampled_from([
            ["description", '"svc"'], ["key", "sha256:" + "ab" * 32], ["key", "env", "VEIL_KEY"],
            ["key", "file", '"/k"'], ["may", "a", ",", "b.c"], ["may", "cd"], ["vendor", "755"],
            ["cert", '"CN=x"'],
        ]), max_size=5))
        return ["caller", draw(NAMES), "{", *[t for a in attrs for t in a], "}"]
    out = ["route", draw(st.sampled_from(["GET", "POST", "HEAD"])),
           draw(st.sampled_from(["/", "/a", "/a/{id}", "/x/{id}/y"])), "{"]
    for attr in draw(st.lists(st.sampled_from(["subject", "each", "upstream", "mode", "rule"]), max_size=4,
                              unique_by=lambda a: a if a != "rule" else object())):
        if attr == "subject":
            out += ["subject", "path.id"]
        elif attr == "each":
            out += ["each", "items[*]", "subject", "id"]
        elif attr == "upstream":
            out += ["upstream", "profiles"]
        elif attr == "mode":
            out += ["mode", "report-only"]
        else:
            purposes = draw(st.lists(DOTTED, min_size=1, max_size=2))
            out += ["for", *[t for i, p in enumerate(purposes) for t in ([","] if i else []) + [p]], "{"]
            out += [t for s in draw(st.lists(statements(), max_size=4)) for t in s]
            out += ["}"]
    return [*out, "}"]


@st.composite
def policies(draw: st.DrawFn) -> str:
    tokens: list[str] = []
    if draw(st.booleans()):
        tokens += ["policy", draw(STRINGS), "version", '"1"']
    for item in draw(st.lists(items(), max_size=5)):
        tokens += item
    out = ""
    for tok in tokens:
        out += tok + draw(st.sampled_from([" ", "\n", "  ", "\n\n  ", " ", "\t"]))
        if draw(st.integers(0, 9)) == 0:
            out += draw(COMMENT) + "\n"
    return out


def _comments(text: str) -> list[str]:
    return sorted(c for _, c in parse_module(text, "g.veil").comments)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_fmt_is_idempotent_and_preserves_meaning(text: str) -> None:
    try:
        before = parse_module(text, "g.veil")
    except Diagnostics:
        assume(False)
        raise
    out = format_text(text, "g.veil")
    assert same_meaning(parse_module(out, "g.veil"), before)
    assert format_text(out, "g.veil") == out
    assert _comments(out) == _comments(text)


# ---------------------------------------------------------------- fuzzing the parser
def _parse_and_check(text: str) -> None:
    try:
        module = parse_module(text, "f.veil")
    except Diagnostics as exc:
        assert exc.items and all(d.location is not None for d in exc.items)
        return
    diags = run_checks([module])  # the checks never raise either
    if not any(d.severity is Severity.ERROR for d in diags):
        compile_policy([module], version="fuzz")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_only_raises_diagnostics_on_arbitrary_text(text: str) -> None:
    _parse_and_check(text)


EXAMPLE = "\n".join(f.read_text(encoding="utf-8") for f in sorted(POLICIES.glob("*.veil")))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parser_only_raises_diagnostics_on_mutated_policies(data: st.DataObject) -> None:
    text = EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 12)))
        insert = data.draw(st.sampled_from(["", "{", "}", "\"", ",", "[*]", "@", "9" * 30, " x "]))
        text = text[:i] + insert + text[j:]
    _parse_and_check(text)
