"""The PostgreSQL consent schema: migrations and statements. `{s}` is the (quoted) schema name.

Migrations run in order inside one transaction holding `pg_advisory_xact_lock`, so replicas may all
call `migrate()` at start-up. Applied versions are rows of `veil_schema_version`. Version 2 adds
`key_id` to both tables: the id of the store key that produced `subject_hash` (NULL for rows written
before it existed, or by an outside writer that does not set it). Version 3 adds `veil_members`.
"""

from __future__ import annotations

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {s}.veil_schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE {s}.consent_events (
            seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id       uuid        NOT NULL UNIQUE,
            subject_hash   text        NOT NULL,
            consent_key    text        NOT NULL,
            action         text        NOT NULL CHECK (action IN ('given', 'withdrawn')),
            at             timestamptz NOT NULL,
            source         text        NOT NULL,
            method         text        NOT NULL,
            notice_version integer,
            expires_at     timestamptz,
            jurisdiction   text,
            purposes       jsonb       NOT NULL DEFAULT '[]',
            recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX consent_events_subject ON {s}.consent_events (subject_hash, at, seq);
        CREATE TABLE {s}.consent_current (
            subject_hash   text        NOT NULL,
            consent_key    text        NOT NULL,
            action         text        NOT NULL,
            at             timestamptz NOT NULL,
            notice_version integer,
            expires_at     timestamptz,
            source         text,
            event_seq      bigint      NOT NULL,
            PRIMARY KEY (subject_hash, consent_key)
        );
        CREATE TABLE {s}.veil_import_progress (
            file_key   text        PRIMARY KEY,
            line       bigint      NOT NULL,
            done       boolean     NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE {s}.consent_events ADD COLUMN key_id text;
        ALTER TABLE {s}.consent_current ADD COLUMN key_id text;
        """,
    ),
    (
        3,
        # the processes serving from a cache, for writes that wait for their acknowledgement
        # (veil.consent.pg_peers): a heartbeat moves seen_at every lease / 3 seconds
        """
        CREATE TABLE {s}.veil_members (
            member_id  text             PRIMARY KEY,
            name       text             NOT NULL,
            cache_ttl  double precision NOT NULL,
            lease      double precision NOT NULL,
            started_at timestamptz      NOT NULL DEFAULT now(),
            seen_at    timestamptz      NOT NULL DEFAULT now()
        );
        """,
    ),
)

_CURRENT_UPSERT = """
ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
    action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
    expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq,
    key_id = excluded.key_id
WHERE excluded.at >= c.at
"""

# One statement per event: append (idempotent on event_id) and move the derived current state.
RECORD = """
WITH ins AS (
    INSERT INTO {s}.consent_events (event_id, subject_hash, consent_key, action, at, source, method,
        notice_version, expires_at, jurisdiction, purposes, key_id)
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING seq, subject_hash, consent_key, action, at, notice_version, expires_at, source, key_id
)
INSERT INTO {s}.consent_current AS c (subject_hash, consent_key, action, at, notice_version, expires_at,
    source, event_seq, key_id)
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source, seq, key_id FROM ins
""" + _CURRENT_UPSERT

BATCH_TABLE = """
CREATE TEMP TABLE veil_import_batch (
    line bigint, event_id uuid, subject_hash text, consent_key text, action text, at timestamptz,
    source text, method text, notice_version integer, expires_at timestamptz, jurisdiction text,
    purposes jsonb
) ON COMMIT DROP
"""
BATCH_COLUMNS = (
    "line", "event_id", "subject_hash", "consent_key", "action", "at", "source", "method",
    "notice_version", "expires_at", "jurisdiction", "purposes",
)

BATCH_APPLY = """
WITH ins AS (
    INSERT INTO {s}.consent_events (event_id, subject_hash, consent_key, action, at, source, method,
        notice_version, expires_at, jurisdiction, purposes, key_id)
    SELECT coalesce(event_id, gen_random_uuid()), subject_hash, consent_key, action, at, source, method,
        notice_version, expires_at, jurisdiction, purposes, $1::text
    FROM veil_import_batch ORDER BY line
    ON CONFLICT (event_id) DO NOTHING
    RETURNING seq, subject_hash, consent_key, action, at, notice_version, expires_at, source, key_id
)
INSERT INTO {s}.consent_current AS c (subject_hash, consent_key, action, at, notice_version, expires_at,
    source, event_seq, key_id)
SELECT DISTINCT ON (subject_hash, consent_key)
    subject_hash, consent_key, action, at, notice_version, expires_at, source, seq, key_id
FROM ins ORDER BY subject_hash, consent_key, at DESC, seq DESC
""" + _CURRENT_UPSERT

SELECT_CURRENT = """
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source, event_seq
FROM {s}.consent_current
WHERE subject_hash = ANY($1::text[]) AND consent_key = ANY($2::text[])
"""

SELECT_HISTORY = """
SELECT seq, event_id::text, subject_hash, consent_key, action, at, source, method, notice_version,
    expires_at, jurisdiction, purposes::text, recorded_at
FROM {s}.consent_events WHERE subject_hash = ANY($1::text[]) ORDER BY at, seq
"""

# Re-key in one statement (one round trip, atomic): $1 older-key hashes, $2 the same subjects'
# current-key hashes, $3 the current key id, $4 the NOTIFY channel, $5 the most hashes notified one by
# one (more: one "*"). Current rows move by DELETE … RETURNING into an upsert on the current hash (the
# later `at` wins, ties to the later write); events are updated in place; the old and new hash of every
# subject moved are notified (at commit). Idempotent: a concurrent re-key of the same rows finds
# nothing left to move.
REKEY = """
WITH m AS (
    SELECT DISTINCT o AS old_hash, n AS new_hash
    FROM unnest($1::text[], $2::text[]) AS t(o, n) WHERE o <> n
), moved AS (
    DELETE FROM {s}.consent_current AS c USING m WHERE c.subject_hash = m.old_hash
    RETURNING m.old_hash, m.new_hash, c.consent_key, c.action, c.at, c.notice_version, c.expires_at,
        c.source, c.event_seq
), merged AS (
    INSERT INTO {s}.consent_current AS c (subject_hash, consent_key, action, at, notice_version,
        expires_at, source, event_seq, key_id)
    SELECT DISTINCT ON (new_hash, consent_key)
        new_hash, consent_key, action, at, notice_version, expires_at, source, event_seq, $3::text
    FROM moved ORDER BY new_hash, consent_key, at DESC, event_seq DESC
    ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
        action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
        expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq,
        key_id = excluded.key_id
    WHERE (excluded.at, excluded.event_seq) > (c.at, c.event_seq)
    RETURNING 1
), events AS (
    UPDATE {s}.consent_events AS e SET subject_hash = m.new_hash, key_id = $3::text
    FROM m WHERE e.subject_hash = m.old_hash
    RETURNING m.old_hash, m.new_hash
), touched AS (
    SELECT old_hash AS h FROM moved UNION SELECT new_hash FROM moved
    UNION SELECT old_hash FROM events UNION SELECT new_hash FROM events
), notified AS (
    SELECT pg_notify($4::text, h) FROM touched WHERE (SELECT count(*) FROM touched) <= $5
    UNION ALL
    SELECT pg_notify($4::text, '*') WHERE (SELECT count(*) FROM touched) > $5  -- ALL_SUBJECTS
)
SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM moved), (SELECT count(*) FROM merged),
    (SELECT count(*) FROM notified)
"""

# $1 current-key hashes, $2 the current key id: rows with no key id that sit under a current hash.
LABEL = """
WITH e AS (
    UPDATE {s}.consent_events SET key_id = $2 WHERE subject_hash = ANY($1::text[]) AND key_id IS NULL
    RETURNING 1
), c AS (
    UPDATE {s}.consent_current SET key_id = $2 WHERE subject_hash = ANY($1::text[]) AND key_id IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM c)
"""

KEY_COUNTS = """
SELECT 'events', key_id, count(*) FROM {s}.consent_events GROUP BY key_id
UNION ALL
SELECT 'current', key_id, count(*) FROM {s}.consent_current GROUP BY key_id
"""

NOTIFY = "SELECT pg_notify($1, h) FROM unnest($2::text[]) AS h"

MARK_GET = "SELECT line, done FROM {s}.veil_import_progress WHERE file_key = $1"
MARK_SET = """
INSERT INTO {s}.veil_import_progress (file_key, line, done, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (file_key) DO UPDATE SET line = excluded.line, done = excluded.done, updated_at = now()
"""
MARK_DELETE = "DELETE FROM {s}.veil_import_progress WHERE file_key = $1"
