-- The pseudonymous learner id, and the indexes the read side (insights, export,
-- forget, prune) needs.
--
-- `learner_id` is a random UUID the SDK creates once per browser profile (or a lesson
-- kit's salted hash of a hub user name, as a UUID). NULL for legacy requests and for
-- every row stored before this migration: those rows only have `user_agent`, which many
-- learners share. It is not part of an event's content when a repeated id is judged
-- (duplicate or conflict): a retry from a queue filled before the SDK sent learner ids
-- must stay a duplicate.
--
-- `log_events_v3` is `log_events_v2` (0003) with one more array, the learner ids, under
-- the same rules: `SET search_path = pg_catalog, pg_temp`, every name schema-qualified,
-- SECURITY DEFINER, EXECUTE for the writer only (granted by `hourofci-collector migrate`).
--
-- The indexes are built in this migration's transaction: on a large table the writes
-- wait for the build (seconds per million rows); run migrate at a quiet time.

ALTER TABLE public.loggingtable ADD COLUMN IF NOT EXISTS learner_id pg_catalog.uuid;
ALTER TABLE public.loggingtable_test ADD COLUMN IF NOT EXISTS learner_id pg_catalog.uuid;

-- Overview and question pages, export filters: per question, in id order.
CREATE INDEX IF NOT EXISTS loggingtable_question_idx ON public.loggingtable (lesson, lesson_level, question, id);
CREATE INDEX IF NOT EXISTS loggingtable_test_question_idx ON public.loggingtable_test (lesson, lesson_level, question, id);
-- forget --learner.
CREATE INDEX IF NOT EXISTS loggingtable_learner_idx ON public.loggingtable (learner_id) WHERE learner_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS loggingtable_test_learner_idx ON public.loggingtable_test (learner_id) WHERE learner_id IS NOT NULL;
-- Date ranges, export --since/--until, prune --before.
CREATE INDEX IF NOT EXISTS loggingtable_received_idx ON public.loggingtable (received_at);
CREATE INDEX IF NOT EXISTS loggingtable_test_received_idx ON public.loggingtable_test (received_at);

-- log_events_v2 with the learner ids; same verdicts (see 0003).
CREATE FUNCTION public.log_events_v3(
    p_tests pg_catalog.bool[], p_event_ids pg_catalog.uuid[], p_client_times pg_catalog.timestamptz[],
    p_user_agents pg_catalog.text[], p_lessons pg_catalog.text[], p_levels pg_catalog.text[],
    p_questions pg_catalog.text[], p_answers pg_catalog.text[], p_learner_ids pg_catalog.uuid[]
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
       OR pg_catalog.cardinality(p_answers) <> n
       OR pg_catalog.cardinality(p_learner_ids) <> n THEN
        RAISE EXCEPTION 'log_events_v3: arrays must all have % elements', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 1. Insert the first occurrence of each id (and every id-less event) into its
    --    table, unless the id is already stored in the other table.
    WITH input AS (
        SELECT u.*,
               u.ev_id IS NULL OR pg_catalog.row_number() OVER (PARTITION BY u.ev_id ORDER BY u.ev_index) = 1 AS is_first
        FROM ROWS FROM (pg_catalog.unnest(p_tests), pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_client_times), pg_catalog.unnest(p_user_agents), pg_catalog.unnest(p_lessons), pg_catalog.unnest(p_levels), pg_catalog.unnest(p_questions), pg_catalog.unnest(p_answers), pg_catalog.unnest(p_learner_ids))
            WITH ORDINALITY AS u(ev_test, ev_id, ev_client_time, ev_user_agent, ev_lesson, ev_level, ev_question, ev_answer, ev_learner_id, ev_index)
    ),
    ins_prod AS (
        INSERT INTO public.loggingtable
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
        SELECT i.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, i.ev_lesson, i.ev_level, i.ev_question,
               i.ev_answer, i.ev_id, i.ev_client_time, i.ev_learner_id
        FROM input i
        WHERE i.is_first AND NOT i.ev_test
          AND NOT EXISTS (SELECT 1 FROM public.loggingtable_test o WHERE o.event_id = i.ev_id)
        ORDER BY i.ev_index  -- rows get their identity ids in request order
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ),
    ins_test AS (
        INSERT INTO public.loggingtable_test
            (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
        SELECT i.ev_user_agent, utc::pg_catalog.date, utc::pg_catalog.time, i.ev_lesson, i.ev_level, i.ev_question,
               i.ev_answer, i.ev_id, i.ev_client_time, i.ev_learner_id
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
    public.log_events_v3(pg_catalog.bool[], pg_catalog.uuid[], pg_catalog.timestamptz[], pg_catalog.text[],
                         pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.text[], pg_catalog.uuid[])
FROM PUBLIC;
