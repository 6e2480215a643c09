-- The collector's write call, made cheaper (issue 11's throughput proof, issue 12's
-- write ceiling): `log_events_v4` has the arguments, verdicts and rules of
-- `log_events_v3` (sql/0004), and the read indexes that cost every write more than they
-- save are dropped.
--
-- 1. When every event of a call is for one table (the usual group: lessons send to
--    production or, while being written, to test), the events are inserted by one
--    plain `INSERT ... SELECT FROM unnest ... ON CONFLICT (event_id) DO NOTHING`:
--    no materialized CTE, no window function, nothing computed for the other table.
--    `ON CONFLICT DO NOTHING` in request order keeps the first occurrence of an id
--    repeated within the call, as v3's `row_number() = 1` did. A call mixing both
--    tables is handed to `log_events_v3` whole (a repeated id across the two tables
--    must be judged against its first occurrence, whichever table that is).
-- 2. When every event was written (the count of inserted rows equals the number of
--    events) the verdicts are `written` without a further query; otherwise v3's
--    verdict query, unchanged.
-- 3. `received_at` and `learner_id` indexes (sql/0004) go: they only served the
--    maintenance commands (`forget`, `prune`, filtered `export`), which scan a million
--    rows in well under a second without them, while every written row paid for two
--    more index insertions. The question index stays: the insights question pages
--    read one question's rows through it.
--
-- Measured on the benchmark machine (docs/BENCHMARKS.md, "The write path after
-- sql/0005-0007"). `log_events_v3` stays: v4 hands it mixed calls, and collectors of the
-- previous release call it during a rolling upgrade. The migration needs no table rewrite: DROP INDEX and a
-- new function only.

DROP INDEX IF EXISTS public.loggingtable_learner_idx;
DROP INDEX IF EXISTS public.loggingtable_test_learner_idx;
DROP INDEX IF EXISTS public.loggingtable_received_idx;
DROP INDEX IF EXISTS public.loggingtable_test_received_idx;

CREATE FUNCTION public.log_events_v4(
    p_tests pg_catalog.bool[], p_event_ids pg_catalog.uuid[], p_client_times pg_catalog.timestamptz[],
    p_user_agents pg_catalog.text[], p_lessons pg_catalog.text[], p_levels pg_catalog.text[],
    p_questions pg_catalog.text[], p_answers pg_catalog.text[], p_learner_ids pg_catalog.uuid[]
) RETURNS TABLE (event_index pg_catalog.int4, status pg_catalog.text)
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
        RAISE EXCEPTION 'log_events_v4: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_position(p_tests, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'log_events_v4: every event must name its table (p_tests has a NULL)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 1. Insert.
    IF any_test AND any_production THEN
        -- Both tables in one call (rare: a group of production and test requests):
        -- v3's single statement, which judges an id repeated across the two tables
        -- against its first occurrence. v4 needs v3 for this; keep it while v4 is used.
        RETURN QUERY SELECT v3.event_index, v3.status FROM public.log_events_v3(
            p_tests, p_event_ids, p_client_times, p_user_agents, p_lessons, p_levels, p_questions, p_answers,
            p_learner_ids) AS v3;
        RETURN;
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
    IF COALESCE(written, 0) = n THEN
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
    public.log_events_v4(pg_catalog.bool[], pg_catalog.uuid[], pg_catalog.timestamptz[], pg_catalog.text[],
                         pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.uuid[])
FROM PUBLIC;
