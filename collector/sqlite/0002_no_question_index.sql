-- As sql/0007: no index beyond the keys. The insights service answers question pages
-- from its in-memory aggregate (built and refreshed by primary key), so the question
-- index only made every write pay (about a fifth of PostgreSQL's CPU per written row,
-- docs/BENCHMARKS.md); the maintenance commands (`forget`, `prune`, filtered `export`)
-- read the table in id order instead.
DROP INDEX IF EXISTS loggingtable_question_idx;
DROP INDEX IF EXISTS loggingtable_test_question_idx;
