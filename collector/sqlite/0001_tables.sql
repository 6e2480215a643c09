-- The embedded SQLite store's tables (`hourofci-collector --sqlite-path`), applied by
-- `sqlx::migrate!` as `sql/` is for PostgreSQL. Same columns, in the same order, as
-- PostgreSQL's sql/0001 + 0004 + 0005, with SQLite types: every value is TEXT (UUIDs
-- canonical, instants RFC 3339 in UTC, dates and times as the collector formats them);
-- collector/tests/schema_drift.rs fails when the two drift apart.
--
-- Applied migrations are never edited: a change is a new file (0002_...).
--
-- `IF NOT EXISTS` everywhere because files made before these migrations existed
-- already have the tables (they have no `_sqlx_migrations` table, so this migration
-- runs on them). Some of those lack `learner_id`: SQLite has no `ADD COLUMN IF NOT
-- EXISTS`, so the store adds it before the migrator runs (`add_learner_id_to_legacy_file`
-- in collector/src/store/sqlite.rs), and every file ends with this shape.

CREATE TABLE IF NOT EXISTS loggingtable (
    user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
    question TEXT, answer TEXT,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    client_time TEXT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    learner_id TEXT
);

CREATE TABLE IF NOT EXISTS loggingtable_test (
    user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
    question TEXT, answer TEXT,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    client_time TEXT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    learner_id TEXT
);

-- The insights question pages read one question's rows, in id order (sql/0004).
CREATE INDEX IF NOT EXISTS loggingtable_question_idx ON loggingtable (lesson, lesson_level, question, id);
CREATE INDEX IF NOT EXISTS loggingtable_test_question_idx ON loggingtable_test (lesson, lesson_level, question, id);

-- As sql/0005: the learner and received_at indexes served only the maintenance
-- commands and cost every write; files made while the collector built them lose them.
DROP INDEX IF EXISTS loggingtable_learner_idx;
DROP INDEX IF EXISTS loggingtable_test_learner_idx;
DROP INDEX IF EXISTS loggingtable_received_idx;
DROP INDEX IF EXISTS loggingtable_test_received_idx;
