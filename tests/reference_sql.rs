//! The reference SQL (sql/reference/settle.sql) on hand-built data, checked
//! row by row against values worked out by hand from shared/SPEC.md.
//!
//! The reference is the oracle for the engine, so its own tests must not
//! lean on any code of the project: every expected number below is computed
//! in the comments next to it.

use settle::testkit::TestDb;
use settle::tools::reference;
use tokio_postgres::Client;

// ---------------------------------------------------------------------------
// helpers

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await.expect("create a test database");
    let client = db.connect().await.expect("connect to the test database");
    (db, client)
}

async fn exec(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nwhile running:\n{sql}"));
}

async fn run_reference(c: &Client) {
    reference::run(c).await.expect("the reference SQL runs");
}

/// `n` plays of `video` at `at`, ids `first_id..first_id+n`, each by its own
/// viewer (user = id + 1e9, never an uploader here), so none is a replay.
fn bulk(first_id: i64, n: i64, video: i64, at: &str, start: i32, end: i32) -> String {
    format!(
        "INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position)
         SELECT {first_id} + g, 1000000000 + {first_id} + g, {video}, timestamptz '{at}', {start}, {end}
         FROM generate_series(0, {n} - 1) AS g;"
    )
}

/// The six sums of a settlement row.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sums {
    views: i64,
    watch_seconds: i64,
    ad_views: i64,
    video_amount: i64,
    ad_amount: i64,
    total_amount: i64,
}

/// Sums with total_amount = video_amount + ad_amount (SPEC §3).
fn sums(views: i64, watch_seconds: i64, ad_views: i64, video_amount: i64, ad_amount: i64) -> Sums {
    Sums {
        views,
        watch_seconds,
        ad_views,
        video_amount,
        ad_amount,
        total_amount: video_amount + ad_amount,
    }
}

type Row = (String, String, Sums);

fn row(kind: &str, start: &str, s: Sums) -> Row {
    (kind.to_string(), start.to_string(), s)
}

/// The same sums as a day, week and month row.
fn dwm(day: &str, week: &str, month: &str, s: Sums) -> Vec<Row> {
    vec![
        row("day", day, s.clone()),
        row("week", week, s.clone()),
        row("month", month, s),
    ]
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

async fn sums_rows(c: &Client, table: &str, id_col: &str, id: i64, kind: Option<&str>) -> Vec<Row> {
    let sql = format!(
        "SELECT period_kind, period_start::text, views, watch_seconds, ad_views,
                video_amount, ad_amount, total_amount
         FROM reference.{table}
         WHERE {id_col} = $1 AND ($2::text IS NULL OR period_kind = $2)
         ORDER BY period_kind, period_start"
    );
    c.query(sql.as_str(), &[&id, &kind])
        .await
        .expect("read reference rows")
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                Sums {
                    views: r.get(2),
                    watch_seconds: r.get(3),
                    ad_views: r.get(4),
                    video_amount: r.get(5),
                    ad_amount: r.get(6),
                    total_amount: r.get(7),
                },
            )
        })
        .collect()
}

/// Every reference.settlement_video row of `video`, sorted by (kind, start).
async fn video_rows(c: &Client, video: i64) -> Vec<Row> {
    sums_rows(c, "settlement_video", "video_id", video, None).await
}

async fn video_day_rows(c: &Client, video: i64) -> Vec<Row> {
    sums_rows(c, "settlement_video", "video_id", video, Some("day")).await
}

async fn creator_rows(c: &Client, creator: i64) -> Vec<Row> {
    sums_rows(c, "settlement_creator", "creator_id", creator, None).await
}

/// The ranking of one period and metric as (video_id, value), best first.
/// Also checks that the ranks are exactly 1..=n.
async fn top(c: &Client, kind: &str, start: &str, metric: &str) -> Vec<(i64, i64)> {
    let rows = c
        .query(
            "SELECT rank, video_id, value FROM reference.top_videos
             WHERE period_kind = $1 AND period_start = $2::text::date AND metric = $3
             ORDER BY rank",
            &[&kind, &start, &metric],
        )
        .await
        .expect("read reference.top_videos");
    let ranks: Vec<i16> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i16> = (1..=rows.len() as i16).collect();
    assert_eq!(ranks, expected, "ranks of {kind} {start} {metric}");
    rows.iter().map(|r| (r.get(1), r.get(2))).collect()
}

/// Every reference.play_outcome row, by id.
async fn outcomes(c: &Client) -> Vec<(i64, String)> {
    c.query(
        "SELECT id, outcome FROM reference.play_outcome ORDER BY id",
        &[],
    )
    .await
    .expect("read reference.play_outcome")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn expect_outcomes(list: &[(i64, &str)]) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = list.iter().map(|&(i, o)| (i, o.to_string())).collect();
    v.sort();
    v
}

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(format!("SELECT count(*) FROM {table}").as_str(), &[])
        .await
        .expect("count rows")
        .get(0)
}

// ---------------------------------------------------------------------------
// SPEC §6

/// The worked example's plays (video 7, uploader 1, 900 s).
const WORKED_EXAMPLE: &str = "
    INSERT INTO videos VALUES (7, 1, 900, 'video 7', '2024-01-01 00:00+09');
    INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
        (1, 2, 7, '2024-07-01 10:00:00+09',   0, 610),
        (2, 2, 7, '2024-07-01 10:00:20+09',   0,  10),
        (3, 2, 7, '2024-07-01 10:00:45+09',   0,  10),
        (4, 2, 7, '2024-07-01 10:01:15+09', 600, 900),
        (5, 1, 7, '2024-07-01 11:00:00+09',   0, 900);
";

#[tokio::test]
async fn spec_worked_example() {
    let (db, c) = setup().await;
    exec(&c, WORKED_EXAMPLE).await;
    run_reference(&c).await;

    assert_eq!(
        outcomes(&c).await,
        expect_outcomes(&[
            (1, "counted"),      // 610 s, ads at 300 and 600
            (2, "rapid_replay"), // 20 s after id 1
            (3, "rapid_replay"), // 25 s after id 2, which did not count
            (4, "counted"),      // exactly 30 s after id 3
            (5, "self_play"),    // the uploader
        ])
    );

    // views 2; watch 610 + 300 = 910; ads 2 + 1 (900; 600 is not replayed).
    // Ordinals 1, 2 cost 10 + 10 tenths -> 2 won; ad ordinals 1..3 cost
    // 3 x 100 tenths -> 30 won. 2024-07-01 is a Monday.
    let s = sums(2, 910, 3, 2, 30);
    let expected = sorted(dwm("2024-07-01", "2024-07-01", "2024-07-01", s));
    assert_eq!(video_rows(&c, 7).await, expected);
    assert_eq!(creator_rows(&c, 1).await, expected);
    assert_eq!(count(&c, "reference.settlement_video").await, 3);
    assert_eq!(count(&c, "reference.settlement_creator").await, 3);

    for kind in ["day", "week", "month"] {
        assert_eq!(top(&c, kind, "2024-07-01", "views").await, vec![(7, 2)]);
        assert_eq!(
            top(&c, kind, "2024-07-01", "watch_seconds").await,
            vec![(7, 910)]
        );
    }
    assert_eq!(count(&c, "reference.top_videos").await, 6);

    // Idempotent: a second run rebuilds the same rows.
    run_reference(&c).await;
    assert_eq!(video_rows(&c, 7).await, expected);
    assert_eq!(count(&c, "reference.play_outcome").await, 5);
    db.drop_db().await;
}

#[tokio::test]
async fn spec_worked_example_money_variant() {
    let (db, c) = setup().await;
    exec(&c, WORKED_EXAMPLE).await;
    // Sunday 2024-06-30 (Seoul): 99,999 counted views of video 7 by distinct
    // viewers, 5 of them watching 0..300 (one ad each), the rest 0..0.
    exec(&c, &bulk(1000, 5, 7, "2024-06-30 12:00:00+09", 0, 300)).await;
    exec(&c, &bulk(2000, 99_994, 7, "2024-06-30 12:00:00+09", 0, 0)).await;
    run_reference(&c).await;

    assert_eq!(count(&c, "reference.play_outcome").await, 5 + 99_999);
    assert_eq!(
        count(
            &c,
            "reference.play_outcome WHERE id >= 1000 AND outcome = 'counted'"
        )
        .await,
        99_999
    );

    // 06-30: 99,999 x 10 tenths = 99,999 won; 5 ads x 100 tenths = 50 won;
    // watch 5 x 300.
    let before = sums(99_999, 1_500, 5, 99_999, 50);
    // 07-01: view ordinals 100,000 (10) and 100,001 (11) = 21 tenths -> 2;
    // ad ordinals 6..8 = 300 tenths -> 30; total 32.
    let day = sums(2, 910, 3, 2, 30);
    assert_eq!(day.total_amount, 32);
    let mut expected = dwm("2024-06-30", "2024-06-24", "2024-06-01", before);
    expected.extend(dwm("2024-07-01", "2024-07-01", "2024-07-01", day));
    let expected = sorted(expected);
    assert_eq!(video_rows(&c, 7).await, expected);
    assert_eq!(creator_rows(&c, 1).await, expected);
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// SPEC §3 tiers

/// View tiers. Amounts are floor(tenths / 10), so a boundary priced one
/// ordinal off changes an amount only when the day's tenths sit just below
/// or on a multiple of 10; the day sizes below are chosen so that each
/// boundary, moved one ordinal either way, changes some day's amount.
#[tokio::test]
async fn view_tier_boundaries() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES
            (10, 1, 100, 'tiers', '2024-01-01 00:00+09'),
            (11, 1, 100, 'tiers, first boundary', '2024-01-01 00:00+09');",
    )
    .await;
    // Video 10: views per day (zero-length plays: views only, no ads).
    let days_10: [(&str, i64); 8] = [
        ("2024-07-01", 99_990),  // ordinals 1..99,990
        ("2024-07-02", 19),      // 99,991..100,009
        ("2024-07-03", 399_982), // 100,010..499,991
        ("2024-07-04", 9),       // 499,992..500,000
        ("2024-07-05", 10),      // 500,001..500,010
        ("2024-07-06", 499_987), // 500,011..999,997
        ("2024-07-07", 3),       // 999,998..1,000,000
        ("2024-07-08", 2),       // 1,000,001..1,000,002
    ];
    let mut id = 1;
    for (day, n) in days_10 {
        exec(&c, &bulk(id, n, 10, &format!("{day} 12:00:00+09"), 0, 0)).await;
        id += n;
    }
    // Video 11: 99,990 views, then a day of ordinals 99,991..100,010.
    exec(&c, &bulk(id, 99_990, 11, "2024-07-01 12:00:00+09", 0, 0)).await;
    id += 99_990;
    exec(&c, &bulk(id, 20, 11, "2024-07-02 12:00:00+09", 0, 0)).await;
    run_reference(&c).await;

    let v = |views, amount| sums(views, 0, 0, amount, 0);
    let expected_10 = sorted(vec![
        // 99,990 x 10 = 999,900 tenths
        row("day", "2024-07-01", v(99_990, 99_990)),
        // 10 x 10 + 9 x 11 = 199 -> 19 (100,000 priced at 11 would give 200 -> 20)
        row("day", "2024-07-02", v(19, 19)),
        // 399,982 x 11 = 4,399,802 -> 439,980
        row("day", "2024-07-03", v(399_982, 439_980)),
        // 9 x 11 = 99 -> 9 (500,000 priced at 13 would give 101 -> 10)
        row("day", "2024-07-04", v(9, 9)),
        // 10 x 13 = 130 -> 13 (500,001 priced at 11 would give 128 -> 12)
        row("day", "2024-07-05", v(10, 13)),
        // 499,987 x 13 = 6,499,831 -> 649,983
        row("day", "2024-07-06", v(499_987, 649_983)),
        // 3 x 13 = 39 -> 3 (1,000,000 priced at 15 would give 41 -> 4)
        row("day", "2024-07-07", v(3, 3)),
        // 2 x 15 = 30 -> 3 (1,000,001 priced at 13 would give 28 -> 2)
        row("day", "2024-07-08", v(2, 3)),
        // Mon 07-01..Sun 07-07: the sum of the day amounts, 1,189,997, not
        // the week re-priced (11,900,000 tenths would be 1,190,000).
        row("week", "2024-07-01", v(1_000_000, 1_189_997)),
        row("week", "2024-07-08", v(2, 3)),
        row("month", "2024-07-01", v(1_000_002, 1_190_000)),
    ]);
    assert_eq!(video_rows(&c, 10).await, expected_10);

    let expected_11 = sorted(vec![
        row("day", "2024-07-01", v(99_990, 99_990)),
        // 10 x 10 + 10 x 11 = 210 -> 21 (100,001 priced at 10 would give 209 -> 20)
        row("day", "2024-07-02", v(20, 21)),
        row("week", "2024-07-01", v(100_010, 100_011)),
        row("month", "2024-07-01", v(100_010, 100_011)),
    ]);
    assert_eq!(video_rows(&c, 11).await, expected_11);
    db.drop_db().await;
}

/// Ad tiers. Ad prices are whole won (10, 12, 15, 20), so every ad ordinal's
/// price shows in ad_amount exactly; one play reaching 300k seconds carries
/// k ads, so a million ad views need only a few rows.
#[tokio::test]
async fn ad_tier_boundaries_and_multi_bracket_days() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES
            (20, 1, 400000000, 'ads', '2024-01-01 00:00+09'),
            (21, 1, 400000000, 'two brackets', '2024-01-01 00:00+09'),
            (22, 1, 400000000, 'three brackets', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 101, 20, '2024-07-01 12:00+09', 0,  29999700),  --  99,999 ads
            (2, 102, 20, '2024-07-02 12:00+09', 0,       600),  --       2 ads
            (3, 103, 20, '2024-07-03 12:00+09', 0, 119999400),  -- 399,998 ads
            (4, 104, 20, '2024-07-04 12:00+09', 0,       600),  --       2 ads
            (5, 105, 20, '2024-07-05 12:00+09', 0, 149999400),  -- 499,998 ads
            (6, 106, 20, '2024-07-06 12:00+09', 0,       600),  --       2 ads
            (7, 107, 21, '2024-07-01 12:00+09', 0,      1500),  --       5 ads
            (8, 108, 21, '2024-07-02 12:00+09', 0, 150000000),  -- 500,000 ads
            (9, 109, 22, '2024-07-01 12:00+09', 0, 300001500);  -- 1,000,005 ads",
    )
    .await;
    run_reference(&c).await;

    // Every day is one view: ordinals 1, 2, ... all in the first view tier,
    // 10 tenths -> 1 won.
    assert_eq!(
        video_day_rows(&c, 20).await,
        vec![
            // ad ordinals 1..99,999 x 10 won
            row("day", "2024-07-01", sums(1, 29_999_700, 99_999, 1, 999_990)),
            // 100,000 (10) + 100,001 (12)
            row("day", "2024-07-02", sums(1, 600, 2, 1, 22)),
            // 100,002..499,999: 399,998 x 12
            row(
                "day",
                "2024-07-03",
                sums(1, 119_999_400, 399_998, 1, 4_799_976)
            ),
            // 500,000 (12) + 500,001 (15)
            row("day", "2024-07-04", sums(1, 600, 2, 1, 27)),
            // 500,002..999,999: 499,998 x 15
            row(
                "day",
                "2024-07-05",
                sums(1, 149_999_400, 499_998, 1, 7_499_970)
            ),
            // 1,000,000 (15) + 1,000,001 (20)
            row("day", "2024-07-06", sums(1, 600, 2, 1, 35)),
        ]
    );
    assert_eq!(
        video_day_rows(&c, 21).await,
        vec![
            row("day", "2024-07-01", sums(1, 1_500, 5, 1, 50)),
            // ordinals 6..500,005: 99,995 x 10 + 400,000 x 12 + 5 x 15
            //   = 999,950 + 4,800,000 + 75
            row(
                "day",
                "2024-07-02",
                sums(1, 150_000_000, 500_000, 1, 5_800_025)
            ),
        ]
    );
    assert_eq!(
        video_day_rows(&c, 22).await,
        vec![
            // ordinals 1..1,000,005: 100,000 x 10 + 400,000 x 12
            //   + 500,000 x 15 + 5 x 20 = 1,000,000 + 4,800,000 + 7,500,000 + 100
            row(
                "day",
                "2024-07-01",
                sums(1, 300_001_500, 1_000_005, 1, 13_300_100)
            ),
        ]
    );
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// SPEC §2 counting rules

#[tokio::test]
async fn rapid_replay_window() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES
            (30, 1, 100, 'replays', '2024-01-01 00:00+09'),
            (31, 1, 100, 'other video', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            -- user 2: exactly 30 s counts, 29.999999 s does not
            (1,  2, 30, '2024-07-01 10:00:00+09',        0, 10),
            (2,  2, 30, '2024-07-01 10:00:30+09',        0, 10),
            (3,  2, 30, '2024-07-01 10:00:59.999999+09', 0, 10),
            (4,  2, 30, '2024-07-01 10:01:29.999999+09', 0, 10),
            -- same user, another video: its own history
            (50, 2, 31, '2024-07-01 10:00:01+09',        0, 10),
            -- user 3: equal timestamps, the smaller id comes first
            (11, 3, 30, '2024-07-01 10:00:00+09',        0, 10),
            (10, 3, 30, '2024-07-01 10:00:00+09',        0, 10),
            -- user 4: a chain; each is 20 s after one that did not count
            (20, 4, 30, '2024-07-01 10:00:00+09',        0, 10),
            (21, 4, 30, '2024-07-01 10:00:20+09',        0, 10),
            (22, 4, 30, '2024-07-01 10:00:40+09',        0, 10),
            (23, 4, 30, '2024-07-01 10:01:00+09',        0, 10),
            (24, 4, 30, '2024-07-01 10:01:30+09',        0, 10),
            -- user 5: the look-back crosses Seoul midnight
            (30, 5, 30, '2024-07-01 23:59:50+09',        0, 10),
            (31, 5, 30, '2024-07-02 00:00:10+09',        0, 10),
            (32, 5, 30, '2024-07-02 00:00:40+09',        0, 10),
            -- user 6: order is by started_at, not id
            (41, 6, 30, '2024-07-01 10:00:00+09',        0, 10),
            (40, 6, 30, '2024-07-01 10:00:10+09',        0, 10);",
    )
    .await;
    run_reference(&c).await;

    assert_eq!(
        outcomes(&c).await,
        expect_outcomes(&[
            (1, "counted"),
            (2, "counted"),      // 30 s after id 1
            (3, "rapid_replay"), // 29.999999 s after id 2
            (4, "counted"),      // 30 s after id 3
            (50, "counted"),
            (10, "counted"),
            (11, "rapid_replay"), // same instant as id 10, larger id
            (20, "counted"),
            (21, "rapid_replay"), // 20 s after id 20
            (22, "rapid_replay"), // 20 s after id 21 (40 s after id 20)
            (23, "rapid_replay"), // 20 s after id 22
            (24, "counted"),      // 30 s after id 23
            (30, "counted"),
            (31, "rapid_replay"), // 20 s after id 30, across midnight
            (32, "counted"),      // 30 s after id 31
            (41, "counted"),
            (40, "rapid_replay"), // 10 s after id 41
        ])
    );

    // 07-01: ids 1, 2, 4, 10, 20, 24, 30, 41 = 8 views x 10 s; 07-02: id 32.
    assert_eq!(
        video_day_rows(&c, 30).await,
        vec![
            row("day", "2024-07-01", sums(8, 80, 0, 8, 0)),
            row("day", "2024-07-02", sums(1, 10, 0, 1, 0)),
        ]
    );
    assert_eq!(
        video_day_rows(&c, 31).await,
        vec![row("day", "2024-07-01", sums(1, 10, 0, 1, 0))]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn invalid_rows_and_self_play() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES
            (60, 1, 100, 'by creator 1', '2024-01-01 00:00+09'),
            (61, 9, 100, 'by creator 9', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1,  2, 999, '2024-07-01 10:00:00+09',  50,  10), -- unknown video (checked first)
            (2,  2, 999, '2024-07-01 10:00:05+09',   0,  10), -- unknown video
            (3,  3,  60, '2024-07-01 10:00:00+09',  -1,  10), -- start < 0
            (4,  4,  60, '2024-07-01 10:00:00+09',  20,  10), -- start > end
            (5,  5,  60, '2024-07-01 10:00:00+09',   0, 101), -- end > duration
            (6,  6,  60, '2024-07-01 10:00:00+09',   0, 100), -- end = duration: valid
            (7,  7,  60, '2024-07-01 10:00:00+09', 100, 100), -- start = end = duration: valid
            -- user 8: the invalid id 11 is not a predecessor; id 12 is 35 s after id 10
            (10, 8,  60, '2024-07-01 10:00:00+09',   0,  10),
            (11, 8,  60, '2024-07-01 10:00:10+09',   0, 200),
            (12, 8,  60, '2024-07-01 10:00:35+09',   0,  10),
            -- user 3: 10 s after their invalid id 3, still counts
            (13, 3,  60, '2024-07-01 10:00:10+09',   0,  10),
            -- the uploader: self_play, also when it would be a rapid replay
            (20, 1,  60, '2024-07-01 10:00:00+09',   0,  50),
            (21, 1,  60, '2024-07-01 10:00:05+09',   0,  50),
            (22, 1,  60, '2024-07-01 12:00:00+09',   0,  50),
            -- the same user watching another creator's video counts
            (23, 1,  61, '2024-07-01 10:00:00+09',   0, 100);",
    )
    .await;
    run_reference(&c).await;

    assert_eq!(
        outcomes(&c).await,
        expect_outcomes(&[
            (1, "unknown_video"),
            (2, "unknown_video"),
            (3, "bad_position"),
            (4, "bad_position"),
            (5, "bad_position"),
            (6, "counted"),
            (7, "counted"),
            (10, "counted"),
            (11, "bad_position"),
            (12, "counted"),
            (13, "counted"),
            (20, "self_play"),
            (21, "self_play"),
            (22, "self_play"),
            (23, "counted"),
        ])
    );

    // Video 60: ids 6, 7, 10, 12, 13: watch 100 + 0 + 10 + 10 + 10 = 130.
    let v60 = sums(5, 130, 0, 5, 0);
    let v61 = sums(1, 100, 0, 1, 0);
    assert_eq!(
        video_rows(&c, 60).await,
        sorted(dwm("2024-07-01", "2024-07-01", "2024-07-01", v60.clone()))
    );
    assert_eq!(
        creator_rows(&c, 1).await,
        sorted(dwm("2024-07-01", "2024-07-01", "2024-07-01", v60))
    );
    assert_eq!(
        creator_rows(&c, 9).await,
        sorted(dwm("2024-07-01", "2024-07-01", "2024-07-01", v61))
    );
    assert_eq!(count(&c, "reference.settlement_video").await, 6);
    db.drop_db().await;
}

#[tokio::test]
async fn zero_length_plays_and_ad_marks() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES (50, 1, 1200, 'ads', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 11, 50, '2024-07-10 12:00+09', 100,  100), -- zero length: 0 s, 0 ads
            (2, 12, 50, '2024-07-10 12:00+09', 300,  300), -- zero length on a mark: 0 ads
            (3, 13, 50, '2024-07-10 12:00+09', 300,  600), -- resumes on 300: ad at 600 only
            (4, 14, 50, '2024-07-10 12:00+09', 299,  300), -- reaches 300: 1 ad
            (5, 15, 50, '2024-07-10 12:00+09',   0,  299), -- no mark reached
            (6, 16, 50, '2024-07-10 12:00+09', 600, 1200), -- ads at 900, 1200
            (7, 17, 50, '2024-07-10 12:00+09', 301,  899); -- ad at 600",
    )
    .await;
    run_reference(&c).await;

    assert_eq!(
        count(&c, "reference.play_outcome WHERE outcome = 'counted'").await,
        7
    );
    // watch 0 + 0 + 300 + 1 + 299 + 600 + 598 = 1,798; ads 0+0+1+1+0+2+1 = 5.
    // 7 views x 1 won; 5 ads x 10 won.
    assert_eq!(
        video_day_rows(&c, 50).await,
        vec![row("day", "2024-07-10", sums(7, 1_798, 5, 7, 50))]
    );
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// calendar

#[tokio::test]
async fn seoul_midnight_decides_the_day() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES (70, 1, 100, 'midnight', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 2, 70, '2024-07-01 14:59:59.999999+00', 0, 10), -- 23:59:59.999999 KST: July 1
            (2, 3, 70, '2024-07-01 15:00:00+00',        0, 20), -- 00:00 KST: July 2
            (3, 4, 70, '2024-06-30 15:00:00+00',        0, 30), -- 00:00 KST: July 1
            (4, 5, 70, '2024-06-30 14:59:59.999999+00', 0, 40); -- 23:59:59.999999 KST: June 30",
    )
    .await;
    // The session's own time zone must not matter.
    exec(&c, "SET TIME ZONE 'America/Los_Angeles'").await;
    run_reference(&c).await;

    assert_eq!(
        video_rows(&c, 70).await,
        sorted(vec![
            row("day", "2024-06-30", sums(1, 40, 0, 1, 0)),
            row("day", "2024-07-01", sums(2, 40, 0, 2, 0)),
            row("day", "2024-07-02", sums(1, 20, 0, 1, 0)),
            // Sunday 06-30 belongs to the week of Monday 06-24.
            row("week", "2024-06-24", sums(1, 40, 0, 1, 0)),
            row("week", "2024-07-01", sums(3, 60, 0, 3, 0)),
            row("month", "2024-06-01", sums(1, 40, 0, 1, 0)),
            row("month", "2024-07-01", sums(3, 60, 0, 3, 0)),
        ])
    );
    db.drop_db().await;
}

/// SPEC §2: Seoul is UTC+9 with no daylight saving, on every date. The time
/// zone database's 'Asia/Seoul' kept summer time (+10) in 1987-88, which
/// would move this play to June 2.
#[tokio::test]
async fn seoul_offset_is_fixed_even_when_history_had_summer_time() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES (71, 1, 100, 'summer time', '1988-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 2, 71, '1988-06-01 14:30:00+00', 0, 10); -- 23:30 at +9: June 1 (00:30 June 2 at +10)",
    )
    .await;
    run_reference(&c).await;
    assert_eq!(
        video_rows(&c, 71).await,
        sorted(vec![
            row("day", "1988-06-01", sums(1, 10, 0, 1, 0)),
            // Wednesday 1988-06-01 belongs to the week of Monday 05-30.
            row("week", "1988-05-30", sums(1, 10, 0, 1, 0)),
            row("month", "1988-06-01", sums(1, 10, 0, 1, 0)),
        ])
    );
    db.drop_db().await;
}

#[tokio::test]
async fn week_spanning_two_months() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES (40, 1, 600, 'month end', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 2, 40, '2024-07-31 12:00:00+09',        0, 400), -- Wed; 1 ad
            (2, 3, 40, '2024-08-01 12:00:00+09',        0, 100), -- Thu
            (3, 2, 40, '2024-08-04 23:59:59.999999+09', 0, 600), -- Sun; 2 ads (4 days after id 1)
            (4, 4, 40, '2024-08-05 00:00:00+09',        0,  10); -- Mon: next week",
    )
    .await;
    run_reference(&c).await;

    assert_eq!(
        video_rows(&c, 40).await,
        sorted(vec![
            row("day", "2024-07-31", sums(1, 400, 1, 1, 10)),
            row("day", "2024-08-01", sums(1, 100, 0, 1, 0)),
            row("day", "2024-08-04", sums(1, 600, 2, 1, 20)),
            row("day", "2024-08-05", sums(1, 10, 0, 1, 0)),
            // Mon 07-29 ..= Sun 08-04 takes days from both months.
            row("week", "2024-07-29", sums(3, 1_100, 3, 3, 30)),
            row("week", "2024-08-05", sums(1, 10, 0, 1, 0)),
            row("month", "2024-07-01", sums(1, 400, 1, 1, 10)),
            row("month", "2024-08-01", sums(3, 710, 2, 3, 20)),
        ])
    );
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// rankings and creators

#[tokio::test]
async fn top_videos_ties_and_short_lists() {
    let (db, c) = setup().await;
    let mut sql = String::from(
        "INSERT INTO videos
         SELECT v, 1, 1000, 'video ' || v, '2024-01-01 00:00+09' FROM generate_series(101, 107) v;",
    );
    // (video, day, views, watch_seconds): the first play watches 0..watch,
    // the others 0..0; every play has its own viewer.
    let plays: [(i64, &str, i64, i32); 9] = [
        (101, "2024-07-10", 3, 100),
        (102, "2024-07-10", 3, 300),
        (103, "2024-07-10", 5, 100),
        (104, "2024-07-10", 1, 300),
        (105, "2024-07-10", 3, 50),
        (106, "2024-07-10", 1, 0),
        (107, "2024-07-10", 2, 300),
        (101, "2024-07-11", 1, 10),
        (106, "2024-07-11", 2, 0),
    ];
    let mut id = 1;
    for (video, day, views, watch) in plays {
        let at = format!("{day} 12:00:00+09");
        sql += &bulk(id, 1, video, &at, 0, watch);
        sql += &bulk(id + 1, views - 1, video, &at, 0, 0);
        id += views;
    }
    exec(&c, &sql).await;
    run_reference(&c).await;

    // 07-10: views 103:5; 101, 102, 105 tie at 3 (smaller id first); 107:2.
    assert_eq!(
        top(&c, "day", "2024-07-10", "views").await,
        vec![(103, 5), (101, 3), (102, 3), (105, 3), (107, 2)]
    );
    // watch: 102, 104, 107 tie at 300; 101, 103 tie at 100; 105 (50) is 6th.
    assert_eq!(
        top(&c, "day", "2024-07-10", "watch_seconds").await,
        vec![(102, 300), (104, 300), (107, 300), (101, 100), (103, 100)]
    );
    // 07-11: two videos; 106 watched 0 s, so it does not rank by watch.
    assert_eq!(
        top(&c, "day", "2024-07-11", "views").await,
        vec![(106, 2), (101, 1)]
    );
    assert_eq!(
        top(&c, "day", "2024-07-11", "watch_seconds").await,
        vec![(101, 10)]
    );
    // Week of Mon 07-08 and July: 101 = 3 + 1, 106 = 1 + 2 views;
    // 101 watched 100 + 10.
    for (kind, start) in [("week", "2024-07-08"), ("month", "2024-07-01")] {
        assert_eq!(
            top(&c, kind, start, "views").await,
            vec![(103, 5), (101, 4), (102, 3), (105, 3), (106, 3)]
        );
        assert_eq!(
            top(&c, kind, start, "watch_seconds").await,
            vec![(102, 300), (104, 300), (107, 300), (101, 110), (103, 100)]
        );
    }
    // 10 + 3 + 10 + 10 rows, nothing else.
    assert_eq!(count(&c, "reference.top_videos").await, 33);
    // A video with views but no watch time still has its settlement row.
    assert_eq!(
        video_day_rows(&c, 106).await,
        vec![
            row("day", "2024-07-10", sums(1, 0, 0, 1, 0)),
            row("day", "2024-07-11", sums(2, 0, 0, 2, 0)),
        ]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn creator_rows_sum_their_videos() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES
            (201, 9, 1000, 'creator 9, first',  '2024-01-01 00:00+09'),
            (202, 9, 1000, 'creator 9, second', '2024-01-01 00:00+09'),
            (204, 9, 1000, 'creator 9, never counted', '2024-01-01 00:00+09'),
            (203, 8, 1000, 'creator 8', '2024-01-01 00:00+09'),
            (205, 7, 1000, 'creator 7, only self plays', '2024-01-01 00:00+09');
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) VALUES
            (1, 100, 201, '2024-07-10 12:00+09', 0,  700), -- 2 ads
            (2, 101, 201, '2024-07-10 12:00+09', 0,  100),
            (3, 102, 202, '2024-07-10 12:00+09', 0,  300), -- 1 ad
            (4, 103, 203, '2024-07-10 12:00+09', 0,   50),
            (5,   7, 205, '2024-07-10 12:00+09', 0,  500), -- self play
            (6, 104, 204, '2024-07-10 12:00+09', 0, 2000), -- bad position
            (7, 105, 202, '2024-07-15 12:00+09', 0,  600); -- Monday; 2 ads",
    )
    .await;
    run_reference(&c).await;

    // 201: (2 views, 800 s, 2 ads) -> 2 won + 20 won.
    assert_eq!(
        video_day_rows(&c, 201).await,
        vec![row("day", "2024-07-10", sums(2, 800, 2, 2, 20))]
    );
    // 202: 07-10 (1, 300, 1) -> 1 + 10; 07-15 view ordinal 2, ad ordinals
    // 2..3 -> 1 + 20.
    assert_eq!(
        video_day_rows(&c, 202).await,
        vec![
            row("day", "2024-07-10", sums(1, 300, 1, 1, 10)),
            row("day", "2024-07-15", sums(1, 600, 2, 1, 20)),
        ]
    );
    assert_eq!(
        creator_rows(&c, 9).await,
        sorted(vec![
            row("day", "2024-07-10", sums(3, 1_100, 3, 3, 30)),
            row("day", "2024-07-15", sums(1, 600, 2, 1, 20)),
            row("week", "2024-07-08", sums(3, 1_100, 3, 3, 30)),
            row("week", "2024-07-15", sums(1, 600, 2, 1, 20)),
            row("month", "2024-07-01", sums(4, 1_700, 5, 4, 50)),
        ])
    );
    assert_eq!(
        creator_rows(&c, 8).await,
        sorted(dwm(
            "2024-07-10",
            "2024-07-08",
            "2024-07-01",
            sums(1, 50, 0, 1, 0)
        ))
    );
    assert_eq!(creator_rows(&c, 7).await, vec![]);
    assert_eq!(video_rows(&c, 204).await, vec![]);
    assert_eq!(video_rows(&c, 205).await, vec![]);
    assert_eq!(count(&c, "reference.settlement_creator").await, 8);
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// edge cases of the script and of compare()

#[tokio::test]
async fn empty_log_gives_empty_results() {
    let (db, c) = setup().await;
    exec(
        &c,
        "INSERT INTO videos VALUES (1, 1, 100, 'unwatched', '2024-01-01 00:00+09');",
    )
    .await;
    run_reference(&c).await;
    run_reference(&c).await;
    for table in [
        "reference.play_outcome",
        "reference.settlement_video",
        "reference.settlement_creator",
        "reference.top_videos",
    ] {
        assert_eq!(count(&c, table).await, 0, "{table}");
    }
    db.drop_db().await;
}

#[tokio::test]
async fn compare_finds_and_shows_differences() {
    let (db, c) = setup().await;
    exec(&c, WORKED_EXAMPLE).await;
    run_reference(&c).await;

    // The engine has written nothing yet: every reference row is missing.
    let diff = reference::compare(&c).await.expect("compare");
    assert!(!diff.is_empty());
    let per_table: Vec<(&str, u64, u64)> = diff
        .tables
        .iter()
        .map(|t| (t.table, t.only_in_reference, t.only_in_engine))
        .collect();
    assert_eq!(
        per_table,
        vec![
            ("settlement_video", 3, 0),
            ("settlement_creator", 3, 0),
            ("top_videos", 6, 0),
        ]
    );

    exec(
        &c,
        "INSERT INTO public.settlement_video SELECT * FROM reference.settlement_video;
         INSERT INTO public.settlement_creator SELECT * FROM reference.settlement_creator;
         INSERT INTO public.top_videos SELECT * FROM reference.top_videos;",
    )
    .await;
    let diff = reference::compare(&c).await.expect("compare");
    assert!(diff.is_empty(), "{diff}");
    assert_eq!(diff.differing_rows(), 0);

    // One wrong amount and one extra ranking row on the engine's side.
    exec(
        &c,
        "UPDATE public.settlement_video SET ad_amount = 31, total_amount = 33
         WHERE period_kind = 'day';
         INSERT INTO public.top_videos VALUES ('day', '2024-07-02', 'views', 1, 7, 1);",
    )
    .await;
    let diff = reference::compare(&c).await.expect("compare");
    assert_eq!(diff.differing_rows(), 3);
    let text = diff.to_string();
    assert!(
        text.contains(
            "reference  period_kind=day period_start=2024-07-01 video_id=7  |  \
             views=2 watch_seconds=910 ad_views=3 video_amount=2 ad_amount=30 total_amount=32"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "engine     period_kind=day period_start=2024-07-01 video_id=7  |  \
             views=2 watch_seconds=910 ad_views=3 video_amount=2 ad_amount=31 total_amount=33"
        ),
        "{text}"
    );
    assert!(
        text.contains("top_videos: 0 row(s) only in reference, 1 row(s) only in engine"),
        "{text}"
    );
    assert!(!text.contains("settlement_creator"), "{text}");
    db.drop_db().await;
}
