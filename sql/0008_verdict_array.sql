-- The collector's write call answers in one value (issue 11's throughput proof):
-- `log_events_v5` takes the arguments of `log_events_v4` (sql/0005), keeps its rules
-- and verdicts, and returns them as ONE array, `verdicts[i]` for the i-th event
-- ('written', 'duplicate' or 'conflict'), instead of a set of (event_index, status) rows.
--
-- Why: at 64 connections a group holds a few events, so what a call costs beyond its
-- rows decides the single-event throughput. v4 answered every all-written call with a
-- second query (`RETURN QUERY ... generate_series`), run through SPI into a tuplestore
-- that the caller's set-returning scan then read back. Here that answer is one array
-- built in PL/pgSQL's simple-expression path, and the call is a plain scalar function.
-- Measured: PostgreSQL backend CPU per 2-event call, pgbench -M prepared
-- (docs/BENCHMARKS.md, "One array of verdicts").
--
-- Everything else is v4's: one plain `INSERT ... ON CONFLICT (event_id) DO NOTHING` in
-- request order for a call whose events all go to one table (the other table probed
-- for the id, so an id stored there is judged, not stored twice); a call mixing tables
-- handed to `log_events_v3`; the verdict query only when something was not written.
-- v4 and v3 stay: collectors of the previous release call v4 during a rolling upgrade,
-- and v5 hands mixed calls to v3.

CREATE FUNCTION public.log_events_v5(
    p_tests pg_catalog.bool[], p_event_ids pg_catalog.uuid[], p_client_times pg_catalog.timestamptz[],
    p_user_agents pg_catalog.text[], p_lessons pg_catalog.text[], p_levels pg_catalog.text[],
    p_questions pg_catalog.text[], p_answers pg_catalog.text[], p_learner_ids pg_catalog.uuid[]
) RETURNS pg_catalog.text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    utc pg_catalog.timestamp := pg_catalog.timezone('UTC', pg_catalog.now());
    n pg_catalog.int4 := pg_catalog.cardinality(p_event_ids);
    any_test pg_catalog.bool := true = ANY (p_tests);
    any_production pg_catalog.bool := false = ANY (p_tests);
    written pg_catalog.int4;
    written_ids pg_catalog.uuid[];
BEGIN
    IF pg_catalog.cardinality(p_tests) <> n OR pg_catalog.cardinality(p_client_times) <> n
       OR pg_catalog.cardinality(p_user_agents) <> n OR pg_catalog.cardinality(p_lessons) <> n
       OR pg_catalog.cardinality(p_levels) <> n OR pg_catalog.cardinality(p_questions) <> n
       OR pg_catalog.cardinality(p_answers) <> n
       OR pg_catalog.cardinality(p_learner_ids) <> n THEN
        RAISE EXCEPTION 'log_events_v5: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_position(p_tests, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'log_events_v5: every event must name its table (p_tests has a NULL)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN '{}'::pg_catalog.text[];
    END IF;

    -- 1. Insert.
    IF any_test AND any_production THEN
        -- Both tables in one call (rare): v3 judges an id repeated across the two
        -- tables against its first occurrence, whichever table that is.
        RETURN (SELECT pg_catalog.array_agg(v3.status ORDER BY v3.event_index)
                FROM public.log_events_v3(p_tests, p_event_ids, p_client_times, p_user_agents, p_lessons, p_levels,
                                          p_questions, p_answers, p_learner_ids) AS v3);
    ELSIF any_test THEN
        WITH ins AS (
            INSERT INTO public.loggingtable_test
                (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
            SELECT u.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, u.ev_lesson, u.ev_level, u.ev_question,
                   u.ev_answer, u.ev_id, u.ev_client_time, u.ev_learner_id
            FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers), pg_catalog.unnest(p_learner_ids))
                WITH ORDINALITY AS u(ev_id, ev_client_time, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_learner_id, ev_index)
            WHERE NOT EXISTS (SELECT 1 FROM public.loggingtable o WHERE o.event_id = u.ev_id)
            ORDER BY u.ev_index  -- rows get their identity ids in request order
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT pg_catalog.count(*)::pg_catalog.int4, pg_catalog.array_agg(ins.event_id) INTO written, written_ids
        FROM ins;
    ELSE
        WITH ins AS (
            INSERT INTO public.loggingtable
                (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
            SELECT u.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, u.ev_lesson, u.ev_level, u.ev_question,
                   u.ev_answer, u.ev_id, u.ev_client_time, u.ev_learner_id
            FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers), pg_catalog.unnest(p_learner_ids))
                WITH ORDINALITY AS u(ev_id, ev_client_time, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_learner_id, ev_index)
            WHERE NOT EXISTS (SELECT 1 FROM public.loggingtable_test o WHERE o.event_id = u.ev_id)
            ORDER BY u.ev_index  -- rows get their identity ids in request order
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT pg_catalog.count(*)::pg_catalog.int4, pg_catalog.array_agg(ins.event_id) INTO written, written_ids
        FROM ins;
    END IF;

    -- The usual case: every event was written (then no id repeats or was stored before).
    IF written = n THEN
        RETURN pg_catalog.array_fill('written'::pg_catalog.text, ARRAY[n]);
    END IF;

    -- 2. A verdict for every event; what step 1 did not write is compared with the row
    --    now stored under its id (ours, or one another transaction committed).
    RETURN (
        WITH input AS (
            SELECT u.*,
                   pg_catalog.row_number() OVER (PARTITION BY u.ev_id ORDER BY u.ev_index) = 1 AS is_first
            FROM ROWS FROM (pg_catalog.unnest(p_tests), pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers))
                WITH ORDINALITY AS u(ev_test, ev_id, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_index)
        )
        SELECT pg_catalog.array_agg(
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
               END ORDER BY i.ev_index)
        FROM input i
        LEFT JOIN pg_catalog.unnest(written_ids) AS w(id) ON w.id = i.ev_id
    );
END;
$$;

REVOKE ALL ON FUNCTION
    public.log_events_v5(pg_catalog.bool[], pg_catalog.uuid[], pg_catalog.timestamptz[], pg_catalog.text[],
                         pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.uuid[])
FROM PUBLIC;
