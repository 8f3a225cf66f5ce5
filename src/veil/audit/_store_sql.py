"""The decision-log store's tables in PostgreSQL (`{s}` is the quoted schema).

    audit_meta      key/value: the schema version and the partition width (fixed when created)
    audit_chains    one row per chain ever shipped: its identity (`genesis`: the mac of its first
                    record), the replica and local chain id it came from, how far it is shipped, and
                    the signed ship head (the chain must reach that seq with that mac)
    audit_records   one row per record, partitioned by RANGE (at): `line` is the record exactly as
                    the replica wrote it (what its MAC covers), `subjects` the pseudonyms it names
                    (GIN-indexed: the per-subject report), `prev_at` the previous record's `at` (its
                    primary key lookup in one partition), `at` the partition time (the record's time,
                    never earlier than the chain's previous record: a chain's partitions hold
                    consecutive seqs, so dropping the oldest partition removes a prefix of each chain)
    audit_pruned    signed prune markers: chain `genesis` lost its records up to `through_seq`
    audit_records_json  a view with each record as jsonb, for ad-hoc SQL

Why `line text` and not jsonb: jsonb normalizes numbers (1e300, 1.0), orders keys and refuses \\u0000
in strings; the MAC covers the exact canonical bytes, so verification reads the text the replica
wrote. `line::jsonb` (or the view) gives SQL access to every field.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

CREATE = [
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.audit_meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.audit_chains (
        chain_no bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        genesis text NOT NULL UNIQUE,
        replica text NOT NULL,
        chain text NOT NULL,
        shipped_seq bigint NOT NULL DEFAULT 0,
        shipped_mac text NOT NULL DEFAULT '',
        shipped_at timestamptz,
        head text,
        first_ship timestamptz NOT NULL DEFAULT now(),
        last_ship timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.audit_records (
        chain_no bigint NOT NULL,
        seq bigint NOT NULL,
        at timestamptz NOT NULL,
        prev_at timestamptz,
        kind text NOT NULL,
        subjects text[],
        line text NOT NULL,
        PRIMARY KEY (chain_no, seq, at)
    ) PARTITION BY RANGE (at)""",
    # fastupdate off: no pending list for every report query to scan (measured: 2 ms per partition after a
    # batch of inserts); each insert updates the index at once instead
    "CREATE INDEX IF NOT EXISTS audit_records_subjects ON {s}.audit_records USING gin (subjects) "
    "WITH (fastupdate = off)",
    """CREATE TABLE IF NOT EXISTS {s}.audit_pruned (
        chain_no bigint NOT NULL,
        through_seq bigint NOT NULL,
        marker text NOT NULL,
        pruned_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (chain_no, through_seq)
    )""",
    """CREATE OR REPLACE VIEW {s}.audit_records_json AS
        SELECT c.replica, c.chain, r.seq, r.at, r.kind, r.line::jsonb AS record
        FROM {s}.audit_records r JOIN {s}.audit_chains c USING (chain_no)""",
]

CHAIN_COLUMNS = ("chain_no, genesis, replica, chain, shipped_seq, shipped_mac, shipped_at, head, first_ship, "
                 "last_ship")
CHAIN_BY_GENESIS = f"SELECT {CHAIN_COLUMNS} FROM {{s}}.audit_chains WHERE genesis = $1"
CHAIN_FOR_UPDATE = f"SELECT {CHAIN_COLUMNS} FROM {{s}}.audit_chains WHERE chain_no = $1 FOR UPDATE"
CHAINS = f"SELECT {CHAIN_COLUMNS} FROM {{s}}.audit_chains ORDER BY replica, chain, chain_no"
REGISTER = """INSERT INTO {s}.audit_chains (genesis, replica, chain) VALUES ($1, $2, $3)
    ON CONFLICT (genesis) DO NOTHING"""
ADVANCE = f"""UPDATE {{s}}.audit_chains SET shipped_seq = $2, shipped_mac = $3, shipped_at = $4, head = $5,
    replica = $6, last_ship = now() WHERE chain_no = $1 RETURNING {CHAIN_COLUMNS}"""
RECORD_COLUMNS = ("chain_no", "seq", "at", "prev_at", "kind", "subjects", "line")

# A chain's records after a seq, in seq order (keyset pages: verification streams 10M rows this way).
PAGE = "SELECT seq, line FROM {s}.audit_records WHERE chain_no = $1 AND seq > $2 ORDER BY seq LIMIT $3"
COUNTS = "SELECT chain_no, count(*) FROM {s}.audit_records GROUP BY chain_no"
MARKERS = """SELECT DISTINCT ON (chain_no) chain_no, through_seq, marker FROM {s}.audit_pruned
    ORDER BY chain_no, through_seq DESC"""
PRUNED_TOTALS = "SELECT chain_no, count(*) FROM {s}.audit_pruned GROUP BY chain_no"

# The per-subject report: the GIN index on subjects, then the chain each record belongs to.
BY_SUBJECT = """SELECT r.chain_no, r.seq, r.at, r.prev_at, r.line, c.replica, c.chain
    FROM {s}.audit_records r JOIN {s}.audit_chains c USING (chain_no)
    WHERE r.subjects && $1::text[] ORDER BY r.at, r.chain_no, r.seq"""
# The macs of the records before those found (what they must link to), asked of one partition by primary
# key (`prev_at` names the partition); the store unites one of these per partition.
MACS_IN_PARTITION = """(SELECT chain_no, seq, line::json ->> 'mac' AS mac FROM {s}.{name}
    WHERE (chain_no, seq) IN (SELECT * FROM unnest({a}::bigint[], {b}::bigint[])))"""

PARTITIONS = """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE p.relname = 'audit_records' AND n.nspname = $1 ORDER BY c.relname"""
CREATE_PARTITION = """CREATE TABLE IF NOT EXISTS {s}.{name} PARTITION OF {s}.audit_records
    FOR VALUES FROM ('{lo}') TO ('{hi}')"""
# What dropping a partition removes, per chain: the last record (its mac ends the prefix) and how many.
PARTITION_CHAINS = """SELECT DISTINCT ON (chain_no) chain_no, seq, line, count(*) OVER (PARTITION BY chain_no)
    FROM {s}.{name} ORDER BY chain_no, seq DESC"""
GENESES = "SELECT chain_no, genesis FROM {s}.audit_chains WHERE chain_no = ANY($1::bigint[])"
ADD_MARKER = "INSERT INTO {s}.audit_pruned (chain_no, through_seq, marker) VALUES ($1, $2, $3)"
DROP_PARTITION = "DROP TABLE {s}.{name}"
# Taken before a partition's chain tails are read for the prune markers: no record is shipped into it
# between the markers and the drop (a shipper waiting on the lock retries its batch after the drop).
LOCK_PARTITION = "LOCK TABLE {s}.{name} IN ACCESS EXCLUSIVE MODE"
