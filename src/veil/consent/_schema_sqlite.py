"""The SQLite consent schema and its migrations (applied in order, recorded in veil_schema_version).

Times are integer microseconds since the epoch (UTC). `consent_current` holds the latest event of each
(subject_hash, consent_key), maintained in the same transaction as the append to `consent_events`.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE consent_events (
            seq            INTEGER PRIMARY KEY,
            event_id       TEXT    NOT NULL UNIQUE,
            subject_hash   TEXT    NOT NULL,
            consent_key    TEXT    NOT NULL,
            action         TEXT    NOT NULL CHECK (action IN ('given', 'withdrawn')),
            at             INTEGER NOT NULL,
            source         TEXT    NOT NULL,
            method         TEXT    NOT NULL,
            notice_version INTEGER,
            expires_at     INTEGER,
            jurisdiction   TEXT,
            purposes       TEXT    NOT NULL DEFAULT '[]',
            recorded_at    INTEGER NOT NULL
        );
        CREATE INDEX consent_events_subject ON consent_events (subject_hash, at, seq);
        CREATE TABLE consent_current (
            subject_hash   TEXT    NOT NULL,
            consent_key    TEXT    NOT NULL,
            action         TEXT    NOT NULL,
            at             INTEGER NOT NULL,
            notice_version INTEGER,
            expires_at     INTEGER,
            source         TEXT,
            event_seq      INTEGER NOT NULL,
            PRIMARY KEY (subject_hash, consent_key)
        ) WITHOUT ROWID;
        CREATE TABLE veil_import_progress (
            file_key   TEXT PRIMARY KEY,
            line       INTEGER NOT NULL,
            done       INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL
        );
        """,
    ),
)

INSERT_EVENT = """
INSERT INTO consent_events (event_id, subject_hash, consent_key, action, at, source, method,
    notice_version, expires_at, jurisdiction, purposes, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO NOTHING
"""

# Latest event wins: by `at`, ties to the later write. Out-of-order imports keep the newest state.
UPSERT_CURRENT = """
INSERT INTO consent_current (subject_hash, consent_key, action, at, notice_version, expires_at, source,
    event_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
    action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
    expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq
WHERE excluded.at >= consent_current.at
"""

SELECT_CURRENT = """
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source
FROM consent_current
WHERE subject_hash IN (SELECT value FROM json_each(?))
  AND consent_key IN (SELECT value FROM json_each(?))
"""

SELECT_HISTORY = """
SELECT seq, event_id, subject_hash, consent_key, action, at, source, method, notice_version, expires_at,
    jurisdiction, purposes, recorded_at
FROM consent_events WHERE subject_hash = ? ORDER BY at, seq
"""
