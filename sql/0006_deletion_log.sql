-- The deletion log: one row per statement that deleted, changed or truncated rows of
-- the two answer tables (`forget`, `prune`, or an admin's hand-written SQL).
--
-- Why: the insights service keeps the overview page's counts in memory and brings
-- them up to date by reading only rows with new ids. That cannot see a row disappear
-- or change; a new row in this log tells it to rebuild from the table instead.
--
-- It records what, when and how many, never whose: a deletion is often a learner's
-- request to be forgotten, so their learner id must not survive it here.
--
-- Written only by the statement-level triggers below, in the deleting statement's own
-- transaction. Their functions run with the rights of whoever deletes (not SECURITY
-- DEFINER: nothing here needs more): only the admin may delete answers, and a role that
-- could delete without the right to log it cannot delete at all. `forget` and `prune` name
-- themselves with `SET LOCAL hourofci.deletion_kind`; anything else is logged by its
-- operation (DELETE, UPDATE, TRUNCATE). The writer role has no right on this table
-- (it cannot delete or change answers either, so it never fires the triggers);
-- `migrate --reader-role` grants the reader SELECT. INSERT (the write path) fires
-- nothing: the write ceiling does not change.

CREATE TABLE public.deletion_log (
    id         pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    table_name pg_catalog.text NOT NULL,
    -- forget, prune, or DELETE / UPDATE / TRUNCATE for other statements.
    kind       pg_catalog.text NOT NULL,
    -- Rows deleted or changed; NULL for TRUNCATE (not counted).
    row_count  pg_catalog.int8
);

REVOKE ALL ON TABLE public.deletion_log FROM PUBLIC;

-- DELETE and UPDATE: count the statement's old rows (its transition table `gone`).
CREATE FUNCTION public.note_deletion() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n pg_catalog.int8;
BEGIN
    SELECT pg_catalog.count(*) INTO n FROM gone;
    IF n > 0 THEN
        INSERT INTO public.deletion_log (table_name, kind, row_count)
        VALUES (TG_TABLE_NAME,
                COALESCE(NULLIF(pg_catalog.current_setting('hourofci.deletion_kind', true), ''), TG_OP),
                n);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION public.note_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO public.deletion_log (table_name, kind, row_count) VALUES (TG_TABLE_NAME, TG_OP, NULL);
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION public.note_deletion(), public.note_truncate() FROM PUBLIC;

-- A trigger with a transition table has exactly one event: one trigger per event.
CREATE TRIGGER loggingtable_deleted AFTER DELETE ON public.loggingtable
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.note_deletion();
CREATE TRIGGER loggingtable_changed AFTER UPDATE ON public.loggingtable
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.note_deletion();
CREATE TRIGGER loggingtable_truncated AFTER TRUNCATE ON public.loggingtable
    FOR EACH STATEMENT EXECUTE FUNCTION public.note_truncate();
CREATE TRIGGER loggingtable_test_deleted AFTER DELETE ON public.loggingtable_test
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.note_deletion();
CREATE TRIGGER loggingtable_test_changed AFTER UPDATE ON public.loggingtable_test
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.note_deletion();
CREATE TRIGGER loggingtable_test_truncated AFTER TRUNCATE ON public.loggingtable_test
    FOR EACH STATEMENT EXECUTE FUNCTION public.note_truncate();
