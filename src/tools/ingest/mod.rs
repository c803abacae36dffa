//! `settle ingest`: appends play files to viewing_log exactly once.
//!
//! Each file is read twice. The first pass digests and parses it and counts
//! its rejects (rows that cannot be parsed), so that nothing is written
//! from a file with more than `max_rejects`. The second pass parses it
//! again and streams its plays with binary COPY in one transaction that
//! also records the file (name, size, SHA-256, rows): a crash leaves
//! nothing of it, and the same content is refused next time. Files load in
//! parallel, each over its own connection.

mod load;
pub mod parquet;
pub mod parse;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

pub use load::{is_partitioned, partitions, Part};
pub use parse::{Format, Reject, Zone};

use crate::db::Database;
use crate::error::{Error, Result};
use crate::rules::calendar::Day;

#[derive(Clone, Debug)]
pub struct Options {
    /// `None`: from each file's extension.
    pub format: Option<Format>,
    pub max_rejects: u64,
    /// Load content that was loaded before.
    pub force: bool,
    /// Where zone-less timestamps were written.
    pub timezone: Option<Zone>,
    /// Files loaded at once.
    pub jobs: usize,
    /// Test hook: the second pass stops for good after this many rows.
    pub pause_at_row: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Loaded,
    /// The same content was loaded before (and not forced).
    Duplicate,
    /// More unparseable rows than --max-rejects: nothing loaded.
    TooManyRejects,
    /// The file could not be loaded (unreadable, no zone, a database
    /// error): nothing loaded.
    Failed,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FileReport {
    pub path: String,
    pub format: Option<Format>,
    pub size_bytes: u64,
    pub sha256: String,
    pub outcome: Outcome,
    /// Why it was not loaded, in a sentence.
    pub detail: Option<String>,
    /// Whether the failure was the file's or the caller's (usage), not the
    /// database's.
    pub usage_error: bool,
    pub file_id: Option<i64>,
    pub rows_loaded: u64,
    pub reject_count: u64,
    /// The first rejects (at most [`load::REJECTS_KEPT`]).
    pub rejects: Vec<Reject>,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// When the content was loaded before (a duplicate) or now.
    pub loaded_at: Option<DateTime<Utc>>,
    pub partitions_created: Vec<String>,
    /// Already-settled Seoul days the file's plays fall on.
    pub settled_days: Vec<Day>,
    pub secs: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub rows_loaded: u64,
    pub secs: f64,
    pub rows_per_sec: f64,
    /// Settled days that now have plays they did not have when settled.
    pub settled_days: Vec<Day>,
}

/// Hands out commit turns in id-reservation order, so that ids grow with
/// commit order (the engine finds rows written after a run by their ids).
#[derive(Default)]
struct Turns {
    state: Mutex<(u64, BTreeSet<u64>)>,
    notify: tokio::sync::Notify,
    issued: Mutex<u64>,
    /// One lock per content: two paths with the same content in one call
    /// load one after the other (so the second finds the first loaded),
    /// and never wait on each other's turn while holding the file lock.
    same: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a file takes its turn, its ids and its partitions, so
    /// turns follow id order and a partition is never created while a
    /// later file holds the log waiting for this one's turn (a deadlock).
    reserve: tokio::sync::Mutex<()>,
}

/// A place in the commit order; leaving it (dropped) lets the next go.
struct Ticket {
    turns: Arc<Turns>,
    no: u64,
}

impl Turns {
    fn take(self: &Arc<Self>) -> Ticket {
        let mut n = self.issued.lock().expect("turns");
        *n += 1;
        Ticket {
            turns: self.clone(),
            no: *n - 1,
        }
    }
}

impl Ticket {
    async fn wait(&self) {
        loop {
            let notified = self.turns.notify.notified();
            if self.turns.state.lock().expect("turns").0 >= self.no {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.turns.state.lock().expect("turns");
        s.1.insert(self.no);
        loop {
            let next = s.0;
            if !s.1.remove(&next) {
                break;
            }
            s.0 += 1;
        }
        drop(s);
        self.turns.notify.notify_waiters();
    }
}

/// Loads `files`; one report per file, in their order.
pub async fn ingest(database: &Database, files: &[PathBuf], opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let turns = Arc::new(Turns::default());
    let reports: Vec<FileReport> = futures_util::stream::iter(files.iter().map(|p| {
        let turns = turns.clone();
        async move { one_file(database, p, opts, &turns).await }
    }))
    .buffered(opts.jobs.max(1))
    .collect()
    .await;
    let rows: u64 = reports.iter().map(|r| r.rows_loaded).sum();
    let secs = t0.elapsed().as_secs_f64();
    let days: BTreeSet<Day> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Loaded)
        .flat_map(|r| r.settled_days.iter().copied())
        .collect();
    Ok(Report {
        files: reports,
        rows_loaded: rows,
        secs,
        rows_per_sec: if secs > 0.0 { rows as f64 / secs } else { 0.0 },
        settled_days: days.into_iter().collect(),
    })
}

fn blank(path: &Path, format: Option<Format>) -> FileReport {
    FileReport {
        path: path.display().to_string(),
        format,
        size_bytes: 0,
        sha256: String::new(),
        outcome: Outcome::Failed,
        detail: None,
        usage_error: false,
        file_id: None,
        rows_loaded: 0,
        reject_count: 0,
        rejects: Vec::new(),
        first_id: None,
        last_id: None,
        loaded_at: None,
        partitions_created: Vec::new(),
        settled_days: Vec::new(),
        secs: 0.0,
    }
}

async fn one_file(
    database: &Database,
    path: &Path,
    opts: &Options,
    turns: &Arc<Turns>,
) -> FileReport {
    let t0 = Instant::now();
    let format = opts.format.or_else(|| Format::from_path(path));
    let mut rep = blank(path, format);
    if let Err(e) = load_file(database, path, opts, turns, &mut rep).await {
        rep.outcome = Outcome::Failed;
        rep.usage_error = matches!(e, Error::Usage(_) | Error::Io { .. });
        rep.detail = Some(e.to_string());
        rep.rows_loaded = 0;
    }
    rep.secs = t0.elapsed().as_secs_f64();
    rep
}

async fn load_file(
    database: &Database,
    path: &Path,
    opts: &Options,
    turns: &Arc<Turns>,
    rep: &mut FileReport,
) -> Result<()> {
    let Some(format) = rep.format else {
        return Err(Error::Usage(format!(
            "{}: cannot tell the format from the name; give --format csv|tsv|parquet|ndjson",
            path.display()
        )));
    };
    let owned = path.to_path_buf();
    let (sha, size) = blocking(move || load::digest(&owned)).await?;
    rep.sha256 = sha.clone();
    rep.size_bytes = size;
    let same = turns
        .same
        .lock()
        .expect("turns")
        .entry(sha.clone())
        .or_default()
        .clone();
    let _same = same.lock().await;
    let mut c = database.connect().await?;
    if !opts.force {
        if let Some((_, at, name)) = load::loaded_before(&c, &sha).await? {
            duplicate(rep, at, &name);
            return Ok(());
        }
    }
    let (owned, zone) = (path.to_path_buf(), opts.timezone);
    let survey = blocking(move || load::survey(&owned, format, zone)).await?;
    rep.reject_count = survey.reject_count;
    rep.rejects = survey.rejects.clone();
    let name = path.display().to_string();
    let record = load::Record {
        name: &name,
        size,
        sha: &sha,
        format,
        forced: opts.force,
    };
    if survey.reject_count > opts.max_rejects {
        rep.file_id = Some(load::record_refused(&c, &record, &survey).await?);
        rep.outcome = Outcome::TooManyRejects;
        rep.detail = Some(format!(
            "{} rows cannot be parsed, more than --max-rejects {}; nothing of the file was loaded",
            survey.reject_count, opts.max_rejects
        ));
        return Ok(());
    }
    let reserving = turns.reserve.lock().await;
    let (ticket, first_id) = if survey.has_id || survey.rows == 0 {
        (None, None)
    } else {
        let ticket = turns.take();
        (
            Some(ticket),
            Some(load::reserve_ids(&mut c, survey.rows).await?),
        )
    };
    let ids = match (survey.id_range, first_id) {
        (Some(r), _) => Some(r),
        (None, Some(f)) => Some((f, f + survey.rows as i64 - 1)),
        _ => None,
    };
    if let Some((lo, hi)) = ids {
        rep.partitions_created = load::ensure_partitions(&mut c, lo, hi).await?;
    }
    drop(reserving);
    let pass = load::Pass {
        format,
        zone,
        first_id,
        pause_at_row: opts.pause_at_row,
    };
    let turn = async {
        if let Some(t) = &ticket {
            t.wait().await
        }
    };
    match load::load(&mut c, path, &record, &survey, pass, turn).await? {
        Err((at, name)) => {
            duplicate(rep, at, &name);
            Ok(())
        }
        Ok((file_id, at)) => {
            drop(ticket);
            rep.outcome = Outcome::Loaded;
            rep.file_id = Some(file_id);
            rep.loaded_at = Some(at);
            rep.rows_loaded = survey.rows;
            (rep.first_id, rep.last_id) = (ids.map(|i| i.0), ids.map(|i| i.1));
            rep.settled_days = load::settled_among(&c, &survey.days).await?;
            Ok(())
        }
    }
}

fn duplicate(rep: &mut FileReport, at: DateTime<Utc>, name: &str) {
    rep.outcome = Outcome::Duplicate;
    rep.loaded_at = Some(at);
    rep.detail = Some(format!(
        "the same content (SHA-256 {}) was loaded at {} as {name}; --force loads it again",
        &rep.sha256[..12],
        at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Tool(format!("a file reader died: {e}")))?
}
