from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import PathError
from veil.redact.paths import (
    AnyKey,
    Deep,
    Each,
    FieldPath,
    Key,
    Segment,
    ends_with,
    format_path,
    matches,
    parse_path,
    template,
)

K = Key


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a", (K("a"),)),
        ("a.b", (K("a"), K("b"))),
        ("_x-1.y_2", (K("_x-1"), K("y_2"))),
        ('"first name"', (K("first name"),)),
        ('"a.b".c', (K("a.b"), K("c"))),
        ('"\\u00e9\\"q"', (K('é"q'),)),
        ('""', (K(""),)),
        ("*.phone", (AnyKey(), K("phone"))),
        ("**", (Deep(),)),
        ("**.ssn", (Deep(), K("ssn"))),
        ("a.**.b", (K("a"), Deep(), K("b"))),
        ("items[*].email", (K("items"), Each(), K("email"))),
        ("[*].id", (Each(), K("id"))),
        ("[*]", (Each(),)),
        ("matrix[*][*]", (K("matrix"), Each(), Each())),
        ('"x"[*]', (K("x"), Each())),
        ("**[*]", (Deep(), Each())),
        ("*[*].a", (AnyKey(), Each(), K("a"))),
    ],
)
def test_parse(text: str, want: FieldPath) -> None:
    assert parse_path(text) == want


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("", 0),
        (".a", 0),
        ("a.", 2),
        ("a..b", 2),
        ("a.0", 2),
        ("items[*.email", 5),
        ("items[0]", 5),
        ("items[*]email", 8),
        ("a.[*]", 2),
        ("a b", 1),
        ('"open', 0),
        ('"a"b', 3),
        ("***", 2),
        ("*a", 1),
        ("a.é", 2),
        ("a-b.-c", 4),
    ],
)
def test_parse_errors_carry_offset(text: str, offset: int) -> None:
    with pytest.raises(PathError) as info:
        parse_path(text)
    assert info.value.offset == offset
    assert info.value.code == "path_invalid"


def test_format_is_canonical() -> None:
    assert format_path(parse_path('"a".b[*]."c d".*.**')) == 'a.b[*]."c d".*.**'
    assert format_path((Each(), K("id"))) == "[*].id"
    assert format_path((K("*"),)) == '"*"'
    assert format_path((K("1a"),)) == '"1a"'


segments: st.SearchStrategy[Segment] = st.one_of(
    st.builds(Key, st.text(max_size=6)),
    st.just(AnyKey()),
    st.just(Each()),
    st.just(Deep()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(segments, min_size=1, max_size=6).map(tuple))
def test_format_parse_round_trip(path: FieldPath) -> None:
    assert parse_path(format_path(path)) == path


def test_template() -> None:
    assert template(["items", 3, "email"]) == "items[*].email"
    assert template([0, "id"]) == "[*].id"
    assert template(["first name", "a.b", 1, 2]) == '"first name"."a.b"[*][*]'
    assert template([]) == ""


@pytest.mark.parametrize(
    ("path", "concrete", "want"),
    [
        ("a.b", ["a", "b"], True),
        ("a.b", ["a"], False),
        ("a.b", ["a", "b", "c"], False),
        ("*.phone", ["home", "phone"], True),
        ("*.phone", [0, "phone"], False),
        ("items[*].email", ["items", 7, "email"], True),
        ("items[*].email", ["items", "7", "email"], False),
        ("[*].id", [0, "id"], True),
        ("**", [], True),
        ("**", ["a", 1, "b"], True),
        ("**.ssn", ["ssn"], True),
        ("**.ssn", ["a", 2, "b", "ssn"], True),
        ("**.ssn", ["a", "ssn", "x"], False),
        ("a.**.b", ["a", "b"], True),
        ("a.**.b", ["a", 0, 1, "b"], True),
        ("a.**", ["a"], True),
        ("matrix[*][*]", ["matrix", 1, 2], True),
        ("matrix[*][*]", ["matrix", 1], False),
    ],
)
def test_matches(path: str, concrete: list[str | int], want: bool) -> None:
    assert matches(parse_path(path), concrete) is want


def test_ends_with() -> None:
    p = parse_path("customer.contact.email")
    assert ends_with(p, parse_path("email"))
    assert ends_with(p, parse_path("contact.email"))
    assert ends_with(p, p)
    assert ends_with(p, ())
    assert not ends_with(p, parse_path("phone"))
    assert not ends_with(parse_path("email"), p)
    assert ends_with(parse_path("items[*].email"), parse_path("[*].email"))
