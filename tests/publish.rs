//! The swap publish (issue 23) on a real PostgreSQL with the real `settle`
//! binary: readers during a swap see one version of all four published
//! tables, a run killed with SIGKILL between staging and swap leaves the old
//! rows (and its leftovers are dropped by the next publish), and nightly
//! difference publishes after a swapped full run stay exact, as does a swap
//! of a sub-range that must carry the other days' rows over; a settle that
//! fails while the swap stages publishes nothing.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cli::*;
use common::*;
use settle::rules::Day;
use settle::testkit::TestDb;
use tokio_postgres::Client;

const POLL: Duration = Duration::from_millis(20);
const POLL_CAP: u32 = 9_000; // 3 minutes

async fn settle_ok(url: &str, args: &[&str]) -> Output {
    let o = settle_output(url, args).await;
    assert!(o.status.success(), "settle {args:?} failed:\n{}", text(&o));
    o
}

/// The publish method a `--json` run reported.
fn method(o: &Output) -> String {
    stdout_json(o)["publish_method"]["method"]
        .as_str()
        .unwrap_or_else(|| panic!("no publish_method in:\n{}", text(o)))
        .to_string()
}

/// One reading of all four published tables in a single statement.
const STATEMENT_VIEW: &str = "SELECT (SELECT count(*) FROM settlement_video)::text || '/' || \
     (SELECT coalesce(sum(total_amount), 0) FROM settlement_creator)::text || '/' || \
     (SELECT count(*) FROM top_videos)::text || '/' || \
     (SELECT coalesce(max(execution_id), 0) FROM settled_day)::text";

/// The same reading in four statements of one REPEATABLE READ transaction
/// that begins with the documented read lock.
async fn transaction_view(c: &mut Client) -> String {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    tx.batch_execute(settle::pipeline::swap::READ_LOCK)
        .await
        .unwrap();
    let mut parts = Vec::new();
    for q in [
        "SELECT coalesce(max(execution_id), 0)::text FROM settled_day",
        "SELECT count(*)::text FROM settlement_video",
        "SELECT coalesce(sum(total_amount), 0)::text FROM settlement_creator",
        "SELECT count(*)::text FROM top_videos",
    ] {
        parts.push(tx.query_one(q, &[]).await.unwrap().get::<_, String>(0));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tx.commit().await.unwrap();
    // In the statement view's order.
    format!("{}/{}/{}/{}", parts[1], parts[2], parts[3], parts[0])
}

async fn staged_tables(c: &Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_class WHERE relname IN \
         ('settlement_video_next', 'settlement_creator_next', 'top_videos_next')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Readers polling all through a swap publish, in single statements and
/// in multi-statement transactions, see the old version or the new one of
/// every table together, never parts of both.
#[tokio::test(flavor = "multi_thread")]
async fn readers_during_a_swap_see_one_version_of_every_table() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.31, 4000, Order::Logged).await;
    let o = settle_ok(&db.url, &["run", "--all", "--publish", "swap", "--json"]).await;
    assert_eq!(method(&o), "swap");
    let old = c
        .query_one(STATEMENT_VIEW, &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    // Fewer plays: every table's contents change.
    c.batch_execute("DELETE FROM viewing_log WHERE id % 5 = 0")
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for transactional in [false, true] {
        let done = done.clone();
        let config = db.config().clone();
        readers.push(tokio::spawn(async move {
            let mut r = settle::db::connect(&config).await.unwrap();
            let mut seen: Vec<String> = Vec::new();
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let v = if transactional {
                    transaction_view(&mut r).await
                } else {
                    r.query_one(STATEMENT_VIEW, &[]).await.unwrap().get(0)
                };
                reads += 1;
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
            (seen, reads)
        }));
    }
    // The pause holds the staged tables for a while before the swap, so
    // the readers are surely reading when it comes.
    let o = settle_ok(
        &db.url,
        &[
            "run",
            "--all",
            "--force",
            "--publish",
            "swap",
            "--pause-before-swap-ms",
            "1500",
            "--json",
        ],
    )
    .await;
    assert_eq!(method(&o), "swap");
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::SeqCst);
    let new = c
        .query_one(STATEMENT_VIEW, &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_ne!(old, new, "the deletion changed the results");
    for (i, r) in readers.into_iter().enumerate() {
        let (seen, reads) = r.await.unwrap();
        assert!(reads > 10, "reader {i} read {reads} times");
        assert_eq!(seen, [old.clone(), new.clone()], "reader {i} saw {seen:?}");
    }
    assert_eq!(staged_tables(&c).await, 0, "no staged table is left");
    assert_matches_reference(&c, "after a swap publish").await;
    db.drop_db().await;
}

/// SIGKILL with the new tables staged, just before the swap: the published
/// rows and the ledger are the old ones, and the next run drops the
/// leftovers and publishes exact rows.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_publish_leaves_the_old_rows() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.43, 4000, Order::Logged).await;
    settle_ok(&db.url, &["run", "--all"]).await;
    let old = results_digest(&c).await;
    let old_ledger = settled_days(&c).await;
    c.batch_execute("DELETE FROM viewing_log WHERE id % 3 = 0")
        .await
        .unwrap();

    let mut child = settle_cmd(
        &db.url,
        &[
            "run",
            "--all",
            "--force",
            "--publish",
            "swap",
            "--pause-before-swap-ms",
            "600000",
        ],
    )
    .spawn()
    .unwrap();
    let mut polls = 0;
    while staged_tables(&c).await < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before staging"
        );
        polls += 1;
        assert!(polls < POLL_CAP, "the run never staged its tables");
        tokio::time::sleep(POLL).await;
    }
    // Staged and committed: the swap is all that is left.
    child.kill().await.unwrap();
    let status = child.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    assert_eq!(results_digest(&c).await, old, "the old rows are published");
    assert_eq!(
        settled_days(&c).await,
        old_ledger,
        "the ledger is the old one"
    );
    assert_eq!(
        staged_tables(&c).await,
        3,
        "the kill left staged tables behind"
    );

    // The next run (a nightly-size difference publish would do too) drops
    // them and publishes the new rows.
    let o = settle_ok(&db.url, &["run", "--all", "--force", "--json"]).await;
    assert_eq!(staged_tables(&c).await, 0, "leftovers dropped");
    assert_ne!(results_digest(&c).await, old);
    assert!(["swap", "diff"].contains(&method(&o).as_str()));
    assert_matches_reference(&c, "the run after a killed swap").await;
    db.drop_db().await;
}

/// A full run publishes by swap, the nightly runs after it by difference,
/// and a swap of a middle range carries every other day's rows over; the
/// rows equal the reference after each.
#[tokio::test(flavor = "multi_thread")]
async fn nightly_runs_after_a_swapped_full_run_stay_exact() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.57, 4000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    let d = |x: Day| x.to_string();
    // Hold back the last two days, as if they had not happened yet.
    c.batch_execute(&format!(
        "CREATE TABLE held AS SELECT * FROM viewing_log \
         WHERE (started_at AT TIME ZONE INTERVAL '+09:00')::date >= '{}'; \
         DELETE FROM viewing_log WHERE id IN (SELECT id FROM held)",
        Day(last.0 - 1)
    ))
    .await
    .unwrap();
    let o = settle_ok(
        &db.url,
        &[
            "run",
            "--from",
            &d(first),
            "--to",
            &d(Day(last.0 - 2)),
            "--publish",
            "swap",
            "--json",
        ],
    )
    .await;
    assert_eq!(method(&o), "swap");
    c.batch_execute(
        "INSERT INTO viewing_log SELECT * FROM held; DROP TABLE held; ANALYZE viewing_log",
    )
    .await
    .unwrap();
    for night in [Day(last.0 - 1), last] {
        let o = settle_ok(&db.url, &["run", "--date", &d(night), "--json"]).await;
        assert_eq!(method(&o), "diff", "a nightly run writes the difference");
    }
    assert_matches_reference(&c, "nightly runs after a swapped full run").await;

    // A swap of days in the middle: the days before and after are
    // carried into the new tables unchanged.
    let before = results_digest(&c).await;
    let o = settle_ok(
        &db.url,
        &[
            "run",
            "--from",
            &d(Day(first.0 + 2)),
            "--to",
            &d(Day(first.0 + 4)),
            "--force",
            "--publish",
            "swap",
            "--json",
        ],
    )
    .await;
    assert_eq!(method(&o), "swap");
    assert_eq!(
        results_digest(&c).await,
        before,
        "an unchanged range swaps in the same rows"
    );
    assert_matches_reference(&c, "a swap of a middle range").await;
    db.drop_db().await;
}

/// A swap settles on its own thread while the rows are copied. When
/// settling fails part way (here: stored day rows that exceed their stored
/// month, which rebasing the month refuses), the staging transactions roll
/// back and nothing is published: the tables, the ledger and the job
/// record stay as they were, and no staged table is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_settle_failing_while_staging_publishes_nothing() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.61, 4000, Order::Logged).await;
    let (first, _) = data_days(&c).await;
    let d = |x: Day| x.to_string();
    settle_ok(&db.url, &["run", "--all"]).await;
    let (a, b) = (Day(first.0 + 2), Day(first.0 + 4));
    let n = c
        .execute(
            "UPDATE settlement_video SET views = views + 1000000000 \
             WHERE period_kind = 'day' AND period_start BETWEEN $1 AND $2",
            &[&a.date(), &b.date()],
        )
        .await
        .unwrap();
    assert!(n > 0, "no stored day rows to corrupt");
    let before = results_digest(&c).await;
    let ledger = settled_days(&c).await;

    let o = settle_output(
        &db.url,
        &[
            "run",
            "--from",
            &d(a),
            "--to",
            &d(b),
            "--force",
            "--publish",
            "swap",
        ],
    )
    .await;
    assert!(!o.status.success(), "the run succeeded:\n{}", text(&o));
    assert!(
        text(&o).contains("settling failed") && text(&o).contains("nothing was published"),
        "unclear error:\n{}",
        text(&o)
    );
    assert_eq!(results_digest(&c).await, before, "nothing was published");
    assert_eq!(settled_days(&c).await, ledger, "the ledger is unchanged");
    assert_eq!(staged_tables(&c).await, 0, "no staged table is left");
    let failed: i64 = c
        .query_one(
            "SELECT count(*) FROM job_execution WHERE status = 'FAILED'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 1, "the execution is recorded as failed");

    // A full run replaces the bad rows.
    settle_ok(&db.url, &["run", "--all", "--force"]).await;
    assert_matches_reference(&c, "the run after a failed settle").await;
    db.drop_db().await;
}
