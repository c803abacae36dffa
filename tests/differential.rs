//! Differential tests: the engine against sql/reference/ on data built to be
//! hard, for every partition, worker and stream count, any physical row order, one
//! run versus day by day, and after re-settling a middle day.

mod common;

use common::*;
use settle::jobs::Requested;
use settle::rules::Day;
use settle::testkit::TestDb;

async fn all_configurations(order: Order, seed: f64) {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, seed, 4000, order).await;
    settle::tools::reference::run(&c).await.unwrap();
    let database = db.database().await.unwrap();
    for partitions in [1u32, 2, 7, 64] {
        // Workers, and COPY streams per worker (each stream a pass of its own).
        for (workers, streams) in [(1usize, 1usize), (1, 2), (2, 1), (2, 2), (4, 1)] {
            reset_results(&c).await;
            let mut o = opts(Requested::All, partitions, workers);
            o.streams = streams;
            let s = run(&database, &o).await;
            assert!(s.counted > 0 && s.excluded.rapid_replay > 0 && s.rejected.bad_position > 0);
            // In log order the key filters clear head rows, and the result
            // still equals the reference (a filter that cleared a pairing
            // row would lose a correction).
            assert!(
                matches!(order, Order::Shuffled)
                    || partitions == 1
                    || s.exact_path.cleared_heads > 0
            );
            let diff = settle::tools::reference::compare(&c).await.unwrap();
            assert!(
                diff.is_empty(),
                "{order:?} partitions {partitions} workers {workers} streams {streams}: engine differs from reference:\n{diff}"
            );
        }
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logged_order_matches_reference_for_all_partitionings() {
    all_configurations(Order::Logged, 0.11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffled_ids_and_random_physical_order_match_reference() {
    all_configurations(Order::Shuffled, 0.23).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_disorder_allowance_routes_rows_to_the_exact_path_and_stays_exact() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.37, 4000, Order::Logged).await;
    let database = db.database().await.unwrap();
    for partitions in [3u32, 16] {
        reset_results(&c).await;
        let mut o = opts(Requested::All, partitions, 2);
        o.disorder_minutes = 0;
        let s = run(&database, &o).await;
        assert!(
            s.exact_path.late_rows > 0,
            "the test must exercise late rows"
        );
        assert_matches_reference(&c, &format!("allowance 0, {partitions} partitions")).await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn day_by_day_equals_one_run_and_resettling_a_middle_day_changes_nothing() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.42, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let (first, last) = data_days(&c).await;
    assert!(last.0 - first.0 >= 10);
    for d in first.0..=last.0 {
        run(&database, &opts(Requested::Days(Day(d), Day(d)), 3, 2)).await;
    }
    assert_matches_reference(&c, "day by day").await;

    // Re-settle a middle day: later days are brought up to date too.
    let mid = Day((first.0 + last.0) / 2);
    let s = run(&database, &opts(Requested::Days(mid, mid), 5, 2)).await;
    assert_eq!(s.extended_to.as_deref(), Some(last.to_string().as_str()));
    assert_matches_reference(&c, "after re-settling a middle day").await;

    // A range in the middle, from a clean slate up to it, then the rest.
    reset_results(&c).await;
    run(&database, &opts(Requested::Days(first, mid), 7, 4)).await;
    run(&database, &opts(Requested::Days(mid.next(), last), 2, 1)).await;
    assert_matches_reference(&c, "two ranges").await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn videos_crossing_one_and_several_tiers_within_a_day() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    // Video 1: 95,000 plays on July 1 and 450,000 on July 2 (crossing the
    // 100k and 500k view brackets in one day; 2 ads per play, so its ad
    // ordinals cross 100k on day 1 and 500k and 1M on day 2). Video 2:
    // 100,003 plays on July 1 (crossing one bracket by three views).
    c.batch_execute(
        "INSERT INTO videos VALUES (1, 900000001, 900, 'hot', '2024-01-01'), (2, 900000002, 900, 'warm', '2024-01-01');
         INSERT INTO viewing_log
         SELECT g, g, 1, timestamptz '2024-06-30 15:00:00+00' + (g % 86000) * interval '1 second', 0, 610
         FROM generate_series(1, 95000) g;
         INSERT INTO viewing_log
         SELECT 95000 + g, 1000000 + g, 1, timestamptz '2024-07-01 15:00:00+00' + (g % 86000) * interval '1 second', 0, 610
         FROM generate_series(1, 450000) g;
         INSERT INTO viewing_log
         SELECT 545000 + g, 5000000 + g, 2, timestamptz '2024-06-30 15:00:00+00' + (g % 86000) * interval '1 second', 300, 900
         FROM generate_series(1, 100003) g;
         ANALYZE viewing_log;",
    )
    .await
    .unwrap();
    let database = db.database().await.unwrap();
    run(&database, &opts(Requested::All, 4, 2)).await;
    assert_matches_reference(&c, "tier crossing, one run").await;
    // The same by hand from the SPEC: day 2 of video 1 prices view ordinals
    // 95,001..545,000: 5,000 x 10 + 400,000 x 11 + 45,000 x 13 tenths.
    let row = c
        .query_one(
            "SELECT video_amount, ad_amount FROM settlement_video WHERE period_kind = 'day' AND period_start = '2024-07-02' AND video_id = 1",
            &[],
        )
        .await
        .unwrap();
    let video_amount: i64 = row.get(0);
    let ad_amount: i64 = row.get(1);
    assert_eq!(video_amount, (5_000 * 10 + 400_000 * 11 + 45_000 * 13) / 10);
    // Ad ordinals 190,001..1,090,000: 310,000 x 120 + 500,000 x 150 + 90,000 x 200.
    assert_eq!(
        ad_amount,
        (310_000 * 120 + 500_000 * 150 + 90_000 * 200) / 10
    );

    reset_results(&c).await;
    run(
        &database,
        &opts(Requested::Days(day("2024-07-01"), day("2024-07-01")), 3, 2),
    )
    .await;
    run(
        &database,
        &opts(Requested::Days(day("2024-07-02"), day("2024-07-02")), 3, 2),
    )
    .await;
    assert_matches_reference(&c, "tier crossing, day by day").await;
    db.drop_db().await;
}

/// Publishing writes only the difference from what is stored: a rerun over
/// unchanged data writes no rows, and after the log and the stored rows
/// change (a corrupted row, a stray row, deleted and added plays) the rerun
/// replaces exactly what differs and ends equal to the reference.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_writes_only_what_changed() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.51, 3000, Order::Logged).await;
    let database = db.database().await.unwrap();
    let first = run(&database, &opts(Requested::All, 4, 2)).await;
    assert!(first.written.video_rows > 0 && first.written.unchanged_rows == 0);
    let again = run(&database, &opts(Requested::All, 3, 2)).await;
    assert_eq!(again.written.video_rows, 0, "unchanged data writes nothing");
    assert_eq!(again.written.creator_rows, 0);
    assert_eq!(
        again.written.top_rows, 0,
        "unchanged data rewrites no top 5"
    );
    assert_eq!(
        again.written.unchanged_rows,
        first.written.video_rows + first.written.creator_rows
    );
    assert_matches_reference(&c, "rerun over unchanged data").await;

    let (lo, hi) = data_days(&c).await;
    let mid = Day((lo.0 + hi.0) / 2).to_string();
    c.batch_execute(&format!(
        "UPDATE settlement_video SET views = views + 1, total_amount = total_amount + 7
           WHERE (period_kind, period_start, video_id) IN
                 (SELECT period_kind, period_start, video_id FROM settlement_video
                  WHERE period_kind = 'week' ORDER BY 1, 2, 3 LIMIT 1);
         INSERT INTO settlement_creator VALUES ('day', '{mid}', 987654321, 1, 1, 0, 1, 0, 1);
         DELETE FROM viewing_log WHERE id IN (SELECT id FROM viewing_log
           WHERE (started_at AT TIME ZONE INTERVAL '+09:00')::date = '{mid}' ORDER BY id LIMIT 50);
         INSERT INTO viewing_log
           SELECT 10000000 + g, 7000 + g, v.video_id,
                  timestamptz '{mid} 12:00:00+09' + g * interval '1 minute', 0, 1
           FROM generate_series(1, 20) g, (SELECT min(video_id) AS video_id FROM videos) v;"
    ))
    .await
    .unwrap();
    let third = run(&database, &opts(Requested::All, 5, 2)).await;
    assert!(third.written.video_rows > 0, "changed rows are written");
    // Top rows are always replaced; beyond them, at least the stray and the
    // corrupted row go.
    assert!(
        third.written.deleted_rows >= third.written.top_rows + 2,
        "the stray and the corrupted rows are replaced: {:?}",
        third.written
    );
    assert!(third.written.unchanged_rows > 0, "the rest is left alone");
    assert_matches_reference(&c, "rerun after the log and the stored rows changed").await;
    db.drop_db().await;
}

/// A date range, wide or narrow, is planned with no counting pass over its
/// rows: its ranges reach the log's first and last id, and the cuts between
/// them fall among its own rows (found by bisecting ids), so that every
/// partition has rows to read. Both settle exactly.
#[tokio::test(flavor = "multi_thread")]
async fn wide_and_narrow_ranges_are_cut_among_their_own_rows_and_stay_exact() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.53, 3000, Order::Logged).await;
    // Row estimates come from the planner, which needs statistics.
    c.batch_execute("ANALYZE viewing_log").await.unwrap();
    let database = db.database().await.unwrap();
    let (first, last) = data_days(&c).await;
    let bounds_of = |sql: String| {
        let c = &c;
        async move {
            let r = c.query_one(&sql, &[]).await.unwrap();
            (r.get::<_, i64>(0), r.get::<_, i64>(1))
        }
    };
    // Rows a run of days a..=b reads: those days plus the 30 s look-back.
    let rows_of = |a: Day, b: Day| {
        format!(
            "SELECT min(id), max(id) FROM viewing_log
             WHERE started_at >= (CAST(date '{a}' AS timestamp) AT TIME ZONE INTERVAL '+09:00') - interval '30 seconds'
               AND started_at < (CAST(date '{}' AS timestamp) AT TIME ZONE INTERVAL '+09:00')",
            b.next()
        )
    };
    let plan_of = |exec: i64| {
        format!(
            "SELECT min(id_lo), max(id_hi) FROM partition_execution WHERE execution_id = {exec}"
        )
    };
    let cuts_inside = |exec: i64, (a, b): (i64, i64)| {
        let c = &c;
        async move {
            let rows = c
                .query(
                    "SELECT id_lo, rows_read FROM partition_execution \
                     WHERE execution_id = $1 ORDER BY partition_no",
                    &[&exec],
                )
                .await
                .unwrap();
            assert!(rows.len() >= 2, "{} partitions", rows.len());
            for (i, r) in rows.iter().enumerate() {
                let (cut, read): (i64, i64) = (r.get(0), r.get(1));
                assert!(
                    i == 0 || (a < cut && cut <= b),
                    "cut {cut} outside {a}..={b}"
                );
                assert!(read > 0, "partition {i} read nothing");
            }
        }
    };
    let log = bounds_of("SELECT min(id), max(id) FROM viewing_log".into()).await;

    let narrow = run(&database, &opts(Requested::Days(first, first), 3, 2)).await;
    let own = bounds_of(rows_of(first, first)).await;
    assert_ne!(own, log, "the first day alone must not span the log");
    assert_eq!(bounds_of(plan_of(narrow.execution_id)).await, log);
    cuts_inside(narrow.execution_id, own).await;

    let wide = run(&database, &opts(Requested::Days(first.next(), last), 3, 2)).await;
    let own = bounds_of(rows_of(first.next(), last)).await;
    assert_ne!(own, log, "the test needs rows outside the wide range");
    assert_eq!(bounds_of(plan_of(wide.execution_id)).await, log);
    cuts_inside(wide.execution_id, own).await;
    assert_eq!(
        wide.rows_read,
        c.query_one(
            &rows_of(first.next(), last).replace("min(id), max(id)", "count(*)"),
            &[]
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as u64,
        "the wide plan reads only the range's rows"
    );
    assert_matches_reference(&c, "a narrow range, then a wide one").await;
    db.drop_db().await;
}

/// The planner may give a partition's COPY a parallel plan (it did for a
/// `--date` run on the partitioned 100M log); a Gather interleaves its
/// workers' rows out of id order, which the replay window would send to the
/// exact path by the million. Partition reads run without parallel workers,
/// so a log in stop order reaches the window in order even when the planner
/// is told parallelism costs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn partition_reads_stay_in_id_order_when_the_planner_would_go_parallel() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    db.generate(&[
        "--rows", "300000", "--videos", "2000", "--days", "3", "--jobs", "2",
    ])
    .await;
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" SET parallel_setup_cost = 0; \
         ALTER DATABASE \"{0}\" SET parallel_tuple_cost = 0; \
         ALTER DATABASE \"{0}\" SET min_parallel_index_scan_size = 0; \
         ALTER DATABASE \"{0}\" SET min_parallel_table_scan_size = 0",
        db.name
    ))
    .await
    .unwrap();
    // The setting reaches new sessions: a plain query of a partition's rows
    // does go parallel there.
    let fresh = db.connect().await.unwrap();
    let plan: String = fresh
        .query(
            "EXPLAIN SELECT * FROM viewing_log WHERE id >= 1000 AND id <= 200000",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0) + "\n")
        .collect();
    assert!(plan.contains("Gather"), "{plan}");
    let database = db.database().await.unwrap();
    let s = run(&database, &opts(Requested::All, 4, 2)).await;
    assert_eq!(
        s.exact_path.late_rows, 0,
        "rows reached the window out of order"
    );
    assert_matches_reference(&c, "parallel-friendly planner settings").await;
    db.drop_db().await;
}

/// A catalogue too big for a dense vector of cells per day (300k videos)
/// over a month: the run keeps only the videos with plays per day, and its
/// default plan adds partitions until each holds about 64 MiB of day cells
/// (31 days of 7.2 MB: 4 partitions where 300k rows alone would take 2).
/// The rows still equal the reference's, for the default plan and for one
/// partition holding every day.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_catalogue_over_many_days_keeps_its_days_sparse_and_exact() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    db.generate(&[
        "--rows", "300000", "--videos", "300000", "--days", "31", "--jobs", "2",
    ])
    .await;
    let database = db.database().await.unwrap();
    let mut o = opts(Requested::All, 1, 2);
    o.partitions = None;
    let s = run(&database, &o).await;
    assert_eq!(
        s.partitions, 4,
        "the default plan for 31 days of 300k videos"
    );
    assert!(s.counted > 250_000, "{} counted", s.counted);
    assert_matches_reference(&c, "300k videos, default plan").await;
    reset_results(&c).await;
    run(&database, &opts(Requested::All, 1, 1)).await;
    assert_matches_reference(&c, "300k videos, one partition").await;
    db.drop_db().await;
}

/// A partition that is exactly one leaf of a log partitioned by id is
/// copied as that table (no executor and no range test a row: 13-19 % less
/// server CPU a row at 100M). One that misses a row of its leaf, spans two
/// leaves or is bounded in time is copied as the SELECT. A run planned onto
/// the leaves reads them whole and still equals the reference.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_that_are_whole_leaves_are_copied_as_tables_and_stay_exact() {
    use settle::pipeline::partition::{copy_statement, Partition, Scope};
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    db.generate(&[
        "--rows", "200000", "--videos", "2000", "--days", "3", "--jobs", "2",
    ])
    .await;
    let leaves: Vec<(String, i64, i64)> = c
        .query(
            "SELECT tableoid::regclass::text, min(id), max(id) FROM viewing_log GROUP BY 1 ORDER BY 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        leaves.len() >= 2,
        "datagen --jobs 2 cuts leaves: {leaves:?}"
    );
    let stmt = |lo: i64, hi: i64, scope: Scope| {
        let c = &c;
        async move {
            let p = Partition {
                no: 0,
                id_lo: lo,
                id_hi: hi,
            };
            copy_statement(c, &p, &scope).await.unwrap()
        }
    };
    for (leaf, lo, hi) in &leaves {
        let s = stmt(*lo, *hi, Scope::default()).await;
        assert!(s.starts_with(&format!("COPY public.{leaf} (id, ")), "{s}");
    }
    let (first, second) = (&leaves[0], &leaves[1]);
    for (lo, hi, what) in [
        (first.1 + 1, first.2, "all but the leaf's first row"),
        (first.1, first.2 - 1, "all but the leaf's last row"),
        (first.1, second.2, "two leaves"),
    ] {
        let s = stmt(lo, hi, Scope::default()).await;
        assert!(s.starts_with("COPY (SELECT "), "{what}: {s}");
    }
    let bounded = Scope {
        read_lo: Some(0),
        ..Scope::default()
    };
    let s = stmt(first.1, first.2, bounded).await;
    assert!(
        s.starts_with("COPY (SELECT ") && s.contains("started_at >="),
        "{s}"
    );

    let database = db.database().await.unwrap();
    let s = run(&database, &opts(Requested::All, leaves.len() as u32, 2)).await;
    let plan = settle::jobs::recorded_plan(&c, s.execution_id)
        .await
        .unwrap();
    let planned: Vec<(i64, i64)> = plan.iter().map(|p| (p.id_lo, p.id_hi)).collect();
    let whole: Vec<(i64, i64)> = leaves.iter().map(|l| (l.1, l.2)).collect();
    assert_eq!(planned, whole, "the plan's partitions are the leaves");
    assert_matches_reference(&c, "partitions that are the leaves").await;
    db.drop_db().await;
}

/// A head row whose pair in the partition below was evicted from that
/// partition's window before the window's keys were taken: the key filter
/// has not seen the pair, and only its `complete_from` keeps the row a
/// seed. With the default 3 h allowance, partition 1 (ids 1-3000) holds a
/// play at T and then plays at T + 3 h 35 s (its cutoff passes T + 5 s and
/// evicts the first); partition 2 (ids 3001-6000) starts with the same user
/// and video at T + 10 s, a rapid replay across the edge, near enough to
/// partition 1's newest play that the retained head, not a re-read edge,
/// supplies its seeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_row_paired_with_an_evicted_play_below_is_still_corrected() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    c.batch_execute(
        "INSERT INTO videos VALUES (1, 900000001, 900, 'clip', '2024-01-01');
         INSERT INTO viewing_log VALUES
           (1, 7, 1, timestamptz '2024-07-01 03:00:00+00', 0, 100),
           (3001, 7, 1, timestamptz '2024-07-01 03:00:10+00', 0, 100);
         INSERT INTO viewing_log
         SELECT g, 1000 + g, 1, timestamptz '2024-07-01 06:00:35+00', 0, 100
         FROM generate_series(2, 3000) g;
         INSERT INTO viewing_log
         SELECT g, 5000 + g, 1, timestamptz '2024-07-01 06:01:00+00', 0, 100
         FROM generate_series(3002, 6000) g;
         ANALYZE viewing_log;",
    )
    .await
    .unwrap();
    settle::tools::reference::run(&c).await.unwrap();
    let database = db.database().await.unwrap();
    let s = run(&database, &opts(Requested::All, 2, 2)).await;
    assert_eq!(s.excluded.rapid_replay, 1);
    let e = &s.exact_path;
    assert!(
        e.refetched_edges == 0 && e.seeds >= 1 && e.corrections == 1,
        "{e:?}"
    );
    assert_matches_reference(&c, "a head row paired with an evicted play").await;
    db.drop_db().await;
}
