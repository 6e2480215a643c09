-- Write functions that a caller cannot hijack, and per-event verdicts with conflicts.
--
-- 0002 set `search_path = pg_catalog, public`. Without `pg_temp` in the list,
-- PostgreSQL searches the caller's temporary schema FIRST for tables and types, so a
-- writer session allowed to create temporary objects could shadow a type a function
-- body names (say a domain `pg_temp."timestamp"` whose CHECK calls the writer's own
-- function) and run code with the owner's rights. And where PUBLIC may CREATE in
-- `public` (PostgreSQL 14 and older, and databases upgraded from them), a writer's
-- `public.cardinality(timestamptz[])` beats `pg_catalog.cardinality(anyarray)`: an
-- exact argument type wins over a polymorphic one whatever the search_path order.
--
-- So every SECURITY DEFINER function is redefined here with
-- `SET search_path = pg_catalog, pg_temp` (pg_temp last, where it is searched last and
-- never for functions or operators) and names every table, type and function it uses
-- with its schema. `hourofci-collector migrate` also revokes CREATE on `public` and
-- TEMPORARY on the database from PUBLIC and refuses to finish while the writer role
-- could create objects at all. 0001 and 0002 are applied in production and never edited.
--
-- Several arrays are zipped with `ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b))`:
-- the short form `unnest(a, b)` is syntax, not a function that can be schema-qualified.
--
-- CREATE OR REPLACE keeps each function's owner and its grants.

CREATE OR REPLACE FUNCTION public.logging(
    user_agent pg_catalog.text, date_log pg_catalog.date, time_log pg_catalog.time,
    lesson pg_catalog.varchar(35), lesson_level pg_catalog.varchar(10), question pg_catalog.varchar(3),
    answer pg_catalog.text
) RETURNS pg_catalog.void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO public.loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer)
    VALUES ($1, $2, $3, $4, $5, $6, $7);
$$;

CREATE OR REPLACE FUNCTION public.logging2(
    user_agent pg_catalog.text, date_log pg_catalog.date, time_log pg_catalog.time,
    lesson pg_catalog.varchar(35), lesson_level pg_catalog.varchar(10), question pg_catalog.varchar(3),
    answer pg_catalog.text
) RETURNS pg_catalog.void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO public.loggingtable_test (user_agent, date_log, time_log, lesson, lesson_level, question, answer)
    VALUES ($1, $2, $3, $4, $5, $6, $7);
$$;

-- Unchanged behaviour (kept for old callers): true when written, false when the id
-- was already stored in that table.
CREATE OR REPLACE FUNCTION public.log_event(
    p_test pg_catalog.bool, p_event_id pg_catalog.uuid, p_client_time pg_catalog.timestamptz,
    p_user_agent pg_catalog.text, p_lesson pg_catalog.text, p_level pg_catalog.text,
    p_question pg_catalog.text, p_answer pg_catalog.text
) RETURNS pg_catalog.bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    utc pg_catalog.timestamp := pg_catalog.timezone('UTC', pg_catalog.now());
    written pg_catalog.int4;
BEGIN
    IF p_test THEN
        INSERT INTO public.loggingtable_test
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        VALUES (p_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, p_lesson, p_level, p_question, p_answer,
                p_event_id, p_client_time)
        ON CONFLICT (event_id) DO NOTHING;
    ELSE
        INSERT INTO public.loggingtable
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        VALUES (p_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, p_lesson, p_level, p_question, p_answer,
                p_event_id, p_client_time)
        ON CONFLICT (event_id) DO NOTHING;
    END IF;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written > 0;
END;
$$;

-- Unchanged behaviour (kept for collectors older than log_events_v2).
CREATE OR REPLACE FUNCTION public.log_events(
    p_test pg_catalog.bool, p_event_ids pg_catalog.uuid[], p_client_times pg_catalog.timestamptz[],
    p_user_agents pg_catalog.text[], p_lessons pg_catalog.text[], p_levels pg_catalog.text[],
    p_questions pg_catalog.text[], p_answers pg_catalog.text[]
) RETURNS SETOF pg_catalog.uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    utc pg_catalog.timestamp := pg_catalog.timezone('UTC', pg_catalog.now());
    n pg_catalog.int4 := pg_catalog.cardinality(p_event_ids);
BEGIN
    IF pg_catalog.cardinality(p_client_times) <> n OR pg_catalog.cardinality(p_user_agents) <> n
       OR pg_catalog.cardinality(p_lessons) <> n OR pg_catalog.cardinality(p_levels) <> n
       OR pg_catalog.cardinality(p_questions) <> n OR pg_catalog.cardinality(p_answers) <> n THEN
        RAISE EXCEPTION 'log_events: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_test THEN
        RETURN QUERY
        WITH ins AS (
            INSERT INTO public.loggingtable_test
                (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
            SELECT u.user_agent, utc::pg_catalog.date, utc::pg_catalog.time, u.lesson, u.lesson_level, u.question,
                   u.answer, u.event_id, u.client_time
            FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers))
                AS u(event_id, client_time, user_agent, lesson, lesson_level, question, answer)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT ins.event_id FROM ins;
    ELSE
        RETURN QUERY
        WITH ins AS (
            INSERT INTO public.loggingtable
                (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
            SELECT u.user_agent, utc::pg_catalog.date, utc::pg_catalog.time, u.lesson, u.lesson_level, u.question,
                   u.answer, u.event_id, u.client_time
            FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers))
                AS u(event_id, client_time, user_agent, lesson, lesson_level, question, answer)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT ins.event_id FROM ins;
    END IF;
END;
$$;

-- The collector's write path: many events, each for either table, in ONE call, and a
-- verdict per event, by its 1-based position in the arrays:
--   written    a new row was stored;
--   duplicate  this id is stored with the same content (user agent, lesson, level,
--              question, answer, table): a retry, nothing changes;
--   conflict   this id is stored with different content, or in the other table: the
--              stored row is kept unchanged.
-- An event without id (a legacy GET) is always written. A repeated id within one call
-- is judged against its first occurrence. Ids compare as uuid, so in canonical form.
--
-- Two statements, because a row another transaction committed while the insert waited
-- on it is visible only to a later statement (READ COMMITTED). The other-table check
-- is not serialized against a concurrent insert of the same id into the other table;
-- a client sends an event to one table only, so only a client that forges ids could
-- meet that race, and it gains nothing from it.
CREATE FUNCTION public.log_events_v2(
    p_tests pg_catalog.bool[], p_event_ids pg_catalog.uuid[], p_client_times pg_catalog.timestamptz[],
    p_user_agents pg_catalog.text[], p_lessons pg_catalog.text[], p_levels pg_catalog.text[],
    p_questions pg_catalog.text[], p_answers pg_catalog.text[]
) RETURNS TABLE (event_index pg_catalog.int4, status pg_catalog.text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    utc pg_catalog.timestamp := pg_catalog.timezone('UTC', pg_catalog.now());
    n pg_catalog.int4 := pg_catalog.cardinality(p_event_ids);
    with_ids pg_catalog.int4 := pg_catalog.cardinality(pg_catalog.array_remove(p_event_ids, NULL));
    written_ids pg_catalog.uuid[];
BEGIN
    IF pg_catalog.cardinality(p_tests) <> n OR pg_catalog.cardinality(p_client_times) <> n
       OR pg_catalog.cardinality(p_user_agents) <> n OR pg_catalog.cardinality(p_lessons) <> n
       OR pg_catalog.cardinality(p_levels) <> n OR pg_catalog.cardinality(p_questions) <> n
       OR pg_catalog.cardinality(p_answers) <> n THEN
        RAISE EXCEPTION 'log_events_v2: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 1. Insert the first occurrence of each id (and every id-less event) into its
    --    table, unless the id is already stored in the other table.
    WITH input AS (
        SELECT u.*,
               u.ev_id IS NULL OR pg_catalog.row_number() OVER (PARTITION BY u.ev_id ORDER BY u.ev_index) = 1 AS is_first
        FROM ROWS FROM (pg_catalog.unnest(p_tests), pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers))
            WITH ORDINALITY AS u(ev_test, ev_id, ev_client_time, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_index)
    ),
    ins_prod AS (
        INSERT INTO public.loggingtable
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        SELECT i.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, i.ev_lesson, i.ev_level, i.ev_question,
               i.ev_answer, i.ev_id, i.ev_client_time
        FROM input i
        WHERE i.is_first AND NOT i.ev_test
          AND NOT EXISTS (SELECT 1 FROM public.loggingtable_test o WHERE o.event_id = i.ev_id)
        ORDER BY i.ev_index  -- rows get their identity ids in request order
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ),
    ins_test AS (
        INSERT INTO public.loggingtable_test
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        SELECT i.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, i.ev_lesson, i.ev_level, i.ev_question,
               i.ev_answer, i.ev_id, i.ev_client_time
        FROM input i
        WHERE i.is_first AND i.ev_test
          AND NOT EXISTS (SELECT 1 FROM public.loggingtable o WHERE o.event_id = i.ev_id)
        ORDER BY i.ev_index  -- rows get their identity ids in request order
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    )
    SELECT pg_catalog.array_agg(w.event_id) INTO written_ids
    FROM (SELECT p.event_id FROM ins_prod p UNION ALL SELECT t.event_id FROM ins_test t) w
    WHERE w.event_id IS NOT NULL;

    -- The usual case: every id was new (then none repeats), so every event is written.
    IF COALESCE(pg_catalog.cardinality(written_ids), 0) = with_ids THEN
        RETURN QUERY SELECT g::pg_catalog.int4, 'written'::pg_catalog.text FROM pg_catalog.generate_series(1, n) AS g;
        RETURN;
    END IF;

    -- 2. A verdict for every event; what step 1 did not write is compared with the row
    --    now stored under its id (ours, or one another transaction committed).
    RETURN QUERY
    WITH input AS (
        SELECT u.*,
               pg_catalog.row_number() OVER (PARTITION BY u.ev_id ORDER BY u.ev_index) = 1 AS is_first
        FROM ROWS FROM (pg_catalog.unnest(p_tests), pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers))
            WITH ORDINALITY AS u(ev_test, ev_id, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_index)
    )
    SELECT i.ev_index::pg_catalog.int4,
           CASE
               WHEN i.ev_id IS NULL THEN 'written'
               WHEN i.is_first AND w.id IS NOT NULL THEN 'written'
               WHEN NOT i.ev_test AND EXISTS (
                   SELECT 1 FROM public.loggingtable s
                   WHERE s.event_id = i.ev_id
                     AND s.user_agent IS NOT DISTINCT FROM i.ev_user_agent
                     AND s.lesson::pg_catalog.text IS NOT DISTINCT FROM i.ev_lesson
                     AND s.lesson_level::pg_catalog.text IS NOT DISTINCT FROM i.ev_level
                     AND s.question::pg_catalog.text IS NOT DISTINCT FROM i.ev_question
                     AND s.answer IS NOT DISTINCT FROM i.ev_answer) THEN 'duplicate'
               WHEN i.ev_test AND EXISTS (
                   SELECT 1 FROM public.loggingtable_test s
                   WHERE s.event_id = i.ev_id
                     AND s.user_agent IS NOT DISTINCT FROM i.ev_user_agent
                     AND s.lesson::pg_catalog.text IS NOT DISTINCT FROM i.ev_lesson
                     AND s.lesson_level::pg_catalog.text IS NOT DISTINCT FROM i.ev_level
                     AND s.question::pg_catalog.text IS NOT DISTINCT FROM i.ev_question
                     AND s.answer IS NOT DISTINCT FROM i.ev_answer) THEN 'duplicate'
               ELSE 'conflict'
           END
    FROM input i
    LEFT JOIN pg_catalog.unnest(written_ids) AS w(id) ON w.id = i.ev_id
    ORDER BY i.ev_index;
END;
$$;

REVOKE ALL ON FUNCTION
    public.log_events_v2(pg_catalog.bool[], pg_catalog.uuid[], pg_catalog.timestamptz[], pg_catalog.text[],
                         pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.text[])
FROM PUBLIC;
