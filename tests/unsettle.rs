//! `settle unsettle`: the newest settled days are taken back in one
//! transaction, leaving exactly what settling only the earlier days left;
//! anything that would leave a gap is refused and changes nothing.

mod common;

use common::cli::*;
use common::*;
use settle::jobs::Requested;
use settle::rules::Day;
use settle::testkit::TestDb;
use tokio_postgres::Client;

/// The result tables and the ledger, as one comparable text per table.
async fn results(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM settlement_video t",
        "SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM settlement_creator t",
        "SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM top_videos t",
        "SELECT coalesce(string_agg(day::text, '|' ORDER BY day), '') FROM settled_day",
    ] {
        out.push(c.query_one(sql, &[]).await.unwrap().get(0));
    }
    out
}

fn days(a: Day, b: Day) -> Requested {
    Requested::Days(a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn unsettling_the_newest_days_leaves_what_settling_the_earlier_days_left() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.37, 3000, Order::Logged).await;
    let (lo, hi) = data_days(&c).await;
    let database = db.database().await.unwrap();
    let cut = Day(lo.0 + 3);
    // The hard data starts on a Thursday in July: the cut keeps part of a
    // week and of a month, and removes a later week and month whole.
    assert_ne!(cut.week_start(), Day(hi.0).week_start());
    assert_ne!(cut.month_start(), hi.month_start());
    assert!(cut.week_start() < cut && cut.month_start() < cut);

    run(&database, &opts(days(lo, Day(cut.0 - 1)), 4, 2)).await;
    let before = results(&c).await;
    run(&database, &opts(days(cut, hi), 4, 2)).await;
    let full = results(&c).await;
    assert_ne!(before, full);

    // Without --yes: says what would go, changes nothing.
    let o = settle_output(&db.url, &["unsettle", "--from", &cut.to_string()]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("--yes"), "{}", text(&o));
    // A range that stops before the last settled day would leave a gap.
    let mid = Day(hi.0 - 2).to_string();
    let o = settle_output(
        &db.url,
        &[
            "unsettle",
            "--from",
            &cut.to_string(),
            "--to",
            &mid,
            "--yes",
        ],
    )
    .await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        stderr(&o).contains("after a gap") && stderr(&o).contains(&format!("--to {hi}")),
        "{}",
        text(&o)
    );
    // Days after the settled history: nothing to undo.
    let after = Day(hi.0 + 5).to_string();
    let o = settle_output(&db.url, &["unsettle", "--from", &after, "--yes"]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("is settled"), "{}", text(&o));
    assert_eq!(results(&c).await, full, "refused unsettles change nothing");

    let o = settle_output(
        &db.url,
        &["unsettle", "--from", &cut.to_string(), "--yes", "--json"],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let u = stdout_json(&o);
    assert_eq!(u["status"], "OK");
    assert_eq!(u["days"].as_i64(), Some((hi.0 - cut.0 + 1) as i64));
    assert_eq!(u["rebuilt"].as_array().map(Vec::len), Some(2), "{u}");
    let after_unsettle = results(&c).await;
    for (i, name) in [
        "settlement_video",
        "settlement_creator",
        "top_videos",
        "settled_day",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            after_unsettle[i],
            before[i],
            "{name} after unsettle equals settling only {lo} .. {}",
            Day(cut.0 - 1)
        );
    }

    // The history says so, and the days settle again to the reference.
    let o = settle_output(&db.url, &["history", "--all"]).await;
    assert!(
        text(&o).contains(&format!("{cut} .. {hi}")),
        "history lists the unsettle: {}",
        text(&o)
    );
    let o = settle_output(
        &db.url,
        &["run", "--from", &cut.to_string(), "--to", &hi.to_string()],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        results(&c).await,
        full,
        "settled again, as before the unsettle"
    );
    assert_matches_reference(&c, "settled again after an unsettle").await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsettle_waits_for_no_run_and_refuses_while_one_holds_the_lock() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.52, 500, Order::Logged).await;
    let (lo, hi) = data_days(&c).await;
    let database = db.database().await.unwrap();
    run(&database, &opts(days(lo, hi), 2, 1)).await;
    let full = results(&c).await;
    // Another session holds the settlement lock, as a running run does.
    let holder = db.connect().await.unwrap();
    holder
        .query_one("SELECT pg_advisory_lock($1)", &[&settle::jobs::RUN_LOCK])
        .await
        .unwrap();
    let o = settle_output(&db.url, &["unsettle", "--from", &lo.to_string(), "--yes"]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(results(&c).await, full);
    drop(holder);
    let o = settle_output(&db.url, &["unsettle", "--from", &lo.to_string(), "--yes"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        results(&c).await,
        vec![String::new(); 4],
        "every day unsettled"
    );
    db.drop_db().await;
}
