"""The bench's shape corpus: list responses of different shapes, each with a policy of its own.

    corpus(seed=1, items=1000) → [Shape, ...]      one per name in SHAPES, in that order

A shape is an upstream list body (`{"items": [...]}`, about 0.5-2 KB per item), a complete policy set
(a caller, a consent-based purpose and a `GET` list route with `each items[*] subject id`), the
request veil serves it on, and what the real compiled plan does with it per response (kept,
dropped and transformed leaves, counted by running the request through the request flow in-process:
veil.bench.inproc). Names are stable; the field names, values, list contents and which subjects
consented vary with the seed (nothing repeats only because the bench repeats it). 9 in 10 subjects,
chosen at random per seed, have consented; the others have withdrawn.

    demo            what the fast upstream serves at /customers, with the example policies
    issue           issue 16's API: a dozen fields, most dropped, `history[*].track` kept, one hashed
    wide_dropped    ~60 scalar fields per item, a handful kept, a few dropped by name
    deep            objects nested 8-9 levels, leaves kept deep down, siblings removed on the way
    nested_arrays   arrays in arrays kept in part (`history[*].track`, `orders[*].lines[*].price`)
    transforms      a dozen transformed fields per item: hash, mask, generalize (every kind), null, replace
    long_strings    a few long strings per item, some kept
    numbers         number-heavy items: numeric fields and arrays of numbers
    mostly_kept     most fields kept (whole subtrees and single fields), a few dropped by name
    unknown_keys    keys the plan names mixed with keys it does not, at every level, varying per item
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import orjson

from veil.bench.inproc import leaf_counts

SHAPES = ("demo", "issue", "wide_dropped", "deep", "nested_arrays", "transforms", "long_strings", "numbers",
          "mostly_kept", "unknown_keys")
SHAPE_KEY = "veil-bench-shapes-key"  # the bench caller's Veil-Key (a loopback benchmark, not a secret)
CONSENT_KEY = "bench"
CONSENTED_SHARE = 0.9

Item = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    name: str  # stable, one of SHAPES
    title: str
    body: bytes  # the upstream's JSON: {"items": [...]}
    policy_files: Mapping[str, str]  # file name -> text: a complete policy set for this shape
    path: str  # request path and query veil serves it on
    headers: tuple[tuple[str, str], ...]  # Veil-Key and Veil-Purpose
    subjects: tuple[str, ...]  # subject id of each item, in order
    consented: frozenset[str] = field(default_factory=frozenset)  # the others have withdrawn
    consent_key: str = CONSENT_KEY
    kept_leaves: int = 0  # per response, by the real flow (veil.bench.inproc.leaf_counts)
    dropped_leaves: int = 0  # not leaving: removed, dropped, or in an item whose subject withdrew
    transformed_leaves: int = 0

    @property
    def purpose(self) -> str:
        return dict(self.headers)["Veil-Purpose"]

    @property
    def items(self) -> int:
        return len(self.subjects)


# ---------------------------------------------------------------- random material

_RESERVED = frozenset({
    "keep", "drop", "hash", "mask", "null", "replace", "generalize", "suppress", "require", "respect", "block",
    "for", "each", "subject", "route", "with", "where", "first", "last", "prefix", "bucket", "round", "month",
    "year", "ip", "consent", "caller", "gpc", "true", "false", "items", "id", "policy", "import", "schema",
    "purpose", "category", "notice", "upstream", "mode", "sensitive",
})
_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"


class _Names:
    """Fresh field names per seed: pronounceable, unique, never a keyword of the language."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set(_RESERVED)

    def __call__(self) -> str:
        while True:
            n = "".join(self.rng.choice(_CONS) + self.rng.choice(_VOWELS) for _ in range(self.rng.randint(2, 4)))
            if self.rng.random() < 0.3:
                n += "_" + "".join(self.rng.choice(_CONS) + self.rng.choice(_VOWELS) for _ in range(2))
            if n not in self.used:
                self.used.add(n)
                return n

    def many(self, k: int) -> list[str]:
        return [self() for _ in range(k)]


def _word(rng: random.Random, lo: int = 4, hi: int = 12) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = _word(rng, 2, 10)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


def _email(rng: random.Random) -> str:
    return f"{_word(rng, 3, 8)}.{_word(rng, 3, 9)}@{_word(rng, 4, 8)}.example"


def _phone(rng: random.Random) -> str:
    return "+1 555 " + "".join(rng.choice(string.digits) for _ in range(7))


def _date(rng: random.Random) -> str:
    return (date(2015, 1, 1) + timedelta(days=rng.randint(0, 4000))).isoformat()


def _ip(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def _scalar(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.45:
        return _word(rng, 4, 16)
    if r < 0.65:
        return rng.randint(-10_000, 1_000_000)
    if r < 0.8:
        return round(rng.uniform(-1000, 1000), rng.randint(1, 6))
    if r < 0.9:
        return rng.random() < 0.5
    if r < 0.95:
        return None
    return _date(rng)


def _subject(rng: random.Random) -> str:
    return "s-" + "".join(rng.choice("0123456789abcdef") for _ in range(12))


# ---------------------------------------------------------------- the shapes
# A builder makes one item (given its subject id) and the statements of the rule; it is built once per
# shape and seed: `make(rng) -> (item(rng, subject) -> Item, statements)`.

Builder = Callable[[random.Random], tuple[Callable[[random.Random, str], Item], list[str]]]


def _p(*segs: str) -> str:
    return "items[*]." + ".".join(segs)


def _issue(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    email, history, track, at, score, note = nm(), nm(), nm(), nm(), nm(), nm()
    others = nm.many(9)

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid, email: _email(r)}
        out[history] = [{track: _word(r, 6, 14), at: _date(r), score: r.randint(0, 100), note: _text(r, 30)}
                        for _ in range(r.randint(3, 6))]
        for k in others:
            out[k] = _text(r, r.randint(20, 60)) if r.random() < 0.6 else _scalar(r)
        return out

    return item, [f"keep items[*].id, {_p(history)}[*].{track}", f"hash {_p(email)}"]


def _wide_dropped(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    fields = nm.many(60)
    kept, named_drops = fields[:4], fields[4:8]

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for k in fields:
            out[k] = _scalar(r)
        return out

    return item, [f"keep items[*].id, {', '.join(_p(k) for k in kept)}",
                  f"drop {', '.join(_p(k) for k in named_drops)}"]


def _deep(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    depth = rng.randint(8, 9)
    chain = nm.many(depth)  # item.c0.c1...c(depth-1)
    per_level = [nm.many(3) for _ in range(depth)]  # scalar siblings at every level
    kept_leaf = [lv[0] for lv in per_level[-3:]]  # one leaf kept at each of the three deepest levels
    side = nm()  # a subtree kept whole, deep down
    side_keys = nm.many(4)

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        node = out
        for lvl, key in enumerate(chain):
            child: Item = {k: _scalar(r) for k in per_level[lvl]}
            for k in per_level[lvl][1:]:
                child[k] = _text(r, r.randint(8, 30))
            node[key] = child
            node = child
        node[side] = {k: _word(r, 4, 12) for k in side_keys}
        return out

    keeps = ["items[*].id"]
    for i, leaf in enumerate(kept_leaf):
        lvl = depth - 3 + i
        keeps.append(_p(*chain[:lvl + 1], leaf))
    keeps.append(_p(*chain, side))
    return item, [f"keep {', '.join(keeps)}"]


def _nested_arrays(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    history, track, at, meta, mkeep, mdrop, tags = nm(), nm(), nm(), nm(), nm(), nm(), nm()
    orders, sku, lines, price, desc, qty = nm(), nm(), nm(), nm(), nm(), nm()
    name = nm()

    def item(r: random.Random, sid: str) -> Item:
        return {
            "id": sid, name: _word(r, 5, 14),
            history: [{track: _word(r, 5, 12), at: _date(r), meta: {mkeep: r.randint(0, 999), mdrop: _word(r)},
                       tags: [_word(r, 3, 8) for _ in range(r.randint(0, 3))]} for _ in range(r.randint(3, 7))],
            orders: [{sku: _word(r, 8, 8).upper(),
                      lines: [{price: round(r.uniform(1, 500), 2), desc: _text(r, 24), qty: r.randint(1, 9)}
                              for _ in range(r.randint(1, 4))]} for _ in range(r.randint(1, 4))],
        }

    return item, [f"keep items[*].id, {_p(history)}[*].{track}, {_p(history)}[*].{meta}.{mkeep}",
                  f"keep {_p(orders)}[*].{sku}, {_p(orders)}[*].{lines}[*].{price}"]


def _transforms(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    hashed, masked, prefixed, bucketed, rounded = nm.many(3), nm.many(3), nm.many(2), nm.many(2), nm.many(2)
    dated_m, dated_y, ipf, nulled, replaced = nm(), nm(), nm(), nm(), nm()
    kept, dropped = nm.many(2), nm.many(3)

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for k in hashed:
            out[k] = _email(r)
        for k in masked:
            out[k] = _phone(r)
        for k in prefixed:
            out[k] = _word(r, 6, 12).upper()
        for k in bucketed:
            out[k] = r.randint(0, 250_000)
        for k in rounded:
            out[k] = r.uniform(-90, 90)
        out[dated_m], out[dated_y], out[ipf] = _date(r), _date(r), _ip(r)
        out[nulled], out[replaced] = _text(r, 40), _word(r)
        for k in kept:
            out[k] = _word(r, 5, 12)
        for k in dropped:
            out[k] = _text(r, r.randint(30, 80))
        return out

    return item, [
        f"keep items[*].id, {', '.join(_p(k) for k in kept)}",
        f"hash {', '.join(_p(k) for k in hashed)}",
        f"mask {_p(masked[0])} last 4",
        f"mask {_p(masked[1])} first 3",
        f"mask {_p(masked[2])} first 2 last 2",
        f"generalize {', '.join(_p(k) for k in prefixed)} prefix 3",
        f"generalize {', '.join(_p(k) for k in bucketed)} bucket 1000",
        f"generalize {', '.join(_p(k) for k in rounded)} round 1",
        f"generalize {_p(dated_m)} month",
        f"generalize {_p(dated_y)} year",
        f"generalize {_p(ipf)} ip",
        f"null {_p(nulled)}",
        f'replace {_p(replaced)} with "redacted"',
    ]


def _long_strings(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    fields = nm.many(5)
    kept = fields[:2]

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for k in fields:
            out[k] = _text(r, r.randint(100, 450))
        return out

    return item, [f"keep items[*].id, {', '.join(_p(k) for k in kept)}"]


def _numbers(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    scalars = nm.many(24)
    samples, counts, stats = nm(), nm(), nm()
    stat_keys = nm.many(6)

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for i, k in enumerate(scalars):
            out[k] = r.randint(-(10 ** 9), 10 ** 9) if i % 2 else r.uniform(-1e6, 1e6)
        out[samples] = [r.uniform(0, 1) for _ in range(r.randint(20, 40))]
        out[counts] = [r.randint(0, 10 ** 6) for _ in range(r.randint(15, 30))]
        out[stats] = {k: r.gauss(0, 100) for k in stat_keys}
        return out

    keeps = ["items[*].id", *(_p(k) for k in scalars[:8]), _p(counts), _p(stats, stat_keys[0])]
    return item, [f"keep {', '.join(keeps)}"]


def _mostly_kept(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    fields = nm.many(18)
    profile, prof_keys, secret = nm(), nm.many(6), nm()
    dropped = fields[-2:]

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for k in fields:
            out[k] = _scalar(r) if r.random() < 0.5 else _text(r, r.randint(10, 40))
        out[profile] = {k: _word(r, 4, 14) for k in prof_keys}
        out[profile][secret] = _word(r, 16, 16)
        return out

    return item, [f"keep items[*].id, {', '.join(_p(k) for k in fields[:-2])}",
                  f"keep {_p(profile)}",
                  f"drop {_p(profile, secret)}, {', '.join(_p(k) for k in dropped)}"]


def _unknown_keys(rng: random.Random) -> tuple[Callable[[random.Random, str], Item], list[str]]:
    nm = _Names(rng)
    top, sub, arr = nm.many(6), nm(), nm()
    sub_keys, elem_keys = nm.many(4), nm.many(3)
    pool = nm.many(40)  # keys the plan does not name, picked at random per item and level

    def extra(r: random.Random, node: Item, k: int) -> None:
        for key in r.sample(pool, k):
            node[key] = _scalar(r) if r.random() < 0.7 else {_word(r, 3, 6): _scalar(r)}

    def item(r: random.Random, sid: str) -> Item:
        out: Item = {"id": sid}
        for k in top:
            if r.random() < 0.85:  # named keys are sometimes absent
                out[k] = _scalar(r)
        extra(r, out, r.randint(4, 10))
        s: Item = {k: _word(r) for k in sub_keys if r.random() < 0.9}
        extra(r, s, r.randint(1, 5))
        out[sub] = s
        elems = []
        for _ in range(r.randint(2, 5)):
            e: Item = {k: _scalar(r) for k in elem_keys}
            extra(r, e, r.randint(0, 3))
            elems.append(e)
        out[arr] = elems
        keys = list(out)
        r.shuffle(keys)  # the order of keys varies too
        return {k: out[k] for k in keys}

    keeps = ["items[*].id", *(_p(k) for k in top[:3]), *(_p(sub, k) for k in sub_keys[:2]),
             *(f"{_p(arr)}[*].{k}" for k in elem_keys[:2])]
    return item, [f"keep {', '.join(keeps)}", f"drop {_p(top[3])}"]


_BUILDERS: dict[str, tuple[str, Builder]] = {
    "issue": ("a dozen fields, most dropped, history[*].track kept, one hashed", _issue),
    "wide_dropped": ("~60 fields per item, a handful kept", _wide_dropped),
    "deep": ("nested 8-9 levels, leaves kept deep down", _deep),
    "nested_arrays": ("arrays in arrays kept in part", _nested_arrays),
    "transforms": ("a dozen transformed fields per item", _transforms),
    "long_strings": ("a few long strings per item, some kept", _long_strings),
    "numbers": ("number-heavy items", _numbers),
    "mostly_kept": ("most fields kept", _mostly_kept),
    "unknown_keys": ("named and unnamed keys at every level", _unknown_keys),
}


# ---------------------------------------------------------------- policy text

def key_hash(key: str = SHAPE_KEY) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def policy_text(name: str, statements: list[str]) -> str:
    """A complete policy set in one file: the bench caller, one consent-based purpose, the list route."""
    body = "\n".join(f"    {s}" for s in statements)
    return f'''# veil bench shape "{name}" (generated by veil.bench.shapes)
policy "bench-{name.replace("_", "-")}" version "1"

caller bench {{
  description "veil bench load generator"
  key sha256:{key_hash()}
  may bench.{name}
}}

purpose bench.{name} {{
  description "veil bench: the {name} shape"
  basis consent
  consent "{CONSENT_KEY}"
  processing profiling
  gpc ignore
  retention 1 month
  recipients "veil bench"
}}

route GET /shapes/{name} {{
  each items[*] subject id

  for bench.{name} {{
{body}
  }}
}}
'''


# ---------------------------------------------------------------- the corpus

def _consented(rng: random.Random, subjects: list[str]) -> frozenset[str]:
    unique = list(dict.fromkeys(subjects))
    return frozenset(rng.sample(unique, round(CONSENTED_SHARE * len(unique))))


def _make(name: str, seed: int, items: int) -> Shape:
    # one generator per (seed, shape): a shape's contents do not depend on which other shapes are built
    rng = random.Random(f"veil-bench-shape:{seed}:{name}")
    if name == "demo":
        return _demo(rng, items)
    title, build = _BUILDERS[name]
    item, statements = build(rng)
    subjects = [_subject(rng) for _ in range(items)]
    body = orjson.dumps({"items": [item(rng, s) for s in subjects]})
    return Shape(name, title, body, {f"{name}.veil": policy_text(name, statements)},
                 f"/shapes/{name}?limit={items}",
                 (("Veil-Key", SHAPE_KEY), ("Veil-Purpose", f"bench.{name}")), tuple(subjects),
                 _consented(rng, subjects))


def demo_body(items: int = 1000) -> bytes:
    """The list the fast upstream serves at /customers: the demo's customers (the demo's own seed)."""
    from veil.demo.data import generate_customers, serialize

    return b'{"items":[' + b",".join(serialize(c) for c in generate_customers(items)) + b"]}"


def _demo(rng: random.Random, items: int) -> Shape:
    from veil.demo import policies_dir
    from veil.demo.data import customer_id

    folder = policies_dir()
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix in (".veil", ".yaml")}
    subjects = [customer_id(i) for i in range(items)]
    return Shape("demo", "the demo's customers, example policies", demo_body(items), files,
                 f"/customers?limit={items}",
                 (("Veil-Key", "demo-storefront-key"), ("Veil-Purpose", "personalize.recommendations")),
                 tuple(subjects), _consented(rng, subjects), consent_key="personalization")


def build(name: str, seed: int = 1, items: int = 1000, *, count: bool = True) -> Shape:
    """One shape; `count` runs it through the request flow to fill in the leaf counts."""
    if name not in SHAPES:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    if items < 1:
        raise ValueError("items must be >= 1")
    shape = _make(name, seed, items)
    if not count:
        return shape
    kept, dropped, transformed = leaf_counts(shape)
    return replace(shape, kept_leaves=kept, dropped_leaves=dropped, transformed_leaves=transformed)


def corpus(seed: int = 1, items: int = 1000, names: tuple[str, ...] = SHAPES, *, count: bool = True) -> list[Shape]:
    """The shapes named (default: all, in SHAPES order), seeded; `items` per list."""
    return [build(n, seed, items, count=count) for n in names]
