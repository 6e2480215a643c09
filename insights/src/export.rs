//! `hourofci-insights export`: every column of the matching rows, in id order, as CSV
//! (RFC 4180: UTF-8, a header, CRLF line ends, fields quoted when they hold a comma, a
//! quote or a line break) or JSON lines. Read in pages of [`PAGE_ROWS`] by id inside
//! one read-only snapshot, so memory stays constant and the export is consistent.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

use crate::source::{AnswerRow, Filter, Order, Source, COLUMNS};

/// Rows fetched per query.
pub const PAGE_ROWS: i64 = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// One row's fields in [`COLUMNS`] order (`None` = NULL, written as an empty CSV field).
pub fn fields(row: &AnswerRow) -> [Option<String>; 12] {
    [
        Some(row.id.to_string()),
        Some(row.received_at.clone()),
        row.client_time.clone(),
        row.date_log.clone(),
        row.time_log.clone(),
        row.event_id.clone(),
        row.learner_id.clone(),
        row.user_agent.clone(),
        row.lesson.clone(),
        row.lesson_level.clone(),
        row.question.clone(),
        row.answer.clone(),
    ]
}

/// A CSV writer as every export uses it (RFC 4180).
pub fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

/// Write the matching rows to `out`; returns how many. `progress` shows a bar on
/// standard error (the caller decides: only on a terminal).
pub async fn export(
    source: &Source,
    filter: &Filter,
    format: Format,
    out: impl Write,
    progress: bool,
) -> anyhow::Result<u64> {
    let mut tx = source.read().await?;
    let bar = if progress {
        let total = tx.count(filter).await?;
        let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows {elapsed} (eta {eta})",
        )?);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut written = 0u64;
    let mut cursor: Option<(i64, Order)> = None;
    match format {
        Format::Csv => {
            let mut w = csv_writer(out);
            w.write_record(COLUMNS)?;
            loop {
                let rows = tx.page(filter, cursor, PAGE_ROWS).await?;
                let Some(last) = rows.last() else { break };
                cursor = Some((last.id, Order::Ascending));
                for row in &rows {
                    w.write_record(fields(row).iter().map(|f| f.as_deref().unwrap_or("")))?;
                }
                written += rows.len() as u64;
                bar.inc(rows.len() as u64);
            }
            w.flush()?;
        }
        Format::Jsonl => {
            let mut out = out;
            loop {
                let rows = tx.page(filter, cursor, PAGE_ROWS).await?;
                let Some(last) = rows.last() else { break };
                cursor = Some((last.id, Order::Ascending));
                for row in &rows {
                    serde_json::to_writer(&mut out, row)?;
                    out.write_all(b"\n")?;
                }
                written += rows.len() as u64;
                bar.inc(rows.len() as u64);
            }
            out.flush()?;
        }
    }
    bar.finish_and_clear();
    Ok(written)
}
