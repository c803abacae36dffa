//! The partition plan: a new one from the log's ids and statistics, or a
//! failed execution's own, fitted to the log as this run's snapshot sees it.

use tokio_postgres::Client;

use super::events::{Event, Note, Observer};
use super::RunOptions;
use crate::error::{DbContext, Error, Refusal, Result};
use crate::jobs;
use crate::pipeline::aggregate::PartitionOutput;
use crate::pipeline::partition::{self, Partition, Scope};
use crate::rules::calendar::{seoul_day_pg, Day};

/// The plan for this run: a failed execution's own when this run continues
/// it (with its kept results, fitted to the log as the snapshot sees it),
/// else a new one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan_or_continue(
    snap: &Client,
    scope: &Scope,
    opts: &RunOptions,
    exec: &jobs::Execution,
    (first, last): (Option<Day>, Option<Day>),
    videos: usize,
    repo: &Client,
    obs: &dyn Observer,
) -> Result<(Vec<Partition>, Vec<(PartitionOutput, i64)>)> {
    let mut kept: Vec<(PartitionOutput, i64)> = Vec::new();
    // Kept results hold only the rows of the range they were read for: if
    // this run's effective range differs (another run settled later days
    // meanwhile, so tiers now carry further), none of them can be reused.
    let restart_of = match exec.restart_of {
        Some(prev) if jobs::effective_range(repo, prev).await? != (first, last) => {
            obs.event(&Event::Note(Note::ReadAgain {
                previous: prev,
                first,
                last,
            }));
            None
        }
        other => other,
    };
    let Some(prev) = restart_of else {
        return Ok((new_plan(snap, scope, opts, videos).await?, kept));
    };
    let mut plan = Vec::new();
    for (p, result) in jobs::previous_plan(repo, prev).await? {
        if let Some(r) = result {
            kept.push(r);
        }
        plan.push(p);
    }
    if plan.is_empty() {
        return Ok((new_plan(snap, scope, opts, videos).await?, kept));
    }
    let (changed, added) = reconcile_plan(snap, scope, &mut plan, &mut kept).await?;
    if changed > 0 || added > 0 {
        obs.event(&Event::Note(Note::LogChanged {
            previous: prev,
            changed,
            added,
        }));
    }
    Ok((plan, kept))
}

/// Fits a failed execution's plan to the log as this run's snapshot sees it.
/// Rows may have been added or removed since that execution read: a
/// finished partition whose row count changed is read again rather than
/// reused, and ids outside the old plan get partitions of their own, so the
/// continuation reads every row of its snapshot exactly once. (Equal counts
/// after a delete and an insert in the same id range would go unnoticed; an
/// append-only log with increasing ids never does that.)
async fn reconcile_plan(
    snap: &Client,
    scope: &Scope,
    plan: &mut Vec<Partition>,
    kept: &mut Vec<(PartitionOutput, i64)>,
) -> Result<(usize, usize)> {
    let cond = scope.sql_condition();
    let cond_and = |prefix: &str| {
        if cond.is_empty() {
            String::new()
        } else {
            format!("{prefix} {cond}")
        }
    };
    let parts: Vec<(Partition, i64)> = kept
        .iter()
        .filter_map(|(o, by)| o.partition.map(|p| (p, *by)))
        .collect();
    let nos: Vec<i64> = parts.iter().map(|(p, _)| p.no as i64).collect();
    let los: Vec<i64> = parts.iter().map(|(p, _)| p.id_lo).collect();
    let his: Vec<i64> = parts.iter().map(|(p, _)| p.id_hi).collect();
    let readers: Vec<i64> = parts.iter().map(|(_, by)| *by).collect();
    // A kept partition is read again when its row count changed, or when a
    // row of it was written (inserted, or updated in place as when a
    // rejected row is corrected) by a transaction its reading snapshot could
    // not see. The cheap age test passes only rows written at or after that
    // snapshot's xmin; for those, the row's 32-bit xmin is widened to an
    // xid8 (same epoch as the current next xid, or the one before) and
    // checked against the snapshot itself, so transactions that merely ran
    // beside it (in any database of the cluster) do not count.
    let sql = format!(
        "WITH cur AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS nx) \
         SELECT k.no, c.n, c.newer FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS k(no, lo, hi, by) \
         LEFT JOIN job_execution e ON e.execution_id = k.by \
         CROSS JOIN cur \
         CROSS JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE e.snapshot IS NULL OR ( \
                 age(v.xmin) <= age((pg_snapshot_xmin(e.snapshot::pg_snapshot)::text::int8 % 4294967296)::text::xid) \
                 AND NOT pg_visible_in_snapshot( \
                     (((cur.nx >> 32) << 32) + v.xmin::text::int8 \
                      - CASE WHEN v.xmin::text::int8 > cur.nx % 4294967296 THEN 4294967296 ELSE 0 END)::text::xid8, \
                     e.snapshot::pg_snapshot))) AS newer \
             FROM viewing_log v WHERE v.id BETWEEN k.lo AND k.hi {}) c",
        cond_and("AND")
    );
    let now: std::collections::HashMap<u32, (u64, i64)> = snap
        .query(&sql, &[&nos, &los, &his, &readers])
        .await
        .db("checking the finished partitions of the failed execution")?
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u32,
                (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2)),
            )
        })
        .collect();
    let before = kept.len();
    kept.retain(|(o, _)| {
        o.partition
            .is_some_and(|p| now.get(&p.no) == Some(&(o.counts.rows_read, 0)))
    });
    let changed = before - kept.len();

    let sql = format!(
        "SELECT min(id), max(id) FROM viewing_log {}",
        cond_and("WHERE")
    );
    let r = snap
        .query_one(&sql, &[])
        .await
        .db("finding the rows added since the failed execution")?;
    let (lo, hi): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
    let plan_lo = plan
        .iter()
        .map(|p| p.id_lo)
        .min()
        .expect("a non-empty plan");
    let plan_hi = plan
        .iter()
        .map(|p| p.id_hi)
        .max()
        .expect("a non-empty plan");
    // New ranges get partitions about as wide as the old ones.
    let width = (plan_hi as i128 - plan_lo as i128 + 1) / plan.len() as i128;
    let mut next_no = plan.iter().map(|p| p.no).max().expect("a non-empty plan") + 1;
    let mut added = 0;
    let mut add = |a: i64, b: i64, plan: &mut Vec<Partition>| {
        let n = ((b as i128 - a as i128 + 1) / width.max(1)).clamp(1, 4096) as u32;
        for mut p in partition::split(a, b, n) {
            p.no = next_no;
            next_no += 1;
            added += 1;
            plan.push(p);
        }
    };
    if let Some(lo) = lo.filter(|&lo| lo < plan_lo) {
        add(lo, plan_lo - 1, plan);
    }
    if let Some(hi) = hi.filter(|&hi| hi > plan_hi) {
        add(plan_hi + 1, hi, plan);
    }
    Ok((changed, added))
}

/// The planner's row estimate for `viewing_log` rows matching `filter`
/// (from the statistics of the last ANALYZE; nothing is read).
async fn planned_rows(snap: &Client, filter: &str) -> Result<f64> {
    let plan: serde_json::Value = snap
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM viewing_log {filter}"),
            &[],
        )
        .await
        .db("estimating the rows to read")?
        .get(0);
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0))
}

/// A plan's first and last id (none when no row is in scope), its row
/// estimate, and where a bounded range's rows lie inside those ends.
type Ends = (Option<i64>, Option<i64>, i64, Option<(i64, i64)>);

/// The ends of a bounded run's plan: the log's first and last id, so that
/// rows far out of id order are read too (the reads filter by started_at),
/// the planner's row estimate, and where the range's rows lie inside them,
/// found by bisecting ids, to cut there. Exact bounds were a pass over the
/// range's rows before the read: 0.19 s of a 1.8 s nightly run at 100M, 19 s
/// for 30 of 31 days. `(None, None, ..)` when no row is in the range.
async fn bounded_ends(snap: &Client, scope: &Scope) -> Result<Ends> {
    let cond = scope.sql_condition();
    let r = snap
        .query_one(
            &format!(
                "SELECT min(id), max(id), EXISTS (SELECT 1 FROM viewing_log WHERE {cond}) \
                 FROM viewing_log"
            ),
            &[],
        )
        .await
        .db("planning partitions")?;
    let (lo, hi, any): (Option<i64>, Option<i64>, bool) = (r.get(0), r.get(1), r.get(2));
    let (Some(lo), Some(hi), true) = (lo, hi, any) else {
        return Ok((None, None, 0, None));
    };
    let near = |t: Option<i64>, end| async move {
        match t {
            Some(t) => partition::id_near_time(snap, t, lo, hi).await,
            None => Ok(end),
        }
    };
    let inside = (
        near(scope.read_lo, lo).await?,
        near(scope.read_hi, hi).await?,
    );
    let estimate = planned_rows(snap, &format!("WHERE {cond}")).await? as i64;
    Ok((Some(lo), Some(hi), estimate, Some(inside)))
}

async fn new_plan(
    snap: &Client,
    scope: &Scope,
    opts: &RunOptions,
    videos: usize,
) -> Result<Vec<Partition>> {
    let (lo, hi, estimate, inner): Ends = if scope.read_lo.is_none() {
        // A date range excludes them by itself; every row of --all needs a
        // Seoul day, and an infinite started_at has none.
        let infinite = snap
            .query_opt(
                "SELECT id, started_at::text FROM viewing_log WHERE started_at IN ('infinity', '-infinity') LIMIT 1",
                &[],
            )
            .await
            .db("checking viewing_log for infinite started_at")?;
        if let Some(r) = infinite {
            return Err(Error::Refused(Refusal::NoSeoulDay {
                id: r.get(0),
                started_at: r.get(1),
            }));
        }
        let r = snap
            .query_one(
                "SELECT min(id), max(id), (SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'viewing_log'::regclass) FROM viewing_log",
                &[],
            )
            .await
            .db("planning partitions")?;
        let (lo, hi): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
        let est: i64 = r.get(2);
        let span = lo
            .zip(hi)
            .map(|(a, b)| (b as i128 - a as i128 + 1).min(i64::MAX as i128) as i64)
            .unwrap_or(0);
        let estimate = if est > 0 { est.min(span.max(1)) } else { span };
        (lo, hi, estimate, None)
    } else {
        bounded_ends(snap, scope).await?
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    let n = match opts.partitions {
        Some(n) => n,
        None => {
            let days = span_days(snap, scope).await?;
            let day_bytes =
                (videos * std::mem::size_of::<crate::pipeline::aggregate::Cell>()) as u64;
            partition::default_count(
                estimate.max(0) as u64,
                opts.workers * opts.streams.max(1),
                days,
                day_bytes,
            )
        }
    };
    if let Some(inner) = inner {
        return Ok(partition::split_within(lo, hi, inner, n));
    }
    let bounds = partition::leaf_bounds(snap).await?;
    let streams = opts.workers * opts.streams.max(1);
    Ok(partition::plan_ranges(lo, hi, n, streams, &bounds))
}

/// How many Seoul days the read spans, for sizing partitions: the scope's,
/// or for `--all` the days from the log's first id's play to its last's
/// (two primary-key probes; plays out of id order stretch it by hours only).
async fn span_days(snap: &Client, scope: &Scope) -> Result<u64> {
    let (lo, hi) = match (scope.read_lo, scope.read_hi) {
        (Some(lo), Some(hi)) => (lo, hi.saturating_sub(1).max(lo)),
        _ => {
            let r = snap
                .query_one(
                    "SELECT (SELECT started_at FROM viewing_log ORDER BY id LIMIT 1), \
                            (SELECT started_at FROM viewing_log ORDER BY id DESC LIMIT 1)",
                    &[],
                )
                .await
                .db("finding the days the log spans")?;
            let t = |i| {
                r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
                    .map(crate::rules::calendar::utc_to_pg_micros)
                    .unwrap_or(0)
            };
            let (a, b) = (t(0), t(1));
            (a.min(b), a.max(b))
        }
    };
    let (a, b) = (seoul_day_pg(lo), seoul_day_pg(hi));
    Ok((b.0 - a.0) as u64 + 1)
}
