"""The PostgreSQL consent schema: migrations and statements. `{s}` is the (quoted) schema name.

Migrations run in order inside one transaction holding `pg_advisory_xact_lock`, so replicas may all
call `migrate()` at start-up. Applied versions are rows of `veil_schema_version`.
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
)

_CURRENT_UPSERT = """
ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
    action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
    expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq
WHERE excluded.at >= c.at
"""

# One statement per event: append (idempotent on event_id) and move the derived current state.
RECORD = """
WITH ins AS (
    INSERT INTO {s}.consent_events (event_id, subject_hash, consent_key, action, at, source, method,
        notice_version, expires_at, jurisdiction, purposes)
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING seq, subject_hash, consent_key, action, at, notice_version, expires_at, source
)
INSERT INTO {s}.consent_current AS c (subject_hash, consent_key, action, at, notice_version, expires_at,
    source, event_seq)
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source, seq FROM ins
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
        notice_version, expires_at, jurisdiction, purposes)
    SELECT coalesce(event_id, gen_random_uuid()), subject_hash, consent_key, action, at, source, method,
        notice_version, expires_at, jurisdiction, purposes
    FROM veil_import_batch ORDER BY line
    ON CONFLICT (event_id) DO NOTHING
    RETURNING seq, subject_hash, consent_key, action, at, notice_version, expires_at, source
)
INSERT INTO {s}.consent_current AS c (subject_hash, consent_key, action, at, notice_version, expires_at,
    source, event_seq)
SELECT DISTINCT ON (subject_hash, consent_key)
    subject_hash, consent_key, action, at, notice_version, expires_at, source, seq
FROM ins ORDER BY subject_hash, consent_key, at DESC, seq DESC
""" + _CURRENT_UPSERT

SELECT_CURRENT = """
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source
FROM {s}.consent_current
WHERE subject_hash = ANY($1::text[]) AND consent_key = ANY($2::text[])
"""

SELECT_HISTORY = """
SELECT seq, event_id::text, subject_hash, consent_key, action, at, source, method, notice_version,
    expires_at, jurisdiction, purposes::text, recorded_at
FROM {s}.consent_events WHERE subject_hash = $1 ORDER BY at, seq
"""

NOTIFY = "SELECT pg_notify($1, h) FROM unnest($2::text[]) AS h"

MARK_GET = "SELECT line, done FROM {s}.veil_import_progress WHERE file_key = $1"
MARK_SET = """
INSERT INTO {s}.veil_import_progress (file_key, line, done, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (file_key) DO UPDATE SET line = excluded.line, done = excluded.done, updated_at = now()
"""
MARK_DELETE = "DELETE FROM {s}.veil_import_progress WHERE file_key = $1"
