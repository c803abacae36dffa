//! `settle export`: a month's statements for finance, from the published
//! tables. One statement per creator (its videos' month rows, then the
//! creator's total), a summary of all creators, a manifest with each file's
//! rows, amounts and SHA-256, a SHA256SUMS for `sha256sum -c`, and a
//! `_SUCCESS` marker written last. Everything is written into a temporary
//! directory that is renamed into place, and nothing in the files depends
//! on the clock, so re-exporting unchanged rows gives identical bytes.

use std::path::PathBuf;
use std::time::Instant;

use tokio_postgres::{IsolationLevel, Transaction};

use super::{month_name, Sums, SUM_COLUMNS};
use crate::db::Database;
use crate::error::{DbContext, Error, Result};
use crate::jobs::ledger;
use crate::rules::Day;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

/// What to export and where.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    /// The month, as its first day.
    pub month: Day,
    /// Only this creator's statement (and summary row).
    pub creator: Option<i64>,
    pub format: Format,
    /// Start CSV files with a UTF-8 byte order mark (for Excel).
    pub bom: bool,
    /// The final directory; it must not exist, be empty, or hold an
    /// earlier export (which is replaced).
    pub out: PathBuf,
}

/// One video's line of a statement.
#[derive(Clone, Debug)]
pub(super) struct Line {
    pub video_id: i64,
    pub title: String,
    pub sums: Sums,
}

/// One creator's month.
#[derive(Clone, Debug)]
pub(super) struct Statement {
    pub creator_id: i64,
    pub lines: Vec<Line>,
    /// The creator's published month row.
    pub total: Sums,
}

/// Which execution the month's rows come from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SettledBy {
    pub execution_id: i64,
    pub first_day: Day,
    pub last_day: Day,
    pub days: i64,
}

/// What the export read: the month's statements and where they came from.
pub(super) struct MonthData {
    pub statements: Vec<Statement>,
    /// The latest execution that settled a day of the month: every later
    /// re-settlement rewrites the days after it, so its publication is
    /// the one the files show.
    pub execution_id: i64,
    /// That execution's range (the days it settled, as recorded).
    pub execution_range: (Option<String>, Option<String>),
    pub settled_by: Vec<SettledBy>,
}

/// One written file as the manifest lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileEntry {
    pub path: String,
    /// Data rows (the header not counted).
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub views: i64,
    pub watch_seconds: i64,
    pub ad_views: i64,
    pub video_amount: i64,
    pub ad_amount: i64,
    pub total_amount: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExecutionRange {
    pub first_day: Option<String>,
    pub last_day: Option<String>,
}

/// manifest.json. Only data from the database: no export time, no host.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Manifest {
    pub format_version: u32,
    pub month: String,
    pub first_day: Day,
    pub last_day: Day,
    pub creator: Option<i64>,
    pub format: Format,
    pub bom: bool,
    pub execution_id: i64,
    pub settled_range: ExecutionRange,
    pub settled_by: Vec<SettledBy>,
    pub creators: u64,
    pub videos: u64,
    pub totals: Sums,
    pub files: Vec<FileEntry>,
}

/// What `export` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub manifest: Manifest,
    /// Every file of the export with its size, manifest and markers included.
    pub written: Vec<(String, u64)>,
    pub seconds: f64,
}

/// Exports `req.month`; refuses a month not wholly settled, naming the
/// days.
pub async fn export(db: &Database, req: &ExportRequest) -> Result<ExportReport> {
    let clock = Instant::now();
    let mut c = db.connect().await?;
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .db("starting the export")?;
    // Before the snapshot: a swap publish in progress is waited out, and
    // the next one waits for this read.
    tx.batch_execute(crate::pipeline::swap::READ_LOCK)
        .await
        .db("locking the result tables for the export")?;
    let data = read_month(&tx, req).await?;
    tx.commit().await.db("ending the export's read")?;
    let (manifest, written) = super::export_write::write(req, &data)?;
    Ok(ExportReport {
        out: req.out.clone(),
        manifest,
        written,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// `a..b, c` for a sorted list of days.
fn day_ranges(days: &[Day]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1].0 == days[j].0 + 1 {
            j += 1;
        }
        parts.push(if i == j {
            days[i].to_string()
        } else {
            format!("{} to {}", days[i], days[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// Refuses unless every day of the month is settled.
async fn check_settled(tx: &Transaction<'_>, first: Day, last: Day) -> Result<()> {
    let missing = ledger::unsettled_days(tx, first, last).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Tool(format!(
        "{} is not wholly settled: {} of its {} days are not settled ({}); settle them first, e.g. `settle run --from {} --to {}`",
        month_name(first),
        missing.len(),
        last.0 - first.0 + 1,
        day_ranges(&missing),
        missing[0],
        missing[missing.len() - 1]
    )))
}

async fn read_month(tx: &Transaction<'_>, req: &ExportRequest) -> Result<MonthData> {
    let period = super::month(req.month);
    let (first, last) = (period.start, period.last_day());
    check_settled(tx, first, last).await?;
    let settled_by: Vec<SettledBy> = tx
        .query(
            "SELECT coalesce(execution_id, 0), min(day), max(day), count(*) FROM settled_day \
             WHERE day BETWEEN $1 AND $2 GROUP BY 1 ORDER BY 2",
            &[&first.date(), &last.date()],
        )
        .await
        .db("reading which executions settled the month")?
        .iter()
        .map(|r| SettledBy {
            execution_id: r.get(0),
            first_day: Day::from_date(r.get(1)),
            last_day: Day::from_date(r.get(2)),
            days: r.get(3),
        })
        .collect();
    let execution_id = settled_by.iter().map(|s| s.execution_id).max().unwrap_or(0);
    let execution_range = tx
        .query_opt(
            "SELECT coalesce(day_from::text, summary->>'first_day'), coalesce(day_to::text, summary->>'last_day') \
             FROM job_execution WHERE execution_id = $1",
            &[&execution_id],
        )
        .await
        .db("reading the execution's range")?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((None, None));
    let statements = read_statements(tx, first, req.creator).await?;
    Ok(MonthData {
        statements,
        execution_id,
        execution_range,
        settled_by,
    })
}

/// The month's creator rows and their videos' rows, checked against each
/// other: a statement whose lines do not add up to its total is refused.
async fn read_statements(
    tx: &Transaction<'_>,
    month: Day,
    creator: Option<i64>,
) -> Result<Vec<Statement>> {
    let creators = tx
        .query(
            &format!(
                "SELECT creator_id, {SUM_COLUMNS} FROM settlement_creator \
                 WHERE period_kind = 'month' AND period_start = $1 \
                   AND ($2::int8 IS NULL OR creator_id = $2) ORDER BY creator_id"
            ),
            &[&month.date(), &creator],
        )
        .await
        .db("reading the month's creator rows")?;
    let videos = tx
        .query(
            &format!(
                "SELECT v.uploader_id, s.video_id, v.title, {cols} FROM settlement_video s \
                 LEFT JOIN videos v USING (video_id) \
                 WHERE s.period_kind = 'month' AND s.period_start = $1 \
                   AND ($2::int8 IS NULL OR v.uploader_id = $2) \
                 ORDER BY v.uploader_id, s.video_id",
                cols = super::show::prefixed("s", SUM_COLUMNS)
            ),
            &[&month.date(), &creator],
        )
        .await
        .db("reading the month's video rows")?;
    let mut statements: Vec<Statement> = creators
        .iter()
        .map(|r| Statement {
            creator_id: r.get(0),
            lines: Vec::new(),
            total: Sums::from_row(r, 1),
        })
        .collect();
    if statements.is_empty() {
        if let Some(id) = creator {
            // A creator with nothing counted this month is owed nothing,
            // and a statement saying so is still a statement.
            statements.push(Statement {
                creator_id: id,
                lines: Vec::new(),
                total: Sums::default(),
            });
        }
    }
    for r in &videos {
        let uploader: Option<i64> = r.get(0);
        let video_id: i64 = r.get(1);
        let at = uploader.and_then(|u| statements.binary_search_by_key(&u, |s| s.creator_id).ok());
        let Some(at) = at else {
            return Err(inconsistent(format!(
                "video {video_id} has a month row but its uploader {} has none",
                uploader
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "(video not in videos)".into())
            )));
        };
        statements[at].lines.push(Line {
            video_id,
            title: r.get::<_, Option<String>>(2).unwrap_or_default(),
            sums: Sums::from_row(r, 3),
        });
    }
    for s in &statements {
        let mut sum = Sums::default();
        for l in &s.lines {
            sum.add(&l.sums);
        }
        if sum != s.total {
            return Err(inconsistent(format!(
                "creator {}'s month row ({:?}) is not the sum of its videos' rows ({:?})",
                s.creator_id, s.total, sum
            )));
        }
    }
    Ok(statements)
}

fn inconsistent(what: String) -> Error {
    Error::Tool(format!(
        "the published rows disagree, so no statement is written: {what}; see `settle verify --quick`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_ranges_join_runs() {
        let d = |n| Day(19_900 + n);
        assert_eq!(day_ranges(&[d(0)]), "2024-06-26");
        assert_eq!(
            day_ranges(&[d(0), d(1), d(2), d(5)]),
            "2024-06-26 to 2024-06-28, 2024-07-01"
        );
    }
}
