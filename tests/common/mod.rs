//! Shared by the engine's integration tests: hard generated data, a clean
//! slate between runs, and running the engine in-process.
#![allow(dead_code)]

pub mod cli;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use settle::db::Database;
use settle::engine::{self, Outcome, RunOptions, RunSummary};
use settle::jobs::Requested;
use settle::rules::Day;
use tokio_postgres::Client;

/// How the generated rows get their ids and physical order.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// ids in stop-time order, inserted in id order (like the real log).
    Logged,
    /// ids a random permutation, inserted in random physical order.
    Shuffled,
}

/// Fills `videos` and `viewing_log` with data built to be hard: many rapid
/// replays at 0 s, 29.999999 s and exactly 30 s, equal timestamps, plays
/// around Seoul midnight, 12 days spanning a week that crosses from July to
/// August, self plays and invalid rows of every kind. Deterministic per seed.
pub async fn load_hard_data(c: &Client, seed: f64, anchors: i64, order: Order) {
    let id_order = match order {
        Order::Logged => "t.started_at + t.len * interval '1 second', t.k",
        Order::Shuffled => "random()",
    };
    let insert_order = match order {
        Order::Logged => "id",
        Order::Shuffled => "random()",
    };
    let sql = format!(
        r#"
SELECT setseed({seed});
INSERT INTO videos (video_id, uploader_id, duration_seconds, title, created_at)
SELECT v, 1 + (v % 15), (ARRAY[120, 299, 300, 301, 600, 905, 1800, 3600, 7200])[1 + v % 9], 'video ' || v, timestamptz '2024-01-01'
FROM generate_series(1, 40) v;
CREATE TEMP TABLE anchors AS
SELECT a,
       1 + floor(random() * 120)::int8 AS user_id,
       CASE WHEN random() < 0.02 THEN 999 ELSE 1 + floor(random() * 40)::int8 END AS video_id,
       CASE WHEN random() < 0.2
            THEN timestamptz '2024-07-25 15:00:00+00' + floor(random() * 12) * interval '1 day'
                 + round((random() * 80 - 40)::numeric, 6) * interval '1 second'
            ELSE timestamptz '2024-07-25 15:00:00+00'
                 + round((random() * 12 * 86400)::numeric, 6) * interval '1 second'
       END AS t0
FROM generate_series(1, {anchors}) a;
CREATE TEMP TABLE plays AS
SELECT row_number() OVER () AS k, a.user_id, a.video_id,
       a.t0 + (ARRAY[0, 0, 29.999999, 30, 30.000001, 12.5, 45, 59.9, 3600])[1 + floor(random() * 9)::int] * s.n * interval '1 second' AS started_at,
       coalesce(v.duration_seconds, 600) AS dur, random() AS r1, random() AS r2, random() AS r3
FROM anchors a
CROSS JOIN LATERAL generate_series(0, floor(random() * 4)::int) AS s(n)
LEFT JOIN videos v ON v.video_id = a.video_id;
CREATE TEMP TABLE positioned AS
SELECT k, user_id, video_id, started_at, dur,
       CASE WHEN r1 < 0.01 THEN -5
            WHEN r1 < 0.3 THEN 300 * floor(r2 * (dur / 300 + 1))::int
            WHEN r1 < 0.6 THEN 0
            ELSE floor(r2 * dur)::int END AS sp,
       r3
FROM plays;
CREATE TEMP TABLE t AS
SELECT k, user_id, video_id, started_at,
       least(sp, dur) AS start_position,
       CASE WHEN r3 < 0.01 THEN least(sp, dur) - 1
            WHEN r3 < 0.02 THEN dur + 1
            WHEN r3 < 0.05 THEN least(sp, dur)
            WHEN r3 < 0.15 THEN dur
            ELSE least(sp, dur) + floor((r3 - 0.15) / 0.85 * (dur - least(sp, dur)))::int END AS end_position,
       greatest(0, dur) AS len
FROM positioned;
CREATE TEMP TABLE numbered AS
SELECT row_number() OVER (ORDER BY {id_order}) AS id, t.* FROM t;
INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position)
SELECT id, user_id, video_id, started_at, start_position, end_position FROM numbered ORDER BY {insert_order};
DROP TABLE anchors, plays, positioned, t, numbered;
ANALYZE videos, viewing_log;
"#
    );
    c.batch_execute(&sql).await.expect("hard data loads");
}

/// Forgets every result and every execution, as on a fresh install.
pub async fn reset_results(c: &Client) {
    c.batch_execute(
        "TRUNCATE settlement_video, settlement_creator, top_videos, settled_day, \
         rejected_play, partition_execution, job_execution, job_instance",
    )
    .await
    .expect("results reset");
}

pub fn opts(req: Requested, partitions: u32, workers: usize) -> RunOptions {
    let mut o = RunOptions::new(req);
    o.partitions = Some(partitions);
    o.workers = workers;
    o.force = true;
    o
}

pub async fn run(db: &Database, o: &RunOptions) -> RunSummary {
    match engine::run(db, o, Arc::new(AtomicBool::new(false)), &engine::Quiet)
        .await
        .unwrap_or_else(|e| panic!("run {:?} failed: {e}", o.requested))
    {
        Outcome::Completed(s) => *s,
        Outcome::AlreadyCompleted { execution_id } => {
            panic!("unexpectedly already completed by {execution_id}")
        }
    }
}

pub fn day(s: &str) -> Day {
    Day::from_date(s.parse().expect("a date"))
}

/// First and last Seoul day with plays.
pub async fn data_days(c: &Client) -> (Day, Day) {
    let r = c
        .query_one(
            "SELECT min((started_at AT TIME ZONE INTERVAL '+09:00')::date), max((started_at AT TIME ZONE INTERVAL '+09:00')::date) FROM viewing_log",
            &[],
        )
        .await
        .unwrap();
    (Day::from_date(r.get(0)), Day::from_date(r.get(1)))
}

/// Runs the reference and asserts the engine's tables equal its tables.
pub async fn assert_matches_reference(c: &Client, what: &str) {
    settle::tools::reference::run(c)
        .await
        .expect("reference runs");
    let diff = settle::tools::reference::compare(c)
        .await
        .expect("compare runs");
    assert!(
        diff.is_empty(),
        "{what}: engine differs from sql/reference:\n{diff}"
    );
}

/// A digest of every published result row (and their count), to show that
/// a run changed nothing.
pub async fn results_digest(c: &Client) -> String {
    c.query_one(
        "SELECT (SELECT count(*) FROM settlement_video)::text || '/' || (SELECT count(*) FROM settlement_creator)::text
                || '/' || (SELECT count(*) FROM top_videos)::text || ':' ||
                coalesce((SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM settlement_video t), '-') ||
                coalesce((SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM settlement_creator t), '-') ||
                coalesce((SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM top_videos t), '-')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The ledger: each settled day and the execution that settled it.
pub async fn settled_days(c: &Client) -> Vec<(String, Option<i64>)> {
    c.query(
        "SELECT day::text, execution_id FROM settled_day ORDER BY day",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}
