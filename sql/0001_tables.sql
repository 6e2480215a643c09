-- The two learner-answer tables.
--
-- The first seven columns are the original service's, with their original types, so
-- existing analysis queries keep working. `CREATE TABLE IF NOT EXISTS` plus
-- `ADD COLUMN IF NOT EXISTS` lets this migration upgrade an original database in place:
-- old rows get an `id`, a NULL `event_id`/`client_time`, and `received_at` = migration time.

CREATE TABLE IF NOT EXISTS loggingtable (
    user_agent   TEXT,
    date_log     DATE,
    time_log     TIME,
    lesson       VARCHAR(35),
    lesson_level VARCHAR(10),
    question     VARCHAR(3),
    answer       TEXT
);

CREATE TABLE IF NOT EXISTS loggingtable_test (
    user_agent   TEXT,
    date_log     DATE,
    time_log     TIME,
    lesson       VARCHAR(35),
    lesson_level VARCHAR(10),
    question     VARCHAR(3),
    answer       TEXT
);

ALTER TABLE loggingtable
    ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The client's Idempotency-Key; NULL for legacy GETs (they have none).
    ADD COLUMN IF NOT EXISTS event_id uuid UNIQUE,
    -- When the learner acted, by the browser's clock (may be long before received_at).
    ADD COLUMN IF NOT EXISTS client_time timestamptz,
    ADD COLUMN IF NOT EXISTS received_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE loggingtable_test
    ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN IF NOT EXISTS event_id uuid UNIQUE,
    ADD COLUMN IF NOT EXISTS client_time timestamptz,
    ADD COLUMN IF NOT EXISTS received_at timestamptz NOT NULL DEFAULT now();

-- Nobody but the owner (the admin role) touches the tables directly; the writer role
-- goes through the SECURITY DEFINER functions of the next migration. The original
-- set-up granted INSERT to the writer, so take that back too.
REVOKE ALL ON TABLE loggingtable, loggingtable_test FROM PUBLIC;
