//! A rerun over settled days notices every change to their input: plays
//! deleted, a play moved to another video, a video given another uploader.
//! It settles again from the earliest changed day through the last settled
//! day, and the rows then equal the reference on the same log; an unchanged
//! rerun stays a no-op.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use settle::engine::{self, Outcome, RunOptions, RunSummary};
use settle::jobs::Requested;
use settle::rules::Day;
use settle::testkit::TestDb;
use tokio_postgres::Client;

/// A run that is not forced, as an operator types it.
fn plain(first: Day, last: Day) -> RunOptions {
    let mut o = opts(Requested::Days(first, last), 2, 2);
    o.force = false;
    o
}

async fn run_plain(db: &settle::db::Database, first: Day, last: Day) -> Outcome {
    engine::run(
        db,
        &plain(first, last),
        Arc::new(AtomicBool::new(false)),
        &engine::Quiet,
    )
    .await
    .expect("run")
}

fn completed(o: Outcome) -> RunSummary {
    match o {
        Outcome::Completed(s) => *s,
        Outcome::AlreadyCompleted { execution_id } => {
            panic!("a changed range was taken as settled by execution {execution_id}")
        }
    }
}

async fn settle_one_by_one(db: &settle::db::Database, c: &Client) -> (Day, Day) {
    let (lo, hi) = data_days(c).await;
    for d in lo.0..=hi.0 {
        let s = completed(run_plain(db, Day(d), Day(d)).await);
        assert!(s.input_changes.is_none(), "nothing changed yet: {s:?}");
    }
    (lo, hi)
}

async fn assert_noop(db: &settle::db::Database, d: Day) {
    match run_plain(db, d, d).await {
        Outcome::AlreadyCompleted { .. } => {}
        Outcome::Completed(s) => panic!("an unchanged rerun settled again: {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_plays_on_a_settled_day_are_settled_again_through_the_last_day() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.61, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let (lo, hi) = settle_one_by_one(&database, &c).await;
    let mid = Day((lo.0 + hi.0) / 2);
    assert_noop(&database, mid).await;

    // The plays of the busiest video that day, the way fraud is removed.
    let deleted = c
        .execute(
            "DELETE FROM viewing_log WHERE video_id = (
                 SELECT video_id FROM viewing_log
                 WHERE (started_at AT TIME ZONE INTERVAL '+09:00')::date = $1
                 GROUP BY video_id ORDER BY count(*) DESC, video_id LIMIT 1)
             AND (started_at AT TIME ZONE INTERVAL '+09:00')::date = $1",
            &[&mid.date()],
        )
        .await
        .unwrap();
    assert!(deleted > 10, "deleted {deleted}");
    let s = completed(run_plain(&database, mid, mid).await);
    let changes = s
        .input_changes
        .clone()
        .expect("the summary names the change");
    assert_eq!(changes.days.len(), 1, "{changes:?}");
    assert_eq!(changes.days[0].day, mid);
    assert_eq!(changes.days[0].deleted, deleted as i64);
    assert_eq!(changes.days[0].net(), -(deleted as i64));
    assert_eq!(s.first_day.as_deref(), Some(mid.to_string().as_str()));
    assert_eq!(s.last_day.as_deref(), Some(hi.to_string().as_str()));
    assert_matches_reference(&c, "after deleting plays of a settled day").await;
    assert_noop(&database, mid).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_play_moved_to_another_video_is_settled_again() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.62, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let (lo, hi) = settle_one_by_one(&database, &c).await;
    let day3 = Day(lo.0 + 2);
    // A counted-looking play of day 3 now belongs to another, longer video.
    let moved = c
        .execute(
            "UPDATE viewing_log SET video_id = (SELECT max(video_id) FROM videos)
             WHERE id = (SELECT min(id) FROM viewing_log
                         WHERE (started_at AT TIME ZONE INTERVAL '+09:00')::date = $1
                           AND start_position = 0 AND end_position > 0)",
            &[&day3.date()],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    // The operator reruns the last night, not the corrected day: the run
    // goes back to it by itself.
    let s = completed(run_plain(&database, hi, hi).await);
    let changes = s.input_changes.clone().expect("the change is named");
    assert_eq!(changes.days.len(), 1, "{changes:?}");
    assert_eq!((changes.days[0].day, changes.days[0].updated), (day3, 1));
    assert_eq!(changes.days[0].net(), 0);
    assert_eq!(s.restated_from.as_deref(), Some(day3.to_string().as_str()));
    assert_matches_reference(&c, "after moving a play to another video").await;
    assert_noop(&database, hi).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_given_another_uploader_is_settled_again_from_its_first_play() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.63, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let (lo, hi) = settle_one_by_one(&database, &c).await;
    // The video with the most plays changes hands: its self plays and its
    // creator rows change.
    let video: i64 = c
        .query_one(
            "SELECT video_id FROM viewing_log GROUP BY video_id ORDER BY count(*) DESC, video_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let first_play: chrono::NaiveDate = c
        .query_one(
            "SELECT min((started_at AT TIME ZONE INTERVAL '+09:00')::date) FROM viewing_log WHERE video_id = $1",
            &[&video],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE videos SET uploader_id = uploader_id + 1 WHERE video_id = $1",
        &[&video],
    )
    .await
    .unwrap();
    // A title change alone is not an input change.
    c.execute(
        "UPDATE videos SET title = title || ' (renamed)' WHERE video_id <> $1",
        &[&video],
    )
    .await
    .unwrap();
    let s = completed(run_plain(&database, hi, hi).await);
    let changes = s.input_changes.clone().expect("the change is named");
    assert_eq!(changes.videos.len(), 1, "{changes:?}");
    assert_eq!(changes.videos[0].video_id, video);
    assert_eq!(changes.videos[0].from, Day::from_date(first_play));
    assert!(changes.days.is_empty());
    let from = Day::from_date(first_play).max(lo);
    if from < hi {
        assert_eq!(s.restated_from.as_deref(), Some(from.to_string().as_str()));
    }
    assert_matches_reference(&c, "after a video changed uploader").await;
    assert_noop(&database, hi).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_rerun_is_a_no_op_and_inserts_into_new_days_are_not_changes() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.64, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let (lo, hi) = data_days(&c).await;
    // Settle all but the last day, then the last day's plays "arrive".
    let last_rows: Vec<i64> = c
        .query(
            "SELECT id FROM viewing_log WHERE (started_at AT TIME ZONE INTERVAL '+09:00')::date = $1",
            &[&hi.date()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.execute(
        "CREATE TABLE held AS SELECT * FROM viewing_log WHERE id = ANY($1)",
        &[&last_rows],
    )
    .await
    .unwrap();
    c.execute("DELETE FROM viewing_log WHERE id = ANY($1)", &[&last_rows])
        .await
        .unwrap();
    completed(run_plain(&database, lo, Day(hi.0 - 1)).await);
    c.batch_execute("INSERT INTO viewing_log SELECT * FROM held")
        .await
        .unwrap();
    let pending: i64 = c
        .query_one("SELECT count(*) FROM input_change", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "plays of an unsettled day are no change");
    let s = completed(run_plain(&database, hi, hi).await);
    assert!(s.input_changes.is_none(), "{s:?}");
    assert_eq!(s.first_day.as_deref(), Some(hi.to_string().as_str()));
    assert_noop(&database, hi).await;
    match run_plain(&database, lo, Day(hi.0 - 1)).await {
        Outcome::AlreadyCompleted { .. } => {}
        Outcome::Completed(s) => panic!("an unchanged rerun settled again: {s:?}"),
    }
    assert_matches_reference(&c, "after settling the arrived day").await;
    db.drop_db().await;
}
