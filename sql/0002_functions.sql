-- Write functions: the only way the writer role can add rows.
--
-- All are SECURITY DEFINER (they run with the owner's rights, so the writer needs no
-- table privileges) with a fixed search_path (so a caller cannot shadow pg_catalog or
-- the tables with objects of its own). EXECUTE is revoked from PUBLIC here and granted
-- to the writer role by `hourofci-collector migrate --writer-role NAME`.

-- Original signature, kept for old callers: one production row.
CREATE OR REPLACE FUNCTION logging(
    user_agent TEXT, date_log DATE, time_log TIME, lesson VARCHAR(35),
    lesson_level VARCHAR(10), question VARCHAR(3), answer TEXT
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer)
    VALUES ($1, $2, $3, $4, $5, $6, $7);
$$;

-- Original signature, kept for old callers: one development (test) row.
CREATE OR REPLACE FUNCTION logging2(
    user_agent TEXT, date_log DATE, time_log TIME, lesson VARCHAR(35),
    lesson_level VARCHAR(10), question VARCHAR(3), answer TEXT
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    INSERT INTO public.loggingtable_test (user_agent, date_log, time_log, lesson, lesson_level, question, answer)
    VALUES ($1, $2, $3, $4, $5, $6, $7);
$$;

-- One event. True when a row was written, false when p_event_id was already stored.
-- date_log and time_log are both UTC and come from one instant (the transaction's).
CREATE OR REPLACE FUNCTION log_event(
    p_test boolean, p_event_id uuid, p_client_time timestamptz, p_user_agent text,
    p_lesson text, p_level text, p_question text, p_answer text
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    utc timestamp := now() AT TIME ZONE 'UTC';
    written integer;
BEGIN
    IF p_test THEN
        INSERT INTO public.loggingtable_test
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        VALUES (p_user_agent, utc::date, utc::time, p_lesson, p_level, p_question, p_answer, p_event_id, p_client_time)
        ON CONFLICT (event_id) DO NOTHING;
    ELSE
        INSERT INTO public.loggingtable
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
        VALUES (p_user_agent, utc::date, utc::time, p_lesson, p_level, p_question, p_answer, p_event_id, p_client_time)
        ON CONFLICT (event_id) DO NOTHING;
    END IF;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written > 0;
END;
$$;

-- Many events in ONE statement (the collector's group-commit write path).
-- Returns the event ids that were new; rows with a NULL id are always written and come
-- back as NULL. A repeated id within one call is written once.
CREATE OR REPLACE FUNCTION log_events(
    p_test boolean, p_event_ids uuid[], p_client_times timestamptz[], p_user_agents text[],
    p_lessons text[], p_levels text[], p_questions text[], p_answers text[]
) RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    utc timestamp := now() AT TIME ZONE 'UTC';
    n integer := cardinality(p_event_ids);
BEGIN
    -- unnest pads short arrays with NULLs; refuse instead of writing half-empty rows.
    IF cardinality(p_client_times) <> n OR cardinality(p_user_agents) <> n
       OR cardinality(p_lessons) <> n OR cardinality(p_levels) <> n
       OR cardinality(p_questions) <> n OR cardinality(p_answers) <> n THEN
        RAISE EXCEPTION 'log_events: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_test THEN
        RETURN QUERY
        WITH ins AS (
            INSERT INTO public.loggingtable_test
                (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
            SELECT u.user_agent, utc::date, utc::time, u.lesson, u.lesson_level, u.question, u.answer, u.event_id, u.client_time
            FROM unnest(p_event_ids, p_client_times, p_user_agents, p_lessons, p_levels, p_questions, p_answers)
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
            SELECT u.user_agent, utc::date, utc::time, u.lesson, u.lesson_level, u.question, u.answer, u.event_id, u.client_time
            FROM unnest(p_event_ids, p_client_times, p_user_agents, p_lessons, p_levels, p_questions, p_answers)
                AS u(event_id, client_time, user_agent, lesson, lesson_level, question, answer)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT ins.event_id FROM ins;
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION
    logging(TEXT, DATE, TIME, VARCHAR, VARCHAR, VARCHAR, TEXT),
    logging2(TEXT, DATE, TIME, VARCHAR, VARCHAR, VARCHAR, TEXT),
    log_event(boolean, uuid, timestamptz, text, text, text, text, text),
    log_events(boolean, uuid[], timestamptz[], text[], text[], text[], text[], text[])
FROM PUBLIC;
