"""The SQLite consent schema and its migrations (applied in order, recorded in veil_schema_version).

Times are integer microseconds since the epoch (UTC). `consent_current` holds the latest event of each
(subject_hash, consent_key), maintained in the same transaction as the append to `consent_events`.
Version 2 adds `key_id` to both tables: the id of the store key that produced `subject_hash` (NULL for
rows written before it existed). Key rotation moves rows to the current key's hash (see the REKEY_*).
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
    (
        2,
        """
        ALTER TABLE consent_events ADD COLUMN key_id TEXT;
        ALTER TABLE consent_current ADD COLUMN key_id TEXT
        """,
    ),
)

INSERT_EVENT = """
INSERT INTO consent_events (event_id, subject_hash, consent_key, action, at, source, method,
    notice_version, expires_at, jurisdiction, purposes, key_id, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO NOTHING
"""

# Latest event wins: by `at`, ties to the later write. Out-of-order imports keep the newest state.
UPSERT_CURRENT = """
INSERT INTO consent_current (subject_hash, consent_key, action, at, notice_version, expires_at, source,
    event_seq, key_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
    action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
    expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq,
    key_id = excluded.key_id
WHERE excluded.at >= consent_current.at
"""

SELECT_CURRENT = """
SELECT subject_hash, consent_key, action, at, notice_version, expires_at, source, event_seq
FROM consent_current
WHERE subject_hash IN (SELECT value FROM json_each(?))
  AND consent_key IN (SELECT value FROM json_each(?))
"""

SELECT_HISTORY = """
SELECT seq, event_id, subject_hash, consent_key, action, at, source, method, notice_version, expires_at,
    jurisdiction, purposes, recorded_at
FROM consent_events WHERE subject_hash IN (SELECT value FROM json_each(?)) ORDER BY at, seq
"""

# Re-keying: the (old hash, current hash) moves of one call go into a temp table first.
REKEY_MAP = """
CREATE TEMP TABLE IF NOT EXISTS veil_rekey_map (old_hash TEXT PRIMARY KEY, new_hash TEXT NOT NULL)
"""
REKEY_MAP_FILL = "INSERT OR REPLACE INTO veil_rekey_map (old_hash, new_hash) VALUES (?, ?)"
REKEY_MAP_CLEAR = "DELETE FROM veil_rekey_map"

# Older-key current rows merge into the current hash: the later `at` wins, ties to the later write.
REKEY_CURRENT_MERGE = """
INSERT INTO consent_current (subject_hash, consent_key, action, at, notice_version, expires_at, source,
    event_seq, key_id)
SELECT m.new_hash, c.consent_key, c.action, c.at, c.notice_version, c.expires_at, c.source, c.event_seq, ?
FROM veil_rekey_map AS m JOIN consent_current AS c ON c.subject_hash = m.old_hash
WHERE true
ON CONFLICT (subject_hash, consent_key) DO UPDATE SET
    action = excluded.action, at = excluded.at, notice_version = excluded.notice_version,
    expires_at = excluded.expires_at, source = excluded.source, event_seq = excluded.event_seq,
    key_id = excluded.key_id
WHERE (excluded.at, excluded.event_seq) > (consent_current.at, consent_current.event_seq)
"""
REKEY_CURRENT_DELETE = """
DELETE FROM consent_current WHERE subject_hash IN (SELECT old_hash FROM veil_rekey_map)
"""
REKEY_EVENTS = """
UPDATE consent_events
SET subject_hash = (
        SELECT m.new_hash FROM veil_rekey_map AS m WHERE m.old_hash = consent_events.subject_hash
    ),
    key_id = ?
WHERE subject_hash IN (SELECT old_hash FROM veil_rekey_map)
"""
LABEL_EVENTS = """
UPDATE consent_events SET key_id = ?
WHERE key_id IS NULL AND subject_hash IN (SELECT value FROM json_each(?))
"""
LABEL_CURRENT = """
UPDATE consent_current SET key_id = ?
WHERE key_id IS NULL AND subject_hash IN (SELECT value FROM json_each(?))
"""

KEY_COUNTS = """
SELECT 'events', key_id, count(*) FROM consent_events GROUP BY key_id
UNION ALL
SELECT 'current', key_id, count(*) FROM consent_current GROUP BY key_id
"""
