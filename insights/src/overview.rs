//! The overview page's numbers (per question: answers, distinct learners, distinct user
//! agents of rows without learner id, last answer), kept in memory per table so that a
//! page costs O(questions) instead of a pass over every row.
//!
//! - **Build:** one read transaction pages through the table in id order (primary key
//!   only) and adds every row. Until it is done, and whenever the aggregate cannot be
//!   trusted, pages are answered by the SQL it replaces ([`overview_rows_sql`]): exact,
//!   only slower. A response says which answered (`X-Overview-From: memory|database`).
//! - **Refresh:** before every overview request, in one snapshot: the deletion log's
//!   newest id for the table (sql/0006 on PostgreSQL, [`crate::source::SQLITE_DELETION_LOG`]
//!   on SQLite; its row count and newest id), then the rows with `id >` the highest id seen, and the rows in the
//!   *gaps* below it (see below). If the deletion log moved (forget, prune, or any
//!   DELETE/UPDATE/TRUNCATE on PostgreSQL), the aggregate is dropped and rebuilt.
//! - **Out-of-order commits (PostgreSQL):** identity ids are drawn when a row is
//!   inserted but become visible when its transaction commits, so a row with a lower id
//!   can appear after a higher one was seen. Every id below the highest seen that was
//!   not seen is kept as a gap and read again at each refresh until it is *settled*:
//!   at least [`GAP_MIN_AGE`] old and every transaction that was running when it was
//!   first missed has ended (the snapshot's `xmin` has passed that snapshot's `xmax`).
//!   Whatever holds transactions open that long, a gap is dropped after [`GAP_MAX_AGE`]:
//!   exact unless a write transaction stays open longer than that after drawing its id
//!   (the collector's write transactions last milliseconds to seconds). SQLite has one
//!   writer at a time and AUTOINCREMENT ids: ids appear in order, there are no gaps to keep.
//! - **Date ranges:** counted per UTC day, so a range of whole days (what the page's
//!   date fields send) is exact from memory; a bound inside a day (an RFC 3339 instant
//!   in the URL) is answered by SQL.
//! - **Memory:** per question, per day: count and last time; per question, per distinct
//!   learner (and user agent): the sorted set of days it answered on. About
//!   [`MAX_ENTRIES`] learner-question pairs at most (then SQL answers, with a warning).
//! - **Question pages** ([`QuestionPage`]) come from the same aggregate: per question its
//!   row ids (sorted), each row's day and trimmed answer, and the count of each distinct
//!   trimmed answer; a list page is then a primary-key lookup of at most a page of ids
//!   (with a search term, the list alone is read by SQL).
//!   Bounded: a question with more than [`MAX_LABELS_PER_QUESTION`] distinct trimmed
//!   answers, or new answers beyond [`MAX_LABEL_BYTES`] of answer text in all, stops
//!   keeping answer counts (its page is answered by SQL); beyond [`MAX_LISTED_ROWS`] rows
//!   no question keeps its rows (every question page by SQL; the overview stays in memory).
//!
//! Rows are assumed to change only by insertion (the writer's functions) and by logged
//! deletions; on SQLite a hand-written DELETE is not logged: restart the service after one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::source::{table_name, Filter, Source, Table};

/// A gap is read again for at least this long (and until no transaction that could
/// hold its id is running).
pub const GAP_MIN_AGE: Duration = Duration::from_secs(30);
/// ... and never longer than this.
pub const GAP_MAX_AGE: Duration = Duration::from_secs(600);
/// At most this many gap ranges are kept (the oldest are dropped first, with a warning).
const MAX_GAP_RANGES: usize = 100_000;
/// Learner-question and user-agent-question pairs at most (about 40 bytes each).
pub const MAX_ENTRIES: usize = 12_000_000;
/// Distinct trimmed answers kept per question; beyond, its page is answered by SQL.
pub const MAX_LABELS_PER_QUESTION: usize = 50_000;
/// Bytes of distinct trimmed answer text kept, all questions together (each question's
/// answers beyond it: SQL).
pub const MAX_LABEL_BYTES: usize = 256 << 20;
/// Rows whose id, day and answer are kept for question pages (16 bytes each).
pub const MAX_LISTED_ROWS: usize = 30_000_000;
/// The row of an interaction event (an answer starting with `{`): listed, not charted.
const NOT_CHARTED: u32 = u32::MAX;
/// Rows per query while building or catching up.
const CHUNK: i64 = 50_000;
/// After a failed build, wait this long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One question's line of the overview.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OverviewRow {
    pub lesson: Option<String>,
    pub level: Option<String>,
    pub question: Option<String>,
    pub answers: i64,
    /// Distinct learner ids.
    pub learners: i64,
    /// Distinct user agents among rows without learner id.
    pub user_agents: i64,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub last: Option<String>,
}

/// Distinct counts by two hash aggregations (one row per question and learner, or per
/// question and user agent for rows without learner id), not `count(DISTINCT ..)`,
/// which sorts every group: about 3x faster on a million rows.
const OVERVIEW_PG: &str = "SELECT lesson, level, question, sum(n)::bigint AS answers, count(learner_id) AS learners,
    count(ua) AS user_agents, to_char(max(last) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS last
    FROM (SELECT lesson::text AS lesson, lesson_level::text AS level, question::text AS question, learner_id,
                 CASE WHEN learner_id IS NULL THEN user_agent END AS ua, count(*) AS n, max(received_at) AS last
          FROM {table} {where} GROUP BY 1, 2, 3, 4, 5) per_learner
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
const OVERVIEW_SQLITE: &str = "SELECT lesson, level, question, sum(n) AS answers, count(learner_id) AS learners,
    count(ua) AS user_agents, replace(substr(max(last), 1, 19), 'T', ' ') AS last
    FROM (SELECT lesson, lesson_level AS level, question, learner_id,
                 CASE WHEN learner_id IS NULL THEN user_agent END AS ua, count(*) AS n, max(received_at) AS last
          FROM {table} {where} GROUP BY 1, 2, 3, 4, 5) per_learner
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

/// The overview by SQL over every matching row (the fallback, and the definition the
/// in-memory aggregate must agree with). Uses the filter's table and date range only.
pub async fn overview_rows_sql(source: &Source, filter: &Filter) -> anyhow::Result<Vec<OverviewRow>> {
    source.read().await?.rows(filter, OVERVIEW_PG, OVERVIEW_SQLITE).await
}

/// Which computed a page's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnsweredBy {
    Memory,
    Database,
}

impl AnsweredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            AnsweredBy::Memory => "memory",
            AnsweredBy::Database => "database",
        }
    }
}

/// `[since, until)` in days since 1970-01-01, when both bounds (if any) are midnights.
fn whole_days(filter: &Filter) -> Option<(Option<i32>, Option<i32>)> {
    let day = |t: DateTime<Utc>| {
        let midnight = t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0;
        midnight.then(|| t.timestamp_micros().div_euclid(MICROS_PER_DAY) as i32)
    };
    let since = match filter.since {
        Some(t) => Some(day(t)?),
        None => None,
    };
    let until = match filter.until {
        Some(t) => Some(day(t)?),
        None => None,
    };
    Some((since, until))
}

/// The sorted set of days one learner (or user agent) answered one question on; most
/// answer on one or two days, so those need no allocation.
#[derive(Clone, Debug)]
enum Days {
    One(i32),
    Two(i32, i32),
    /// Boxed so that `Days` stays 16 bytes (a `Vec` would make it 32): there is one per
    /// learner-question pair.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<i32>>),
}

impl Days {
    fn insert(&mut self, day: i32) {
        *self = match std::mem::replace(self, Days::One(0)) {
            Days::One(a) if a == day => Days::One(a),
            Days::One(a) => Days::Two(a.min(day), a.max(day)),
            Days::Two(a, b) if a == day || b == day => Days::Two(a, b),
            Days::Two(a, b) => {
                let mut v = vec![a, b, day];
                v.sort_unstable();
                Days::Many(Box::new(v))
            }
            Days::Many(mut v) => {
                if let Err(at) = v.binary_search(&day) {
                    v.insert(at, day);
                }
                Days::Many(v)
            }
        }
    }

    /// Any day in `[since, until)`?
    fn any_in(&self, since: i32, until: i32) -> bool {
        let inside = |d: &i32| *d >= since && *d < until;
        match self {
            Days::One(a) => inside(a),
            Days::Two(a, b) => inside(a) || inside(b),
            Days::Many(v) => {
                let first = v.partition_point(|d| *d < since);
                v.get(first).is_some_and(inside)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Day {
    answers: i64,
    /// Microseconds since 1970 of the latest answer that day.
    last: i64,
}

type Key = (Option<String>, Option<String>, Option<String>);

struct Question {
    key: Key,
    answers: i64,
    days: BTreeMap<i32, Day>,
    learners: HashMap<u32, Days>,
    user_agents: HashMap<u32, Days>,
    /// Rows without a chart bar (interaction events).
    interactions: i64,
    /// Row ids, ascending (empty when rows are not kept: see [`MAX_LISTED_ROWS`]).
    ids: Vec<i64>,
    /// Per id (same position): its UTC day and its label's number (or [`NOT_CHARTED`]).
    rows: Vec<(i32, u32)>,
    /// `None` once the question has too many distinct answers to keep.
    labels: Option<Labels>,
}

/// A question's distinct trimmed answers of charted rows and how many rows gave each.
#[derive(Default)]
struct Labels {
    numbers: HashMap<Arc<str>, u32>,
    /// The number of the NULL answer, if any row has one.
    null: Option<u32>,
    names: Vec<Option<Arc<str>>>,
    counts: Vec<i64>,
}

impl Labels {
    /// Count one row with this label: its number, or `None` if the question just went
    /// over a cap (`bytes`: the text kept by every question).
    fn count(&mut self, label: Option<&str>, bytes: &mut usize) -> Option<u32> {
        let n = self.number(label, bytes)?;
        self.counts[n as usize] += 1;
        Some(n)
    }

    fn number(&mut self, label: Option<&str>, bytes: &mut usize) -> Option<u32> {
        let known = match label {
            Some(l) => self.numbers.get(l).copied(),
            None => self.null,
        };
        if let Some(n) = known {
            return Some(n);
        }
        let len = label.map_or(0, str::len);
        if self.names.len() >= MAX_LABELS_PER_QUESTION || *bytes + len > MAX_LABEL_BYTES {
            return None;
        }
        *bytes += len;
        let n = self.names.len() as u32;
        let name: Option<Arc<str>> = label.map(Arc::from);
        match &name {
            Some(l) => {
                self.numbers.insert(l.clone(), n);
            }
            None => self.null = Some(n),
        }
        self.names.push(name);
        self.counts.push(0);
        Some(n)
    }

    fn bytes(&self) -> usize {
        self.names.iter().flatten().map(|l| l.len()).sum()
    }
}

/// A question page's numbers (see [`Aggregate::question`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuestionPage {
    /// Rows in the range.
    pub total: i64,
    /// Of which charted (not interaction events).
    pub charted: i64,
    /// The most frequent trimmed answers of the charted rows, most frequent first, ties
    /// by bytes (NULL first): what [`crate::server::top_answers`] returns.
    pub top: Vec<(Option<String>, i64)>,
    /// `YYYY-MM-DD` (UTC) and rows that day, oldest first.
    pub days: Vec<(String, i64)>,
    /// The ids of the list page: newest first, below the cursor.
    pub list: Vec<i64>,
}

/// A gap: ids `lo..=hi` not seen although a higher id was.
#[derive(Clone, Copy, Debug)]
struct Gap {
    lo: i64,
    hi: i64,
    first_missed: Instant,
    /// `pg_snapshot_xmax` of the snapshot that first missed it.
    xmax: i64,
}

/// One row, as the aggregate needs it.
struct Fact {
    id: i64,
    key: Key,
    micros: i64,
    learner_id: Option<String>,
    /// The user agent of a row without learner id.
    user_agent: Option<String>,
    answer: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PgFact {
    id: i64,
    lesson: Option<String>,
    level: Option<String>,
    question: Option<String>,
    micros: i64,
    learner_id: Option<String>,
    user_agent: Option<String>,
    answer: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SqliteFact {
    id: i64,
    lesson: Option<String>,
    level: Option<String>,
    question: Option<String>,
    received_at: String,
    learner_id: Option<String>,
    user_agent: Option<String>,
    answer: Option<String>,
}

impl TryFrom<SqliteFact> for Fact {
    type Error = anyhow::Error;

    /// Only the collector's own format (`2026-11-28T07:31:02.123Z`): then a day's rows
    /// are exactly those whose text starts with it, as the SQL's text comparisons assume.
    fn try_from(r: SqliteFact) -> anyhow::Result<Fact> {
        let text = &r.received_at;
        let t = DateTime::parse_from_rfc3339(text)
            .ok()
            .filter(|_| text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z'))
            .ok_or_else(|| anyhow::anyhow!("row {}: received_at {text:?} is not in the collector's format", r.id))?;
        Ok(Fact {
            id: r.id,
            key: (r.lesson, r.level, r.question),
            micros: t.timestamp_micros(),
            learner_id: r.learner_id,
            user_agent: r.user_agent,
            answer: r.answer,
        })
    }
}

impl From<PgFact> for Fact {
    fn from(r: PgFact) -> Fact {
        Fact {
            id: r.id,
            key: (r.lesson, r.level, r.question),
            micros: r.micros,
            learner_id: r.learner_id,
            user_agent: r.user_agent,
            answer: r.answer,
        }
    }
}

const PG_FACT_COLUMNS: &str =
    "t.id, t.lesson::text AS lesson, t.lesson_level::text AS level, t.question::text AS question,
    (extract(epoch FROM t.received_at) * 1000000)::int8 AS micros, t.learner_id::text AS learner_id,
    CASE WHEN t.learner_id IS NULL THEN t.user_agent END AS user_agent, t.answer";

/// The overview of one table, in memory.
pub struct Aggregate {
    table: Table,
    /// The deletion log's (row count, newest id) for this table when built (`None`: not
    /// read yet). The count too: log ids can commit out of order like any identity.
    deletion_mark: Option<(i64, i64)>,
    max_id: i64,
    gaps: Vec<Gap>,
    index: HashMap<Key, usize>,
    questions: Vec<Question>,
    /// Indexes into `questions` in the database's order of (lesson, level, question).
    order: Vec<usize>,
    learners: HashMap<Box<str>, u32>,
    user_agents: HashMap<Box<str>, u32>,
    entries: usize,
    /// Rows kept for question pages; `listing` is false once that exceeded [`MAX_LISTED_ROWS`].
    listed_rows: usize,
    listing: bool,
    /// Bytes of distinct answer text kept (see [`MAX_LABEL_BYTES`]).
    label_bytes: usize,
}

/// What a refresh found.
enum Refreshed {
    Current,
    /// Rows were deleted or changed since the build: rebuild.
    Stale,
}

fn intern(names: &mut HashMap<Box<str>, u32>, name: String) -> u32 {
    if let Some(&n) = names.get(name.as_str()) {
        return n;
    }
    let n = names.len() as u32;
    names.insert(name.into_boxed_str(), n);
    n
}

impl Aggregate {
    fn new(table: Table) -> Self {
        Aggregate {
            table,
            deletion_mark: None,
            max_id: 0,
            gaps: Vec::new(),
            index: HashMap::new(),
            questions: Vec::new(),
            order: Vec::new(),
            learners: HashMap::new(),
            user_agents: HashMap::new(),
            entries: 0,
            listed_rows: 0,
            listing: true,
            label_bytes: 0,
        }
    }

    fn add(&mut self, f: Fact) {
        let qi = match self.index.get(&f.key) {
            Some(&qi) => qi,
            None => {
                self.questions.push(Question {
                    key: f.key.clone(),
                    answers: 0,
                    days: BTreeMap::new(),
                    learners: HashMap::new(),
                    user_agents: HashMap::new(),
                    interactions: 0,
                    ids: Vec::new(),
                    rows: Vec::new(),
                    labels: Some(Labels::default()),
                });
                self.index.insert(f.key, self.questions.len() - 1);
                self.questions.len() - 1
            }
        };
        let day = f.micros.div_euclid(MICROS_PER_DAY) as i32;
        let q = &mut self.questions[qi];
        q.answers += 1;
        let d = q.days.entry(day).or_insert(Day {
            answers: 0,
            last: i64::MIN,
        });
        d.answers += 1;
        d.last = d.last.max(f.micros);
        // As the page's SQL: `answer IS NULL OR substr(answer, 1, 1) <> '{'`, `trim(answer)` (spaces only).
        let charted = f.answer.as_deref().is_none_or(|a| !a.starts_with('{'));
        let label = if !charted {
            q.interactions += 1;
            NOT_CHARTED
        } else {
            let label = f.answer.as_deref().map(|a| a.trim_matches(' '));
            match q.labels.as_mut().and_then(|l| l.count(label, &mut self.label_bytes)) {
                Some(n) => n,
                None => {
                    if let Some(dropped) = q.labels.take() {
                        self.label_bytes -= dropped.bytes();
                        tracing::warn!(
                            question = ?q.key,
                            "too many distinct answers to keep in memory: this question's page is answered by SQL"
                        );
                    }
                    0
                }
            }
        };
        if self.listing {
            if q.ids.last().is_none_or(|&last| last < f.id) {
                q.ids.push(f.id);
                q.rows.push((day, label));
            } else {
                // Committed out of id order (a gap filled).
                let at = q.ids.partition_point(|&id| id < f.id);
                q.ids.insert(at, f.id);
                q.rows.insert(at, (day, label));
            }
            self.listed_rows += 1;
            if self.listed_rows > MAX_LISTED_ROWS {
                tracing::warn!("more than {MAX_LISTED_ROWS} rows: question pages are answered by SQL");
                self.listing = false;
                for q in &mut self.questions {
                    q.ids = Vec::new();
                    q.rows = Vec::new();
                }
            }
        }
        let q = &mut self.questions[qi];
        let (map, who) = match (f.learner_id, f.user_agent) {
            (Some(l), _) => (&mut q.learners, intern(&mut self.learners, l)),
            (None, Some(ua)) => (&mut q.user_agents, intern(&mut self.user_agents, ua)),
            (None, None) => return,
        };
        match map.get_mut(&who) {
            Some(days) => days.insert(day),
            None => {
                map.insert(who, Days::One(day));
                self.entries += 1;
            }
        }
    }

    /// Note ids `from..=to` as missed by a snapshot with this `xmax`.
    fn missed(&mut self, from: i64, to: i64, xmax: i64) {
        if from <= to {
            self.gaps.push(Gap {
                lo: from,
                hi: to,
                first_missed: Instant::now(),
                xmax,
            });
        }
    }

    /// A row was found inside a gap: split it.
    fn found_in_gap(&mut self, id: i64) {
        if let Some(i) = self.gaps.iter().position(|g| g.lo <= id && id <= g.hi) {
            let g = self.gaps.swap_remove(i);
            if g.lo < id {
                self.gaps.push(Gap { hi: id - 1, ..g });
            }
            if id < g.hi {
                self.gaps.push(Gap { lo: id + 1, ..g });
            }
        }
    }

    /// Drop the gaps no transaction can fill any more (see the module's doc).
    fn settle_gaps(&mut self, xmin: i64) {
        self.gaps.retain(|g| {
            let age = g.first_missed.elapsed();
            !(age >= GAP_MAX_AGE || (age >= GAP_MIN_AGE && xmin >= g.xmax))
        });
        if self.gaps.len() > MAX_GAP_RANGES {
            tracing::warn!(kept = MAX_GAP_RANGES, "too many id gaps to watch; dropping the oldest");
            self.gaps.sort_by_key(|g| std::cmp::Reverse(g.first_missed));
            self.gaps.truncate(MAX_GAP_RANGES);
        }
    }

    /// The overview rows for a range of whole days (`None`: no bound), in the
    /// database's order. Without a range: O(questions).
    pub fn rows(&self, since: Option<i32>, until: Option<i32>) -> Vec<OverviewRow> {
        let whole = since.is_none() && until.is_none();
        let (lo, hi) = (since.unwrap_or(i32::MIN), until.unwrap_or(i32::MAX));
        let format = |micros: i64| {
            DateTime::<Utc>::from_timestamp_micros(micros).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        };
        let mut out = Vec::new();
        for &qi in &self.order {
            let q = &self.questions[qi];
            let (answers, last, learners, user_agents) = if whole {
                let last = q.days.values().map(|d| d.last).max();
                (q.answers, last, q.learners.len(), q.user_agents.len())
            } else {
                let (mut answers, mut last) = (0, None::<i64>);
                for d in q.days.range(lo..hi).map(|(_, d)| d) {
                    answers += d.answers;
                    last = Some(last.map_or(d.last, |l| l.max(d.last)));
                }
                if answers == 0 {
                    (0, None, 0, 0)
                } else {
                    let count = |m: &HashMap<u32, Days>| m.values().filter(|days| days.any_in(lo, hi)).count();
                    (answers, last, count(&q.learners), count(&q.user_agents))
                }
            };
            if answers == 0 {
                continue;
            }
            out.push(OverviewRow {
                lesson: q.key.0.clone(),
                level: q.key.1.clone(),
                question: q.key.2.clone(),
                answers,
                learners: learners as i64,
                user_agents: user_agents as i64,
                last: last.and_then(format),
            });
        }
        out
    }

    /// A question's page for a range of whole days (`None`: no bound): `top` most
    /// frequent answers, and the `list` newest ids below `before`. `None` when this
    /// question's answers or rows are not kept (see [`MAX_LABELS_PER_QUESTION`]).
    pub fn question(
        &self,
        key: &Key,
        (since, until): (Option<i32>, Option<i32>),
        before: i64,
        top: usize,
        list: usize,
    ) -> Option<QuestionPage> {
        if !self.listing {
            return None;
        }
        let Some(&qi) = self.index.get(key) else {
            return Some(QuestionPage {
                total: 0,
                charted: 0,
                top: Vec::new(),
                days: Vec::new(),
                list: Vec::new(),
            });
        };
        let q = &self.questions[qi];
        let labels = q.labels.as_ref()?;
        let (lo, hi) = (since.unwrap_or(i32::MIN), until.unwrap_or(i32::MAX));
        let inside = |day: i32| day >= lo && day < hi;
        let (total, charted, counts) = if since.is_none() && until.is_none() {
            (
                q.answers,
                q.answers - q.interactions,
                std::borrow::Cow::Borrowed(&labels.counts),
            )
        } else {
            let (mut total, mut charted, mut counts) = (0, 0, vec![0i64; labels.counts.len()]);
            for &(_, label) in q.rows.iter().filter(|(day, _)| inside(*day)) {
                total += 1;
                if label != NOT_CHARTED {
                    charted += 1;
                    counts[label as usize] += 1;
                }
            }
            (total, charted, std::borrow::Cow::Owned(counts))
        };
        // `ORDER BY count DESC, label` (bytes, NULL first), `LIMIT top`.
        let order = |a: &usize, b: &usize| {
            counts[*b]
                .cmp(&counts[*a])
                .then_with(|| labels.names[*a].cmp(&labels.names[*b]))
        };
        let mut ranked: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0).collect();
        if ranked.len() > top && top > 0 {
            ranked.select_nth_unstable_by(top - 1, order);
        }
        ranked.truncate(top);
        ranked.sort_unstable_by(order);
        let days = q
            .days
            .range(lo..hi)
            .map(|(&day, d)| {
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(day + 719_163)
                    .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string());
                (date, d.answers)
            })
            .collect();
        let below = q.ids.partition_point(|&id| id < before);
        let list = q.ids[..below]
            .iter()
            .zip(&q.rows[..below])
            .rev()
            .filter(|(_, (day, _))| inside(*day))
            .map(|(&id, _)| id)
            .take(list)
            .collect();
        Some(QuestionPage {
            total,
            charted,
            top: ranked
                .into_iter()
                .map(|i| (labels.names[i].as_deref().map(str::to_string), counts[i]))
                .collect(),
            days,
            list,
        })
    }

    /// Read what changed since the last refresh (everything, the first time).
    async fn refresh(&mut self, source: &Source) -> anyhow::Result<Refreshed> {
        match source {
            Source::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let r = self.refresh_postgres(&mut tx).await;
                tx.rollback().await?;
                r
            }
            Source::Sqlite(pool, has_learner) => {
                let mut tx = pool.begin().await?;
                let r = self.refresh_sqlite(&mut tx, *has_learner).await;
                tx.rollback().await?;
                r
            }
        }
    }

    fn check_mark(&mut self, mark: (i64, i64)) -> bool {
        match self.deletion_mark {
            None => {
                self.deletion_mark = Some(mark);
                true
            }
            Some(m) => m == mark,
        }
    }

    async fn refresh_postgres(&mut self, tx: &mut Transaction<'static, Postgres>) -> anyhow::Result<Refreshed> {
        let table = table_name(self.table);
        // The first statement fixes the transaction's snapshot: everything below agrees with it.
        let (xmin, xmax, logged, newest): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT pg_catalog.pg_snapshot_xmin(s)::text::int8, pg_catalog.pg_snapshot_xmax(s)::text::int8, l.n, l.newest
             FROM pg_catalog.pg_current_snapshot() s,
                  (SELECT count(*) AS n, COALESCE(max(id), 0) AS newest FROM public.deletion_log WHERE table_name = $1) l",
        )
        .bind(table)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read public.deletion_log ({e}): migrate to sql/0006 and run \
                 `hourofci-collector migrate --reader-role ROLE` again, which grants the reader SELECT on it"
            )
        })?;
        if !self.check_mark((logged, newest)) {
            return Ok(Refreshed::Stale);
        }
        let known = self.questions.len();
        if !self.gaps.is_empty() {
            let (los, his): (Vec<i64>, Vec<i64>) = self.gaps.iter().map(|g| (g.lo, g.hi)).unzip();
            let sql = format!(
                "SELECT {PG_FACT_COLUMNS} FROM unnest($1::int8[], $2::int8[]) AS g(lo, hi)
                 JOIN public.{table} t ON t.id BETWEEN g.lo AND g.hi"
            );
            let found: Vec<PgFact> = sqlx::query_as(&sql).bind(los).bind(his).fetch_all(&mut **tx).await?;
            for f in found {
                self.found_in_gap(f.id);
                self.add(f.into());
            }
        }
        let sql = format!("SELECT {PG_FACT_COLUMNS} FROM public.{table} t WHERE t.id > $1 ORDER BY t.id LIMIT {CHUNK}");
        loop {
            let rows: Vec<PgFact> = sqlx::query_as(&sql).bind(self.max_id).fetch_all(&mut **tx).await?;
            let done = (rows.len() as i64) < CHUNK;
            for f in rows {
                self.missed(self.max_id + 1, f.id - 1, xmax);
                self.max_id = f.id;
                self.add(f.into());
            }
            self.check_size()?;
            if done {
                break;
            }
        }
        self.settle_gaps(xmin);
        if self.questions.len() != known {
            // Sort the keys as the database sorts text (its collation, NULLs last).
            let (mut lessons, mut levels, mut questions) = (Vec::new(), Vec::new(), Vec::new());
            for q in &self.questions {
                lessons.push(q.key.0.clone());
                levels.push(q.key.1.clone());
                questions.push(q.key.2.clone());
            }
            let order: Vec<i64> = sqlx::query_scalar(
                "SELECT k.i FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(l, v, q, i) ORDER BY k.l, k.v, k.q",
            )
            .bind(lessons)
            .bind(levels)
            .bind(questions)
            .fetch_all(&mut **tx)
            .await?;
            self.order = order.into_iter().map(|i| i as usize - 1).collect();
        }
        Ok(Refreshed::Current)
    }

    async fn refresh_sqlite(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        has_learner: bool,
    ) -> anyhow::Result<Refreshed> {
        let table = table_name(self.table);
        // `forget`/`prune` create the log with their first deletion: none yet is mark 0.
        let has_log: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'deletion_log'")
                .fetch_one(&mut **tx)
                .await?;
        let mark: (i64, i64) = if has_log > 0 {
            sqlx::query_as("SELECT count(*), COALESCE(max(id), 0) FROM deletion_log WHERE table_name = ?1")
                .bind(table)
                .fetch_one(&mut **tx)
                .await?
        } else {
            (0, 0)
        };
        if !self.check_mark(mark) {
            return Ok(Refreshed::Stale);
        }
        let known = self.questions.len();
        let learner = if has_learner { "learner_id" } else { "NULL" };
        let sql = format!(
            "SELECT id, lesson, lesson_level AS level, question, received_at, {learner} AS learner_id,
                    CASE WHEN {learner} IS NULL THEN user_agent END AS user_agent, answer
             FROM {table} WHERE id > ?1 ORDER BY id LIMIT {CHUNK}"
        );
        loop {
            let rows: Vec<SqliteFact> = sqlx::query_as(&sql).bind(self.max_id).fetch_all(&mut **tx).await?;
            let done = (rows.len() as i64) < CHUNK;
            for r in rows {
                let f = Fact::try_from(r)?;
                self.max_id = f.id;
                self.add(f);
            }
            self.check_size()?;
            if done {
                break;
            }
        }
        if self.questions.len() != known {
            // SQLite's order: BINARY (byte) comparison, NULLs first: Rust's order of Option<String>.
            let mut order: Vec<usize> = (0..self.questions.len()).collect();
            order.sort_by(|&a, &b| self.questions[a].key.cmp(&self.questions[b].key));
            self.order = order;
        }
        Ok(Refreshed::Current)
    }

    fn check_size(&self) -> anyhow::Result<()> {
        if self.entries > MAX_ENTRIES {
            return Err(TooLarge.into());
        }
        Ok(())
    }
}

/// The data has more learner-question pairs than [`MAX_ENTRIES`]: not retried (each try
/// would read every row again) until the service restarts.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than {MAX_ENTRIES} learner-question pairs: the overview is computed by SQL, not kept in memory"
        )
    }
}

impl std::error::Error for TooLarge {}

#[derive(Default)]
struct Slot {
    aggregate: Option<Aggregate>,
    building: bool,
    failed_at: Option<Instant>,
    /// The aggregate would exceed [`MAX_ENTRIES`]: SQL answers until a restart.
    too_large: bool,
}

/// The in-memory overviews of both tables, and when to build them.
#[derive(Clone)]
pub struct Overviews {
    source: Source,
    slots: Arc<[tokio::sync::Mutex<Slot>; 2]>,
}

fn slot_index(table: Table) -> usize {
    match table {
        Table::Production => 0,
        Table::Test => 1,
    }
}

impl Overviews {
    pub fn new(source: Source) -> Self {
        Overviews {
            source,
            slots: Arc::new(Default::default()),
        }
    }

    /// Start building both tables' overviews in the background (needs a Tokio runtime;
    /// without one, the first request starts them).
    pub fn start(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for table in [Table::Production, Table::Test] {
            let this = self.clone();
            tokio::spawn(async move {
                let mut slot = this.slots[slot_index(table)].lock().await;
                this.start_build(&mut slot, table);
            });
        }
    }

    fn start_build(&self, slot: &mut Slot, table: Table) {
        if slot.building
            || slot.too_large
            || slot.aggregate.is_some()
            || slot.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return;
        }
        slot.building = true;
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut aggregate = Aggregate::new(table);
            let built = aggregate.refresh(&this.source).await;
            let mut slot = this.slots[slot_index(table)].lock().await;
            slot.building = false;
            match built {
                Ok(Refreshed::Current) => {
                    tracing::info!(
                        table = table_name(table),
                        rows_up_to_id = aggregate.max_id,
                        seconds = started.elapsed().as_secs_f64(),
                        "overview built in memory"
                    );
                    slot.aggregate = Some(aggregate);
                    slot.failed_at = None;
                }
                Ok(Refreshed::Stale) => unreachable!("a new aggregate accepts any deletion mark"),
                Err(e) => {
                    tracing::warn!(
                        table = table_name(table),
                        "overview not built in memory (SQL answers instead): {e:#}"
                    );
                    slot.failed_at = Some(Instant::now());
                    slot.too_large = e.is::<TooLarge>();
                }
            }
        });
    }

    /// Is the table's overview in memory (built, not invalidated)?
    pub async fn ready(&self, table: Table) -> bool {
        self.slots[slot_index(table)].lock().await.aggregate.is_some()
    }

    /// Wait (at most `limit`) until the table's overview is in memory.
    pub async fn wait_until_ready(&self, table: Table, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            {
                let mut slot = self.slots[slot_index(table)].lock().await;
                if slot.aggregate.is_some() {
                    return true;
                }
                self.start_build(&mut slot, table);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Bring the table's aggregate up to date and answer from it; `None` while it is
    /// not in memory (being built, or rebuilt after a deletion: then the build starts).
    async fn answer_from_memory<T>(&self, table: Table, answer: impl FnOnce(&Aggregate) -> T) -> Option<T> {
        let mut slot = self.slots[slot_index(table)].lock().await;
        if let Some(aggregate) = &mut slot.aggregate {
            match aggregate.refresh(&self.source).await {
                Ok(Refreshed::Current) => return Some(answer(aggregate)),
                Ok(Refreshed::Stale) => {
                    tracing::info!(
                        table = table_name(table),
                        "rows were deleted or changed: rebuilding the overview"
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        table = table_name(table),
                        "overview refresh failed (SQL answers; rebuilding): {e:#}"
                    );
                    slot.too_large = e.is::<TooLarge>();
                }
            }
            slot.aggregate = None;
        }
        self.start_build(&mut slot, table);
        None
    }

    /// The overview for the filter's table and date range (its lesson, level, question
    /// and search are ignored), up to date with the database, and which computed it.
    pub async fn rows(&self, filter: &Filter) -> anyhow::Result<(Vec<OverviewRow>, AnsweredBy)> {
        if let Some(days) = whole_days(filter) {
            if let Some(rows) = self
                .answer_from_memory(filter.table(), |a| a.rows(days.0, days.1))
                .await
            {
                return Ok((rows, AnsweredBy::Memory));
            }
        }
        Ok((overview_rows_sql(&self.source, filter).await?, AnsweredBy::Database))
    }

    /// One question's page from memory, up to date with the database: when the filter
    /// names lesson, level and question, has a range of whole days (or none), and the
    /// aggregate keeps that question. `None`: ask SQL. The search term is ignored (the
    /// numbers never depend on it; the caller lists a search's rows by SQL).
    pub async fn question(&self, filter: &Filter, before: i64, top: usize, list: usize) -> Option<QuestionPage> {
        let (Some(lesson), Some(level), Some(question)) = (&filter.lesson, &filter.level, &filter.question) else {
            return None;
        };
        if filter.charted_only {
            return None;
        }
        let days = whole_days(filter)?;
        let key = (Some(lesson.clone()), Some(level.clone()), Some(question.clone()));
        self.answer_from_memory(filter.table(), |a| a.question(&key, days, before, top, list))
            .await
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_a_sorted_set_and_ranges_are_half_open() {
        let mut d = Days::One(5);
        for day in [5, 9, 1, 9, 7] {
            d.insert(day);
        }
        let Days::Many(v) = &d else { panic!("{d:?}") };
        assert_eq!(**v, vec![1, 5, 7, 9]);
        assert!(d.any_in(2, 6) && d.any_in(9, 10) && !d.any_in(2, 5) && !d.any_in(10, 20) && !d.any_in(8, 9));
        let mut two = Days::One(3);
        two.insert(1);
        assert!(matches!(two, Days::Two(1, 3)) && two.any_in(3, 4) && !two.any_in(2, 3));
    }

    #[test]
    fn only_whole_days_are_ranges_in_memory() {
        let at = |s: &str| Some(crate::source::parse_instant(s).unwrap());
        let f = |since, until| Filter {
            since,
            until,
            ..Filter::default()
        };
        assert_eq!(whole_days(&f(None, None)), Some((None, None)));
        assert_eq!(
            whole_days(&f(at("1970-01-02"), at("1970-01-04"))),
            Some((Some(1), Some(3)))
        );
        assert_eq!(whole_days(&f(at("1969-12-31"), None)), Some((Some(-1), None)));
        assert_eq!(whole_days(&f(at("2026-11-28T07:00:00Z"), None)), None);
        assert_eq!(whole_days(&f(None, at("2026-11-28T00:00:00.5Z"))), None);
    }

    #[test]
    fn a_question_with_too_many_distinct_answers_is_left_to_sql() {
        let key = |q: &str| (Some("l".to_string()), Some("v".to_string()), Some(q.to_string()));
        let fact = |id: i64, q: &str, answer: String| Fact {
            id,
            key: key(q),
            micros: 0,
            learner_id: None,
            user_agent: None,
            answer: Some(answer),
        };
        let mut a = Aggregate::new(Table::Production);
        for i in 0..MAX_LABELS_PER_QUESTION as i64 {
            a.add(fact(2 * i + 1, "many", format!("answer {i}")));
            a.add(fact(2 * i + 2, "few", format!(" answer {} ", i % 3)));
        }
        let page = |a: &Aggregate, q: &str| a.question(&key(q), (None, None), i64::MAX, 2, 3);
        assert!(page(&a, "many").is_some(), "at the cap: still kept");
        a.add(fact(1 << 40, "many", "one more".into()));
        assert_eq!(page(&a, "many"), None, "beyond the cap: SQL");
        let few = page(&a, "few").unwrap();
        let with = |k: usize| (0..MAX_LABELS_PER_QUESTION).filter(|i| i % 3 == k).count() as i64;
        assert_eq!(
            few.top,
            [(Some("answer 0".into()), with(0)), (Some("answer 1".into()), with(1))]
        );
        assert_eq!(few.list.len(), 3);
        assert_eq!(
            a.label_bytes,
            3 * "answer 0".len(),
            "the dropped answers' text is released"
        );
        assert_eq!(
            a.questions.iter().map(|q| q.answers).sum::<i64>(),
            2 * MAX_LABELS_PER_QUESTION as i64 + 1,
            "still counted"
        );
    }

    #[test]
    fn gaps_split_and_settle() {
        let mut a = Aggregate::new(Table::Production);
        a.missed(3, 9, 100);
        a.found_in_gap(5);
        let mut spans: Vec<(i64, i64)> = a.gaps.iter().map(|g| (g.lo, g.hi)).collect();
        spans.sort();
        assert_eq!(spans, vec![(3, 4), (6, 9)]);
        a.settle_gaps(1_000);
        assert_eq!(
            a.gaps.len(),
            2,
            "kept for GAP_MIN_AGE even when no transaction is running"
        );
        for g in &mut a.gaps {
            g.first_missed -= GAP_MIN_AGE;
        }
        a.settle_gaps(99);
        assert_eq!(a.gaps.len(), 2, "kept while a transaction older than the snapshot runs");
        a.settle_gaps(100);
        assert!(a.gaps.is_empty());
    }
}
