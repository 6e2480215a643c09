-- The last read index goes: `(lesson, lesson_level, question, id)` of sql/0004, kept by
-- sql/0005 for the insights question pages.
--
-- Why: every index costs every written row. Measured on the benchmark machine (per-row
-- PostgreSQL CPU of 100-row `log_events_v4` calls): about 6.8 µs per row with the primary
-- key and the `event_id` key alone, 1.4 to 2.2 µs more for any further btree index, so
-- this pair cost the write ceiling about 15 to 25 %. Issue 12 allows 5 %.
--
-- The question pages no longer need it: the insights service answers them from the
-- aggregate it keeps in memory (insights/src/overview.rs), built and refreshed by primary
-- key, and reads a list page by `id = ANY(..)`. What still scans the table: a question
-- page with a search term or a date bound inside a day, and `export`, `forget`, `prune`
-- and the JSON API (`/api/answers`) with a lesson/level/question filter, which all page
-- by primary key and filter (a full pass: about a second per million rows).
--
-- DROP INDEX only: no table rewrite, nothing else changes.

DROP INDEX IF EXISTS public.loggingtable_question_idx;
DROP INDEX IF EXISTS public.loggingtable_test_question_idx;
