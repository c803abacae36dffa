//! `settle-datagen` against a real PostgreSQL (the testkit's private
//! cluster): determinism whatever --jobs is, --append, the configured rates,
//! the id-vs-started_at disorder bound the engine relies on, and the index
//! definitions a full load rebuilds.
//!
//! Two ignored tests are tools rather than checks: `profile_report` prints
//! the data profile at ~2M rows, `speed` times a load (SETTLE_DATAGEN_ROWS,
//! SETTLE_DATAGEN_STREAMS); run them with `--release -- --ignored --nocapture`.

use settle::testkit::TestDb;
use settle_datagen::{DatagenArgs, MAX_WALL_SECS};
use tokio_postgres::Client;

async fn one_str(c: &Client, sql: &str) -> String {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn one_i64(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn log_hash(c: &Client, filter: &str) -> String {
    one_str(
        c,
        &format!(
            "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') FROM viewing_log t {filter}"
        ),
    )
    .await
}

async fn videos_hash(c: &Client) -> String {
    one_str(
        c,
        "SELECT md5(string_agg(t::text, ',' ORDER BY video_id)) FROM videos t",
    )
    .await
}

/// Largest amount by which a row started before some row with a lower id.
async fn max_disorder_secs(c: &Client) -> i64 {
    one_i64(
        c,
        "SELECT coalesce(max(extract(epoch FROM prev_max - started_at)), 0)::bigint
         FROM (SELECT started_at,
                      max(started_at) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
               FROM viewing_log) s",
    )
    .await
}

/// Row classes by the SPEC's rules: (total, invalid, self_play, rapid_replay
/// among valid non-self rows, restarts exactly 30 s later).
async fn classes(c: &Client) -> [i64; 5] {
    let row = c
        .query_one(
            "WITH v AS (
               SELECT l.id, l.user_id, l.video_id, l.started_at, vd.uploader_id,
                      vd.video_id IS NOT NULL
                        AND 0 <= l.start_position AND l.start_position <= l.end_position
                        AND l.end_position <= vd.duration_seconds AS valid
               FROM viewing_log l LEFT JOIN videos vd ON vd.video_id = l.video_id),
             ok AS (
               SELECT *, started_at - lag(started_at) OVER (
                          PARTITION BY user_id, video_id ORDER BY started_at, id) AS gap
               FROM v WHERE valid)
             SELECT (SELECT count(*) FROM v),
                    (SELECT count(*) FROM v WHERE NOT valid),
                    count(*) FILTER (WHERE user_id = uploader_id),
                    count(*) FILTER (WHERE user_id <> uploader_id AND gap < interval '30 seconds'),
                    count(*) FILTER (WHERE gap = interval '30 seconds')
             FROM ok",
            &[],
        )
        .await
        .expect("classes query");
    [row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)]
}

fn assert_near(what: &str, got: i64, total: i64, rate: f64, tolerance: f64) {
    let share = got as f64 / total as f64;
    assert!(
        (share - rate).abs() <= rate * tolerance,
        "{what}: {got} of {total} rows = {share:.5}, expected {rate} +- {:.0}%",
        tolerance * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_tables_whatever_jobs() {
    let a = TestDb::new().await.expect("test db");
    let b = TestDb::new().await.expect("test db");
    let s1 = a
        .generate(&["--rows", "200000", "--videos", "5000", "--jobs", "1"])
        .await;
    let s2 = b
        .generate(&["--rows", "200000", "--videos", "5000", "--jobs", "2"])
        .await;
    assert_eq!((s1.rows, s2.rows), (200_000, 200_000));
    assert_eq!((s1.first_id, s1.last_id), (1, 200_000));
    let (ca, cb) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    let (ha, hb) = (log_hash(&ca, "").await, log_hash(&cb, "").await);
    assert_eq!(ha, hb, "viewing_log differs between --jobs 1 and --jobs 2");
    assert_eq!(videos_hash(&ca).await, videos_hash(&cb).await);

    // Another seed gives other data; replacing again with the first seed
    // (over existing data, with 3 jobs) gives the first tables back.
    b.generate(&["--rows", "200000", "--videos", "5000", "--seed", "43"])
        .await;
    assert_ne!(
        log_hash(&cb, "").await,
        ha,
        "--seed did not change the data"
    );
    b.generate(&["--rows", "200000", "--videos", "5000", "--jobs", "3"])
        .await;
    assert_eq!(log_hash(&cb, "").await, ha);
    // Each load stream filled one id-range partition; together they hold
    // every id once, in order.
    assert_eq!((s1.partitions, s2.partitions), (1, 2));
    let leaves = "SELECT count(*) FROM pg_partition_tree('viewing_log') WHERE isleaf";
    assert_eq!(one_i64(&ca, leaves).await, 1);
    assert_eq!(one_i64(&cb, leaves).await, 3);
    let per_partition = "SELECT string_agg(format('%s-%s', lo, hi), ' ' ORDER BY lo) FROM          (SELECT min(id) lo, max(id) hi FROM viewing_log GROUP BY tableoid) p";
    let spans: String = cb.query_one(per_partition, &[]).await.unwrap().get(0);
    let bounds: Vec<(i64, i64)> = spans
        .split(' ')
        .map(|p| {
            let (lo, hi) = p.split_once('-').unwrap();
            (lo.parse().unwrap(), hi.parse().unwrap())
        })
        .collect();
    assert_eq!(bounds.len(), 3, "{spans}");
    assert_eq!((bounds[0].0, bounds[2].1), (1, 200_000), "{spans}");
    assert!(bounds.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{spans}");
    assert_eq!(one_i64(&cb, "SELECT count(*) FROM videos").await, 5_000);

    // Smaller leaves than rows / --jobs: more partitions, loaded two at a
    // time, and still the same data.
    let s4 = b
        .generate(&[
            "--rows",
            "200000",
            "--videos",
            "5000",
            "--jobs",
            "2",
            "--leaf-rows",
            "60000",
        ])
        .await;
    assert_eq!(s4.partitions, 4);
    assert_eq!(one_i64(&cb, leaves).await, 4);
    assert_eq!(log_hash(&cb, "").await, ha);

    a.drop_db().await;
    b.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_rates_bounds_and_indexes() {
    let db = TestDb::new().await.expect("test db");
    let s = db
        .generate(&["--rows", "200000", "--videos", "5000", "--days", "7"])
        .await;
    assert_eq!((s.rows, s.days), (200_000, 7));
    assert_eq!(
        (s.first_day.as_str(), s.last_day.as_str()),
        ("2024-07-01", "2024-07-07")
    );
    let c = db.connect().await.unwrap();

    let [total, invalid, self_play, replay, at30] = classes(&c).await;
    assert_eq!(total, 200_000);
    assert_near("invalid", invalid, total, 0.001, 0.35);
    assert_near("self_play", self_play, total, 0.005, 0.2);
    assert_near("rapid_replay", replay, total, 0.02, 0.1);
    assert!(at30 > 100, "only {at30} restarts exactly 30 s later");
    // All three kinds of invalid rows occur.
    let unknown = one_i64(
        &c,
        "SELECT count(*) FROM viewing_log l WHERE NOT EXISTS (SELECT 1 FROM videos v WHERE v.video_id = l.video_id)",
    )
    .await;
    let backwards = one_i64(
        &c,
        "SELECT count(*) FROM viewing_log WHERE end_position < start_position",
    )
    .await;
    assert!(
        unknown > 20 && backwards > 20,
        "unknown {unknown}, backwards {backwards}"
    );
    // Equal-timestamp replays and resumes on a 5-minute mark occur.
    let ties = one_i64(
        &c,
        "SELECT count(*) FROM (SELECT 1 FROM viewing_log GROUP BY user_id, video_id, started_at HAVING count(*) > 1) s",
    )
    .await;
    let marks = one_i64(
        &c,
        "SELECT count(*) FROM viewing_log WHERE start_position > 0 AND start_position % 300 = 0",
    )
    .await;
    assert!(
        ties > 100 && marks > 100,
        "ties {ties}, resumes on a mark {marks}"
    );

    // Every play starts inside the window, in Seoul time.
    let outside = one_i64(
        &c,
        "SELECT count(*) FROM viewing_log
         WHERE started_at < '2024-07-01 00:00+09' OR started_at >= '2024-07-08 00:00+09'",
    )
    .await;
    assert_eq!(outside, 0);
    // The evening is busier than the small hours.
    let evening = one_i64(&c, "SELECT count(*) FROM viewing_log WHERE extract(hour FROM started_at AT TIME ZONE 'Asia/Seoul') = 21").await;
    let night = one_i64(&c, "SELECT count(*) FROM viewing_log WHERE extract(hour FROM started_at AT TIME ZONE 'Asia/Seoul') = 4").await;
    assert!(evening > 5 * night, "21h {evening} vs 4h {night}");

    // Ids follow stop times: disorder exists but stays within the bound.
    let disorder = max_disorder_secs(&c).await;
    assert!(disorder > 0, "ids are exactly in started_at order");
    assert!(
        disorder <= MAX_WALL_SECS as i64 && disorder <= 3 * 3600,
        "disorder {disorder} s"
    );

    // The rebuilt indexes are the migration's.
    let defs: Vec<String> = c
        .query(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
             WHERE i.indrelid = 'viewing_log'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        defs,
        [
            "CREATE INDEX viewing_log_started_at_brin ON ONLY public.viewing_log USING brin (started_at) WITH (pages_per_range='32')",
            "CREATE UNIQUE INDEX viewing_log_pkey ON ONLY public.viewing_log USING btree (id)",
        ]
    );
    let pk = one_str(
        &c,
        "SELECT conname::text FROM pg_constraint WHERE conrelid = 'viewing_log'::regclass AND contype = 'p'",
    )
    .await;
    assert_eq!(pk, "viewing_log_pkey");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_adds_the_next_day_only() {
    let db = TestDb::new().await.expect("test db");
    db.generate(&["--rows", "90000", "--videos", "3000", "--days", "3"])
        .await;
    let c = db.connect().await.unwrap();
    let old_max = one_i64(&c, "SELECT max(id) FROM viewing_log").await;
    assert_eq!(old_max, 90_000);
    let old_hash = log_hash(&c, "").await;
    let old_videos = videos_hash(&c).await;

    let s = db
        .generate(&["--append", "--days", "1", "--rows", "20000", "--jobs", "1"])
        .await;
    assert_eq!(
        (s.mode, s.rows, s.first_id, s.last_id),
        ("append", 20_000, 90_001, 110_000)
    );
    assert_eq!(s.first_day, "2024-07-04");
    assert_eq!(log_hash(&c, "WHERE id <= 90000").await, old_hash);
    assert_eq!(videos_hash(&c).await, old_videos, "videos changed");
    let misplaced = one_i64(
        &c,
        "SELECT count(*) FROM viewing_log
         WHERE id > 90000 AND (started_at < '2024-07-04 00:00+09' OR started_at >= '2024-07-05 00:00+09')",
    )
    .await;
    assert_eq!(misplaced, 0);
    assert!(max_disorder_secs(&c).await <= MAX_WALL_SECS as i64);

    // Without --rows an append adds the existing average per day.
    let s = db.generate(&["--append", "--days", "2"]).await;
    assert_eq!(s.first_day, "2024-07-05");
    assert_eq!(s.rows, 110_000 * 2 / 4);
    assert_eq!(
        one_i64(&c, "SELECT count(*) FROM viewing_log").await,
        165_000
    );
    assert_eq!(
        one_i64(&c, "SELECT count(*) FROM viewing_log WHERE id > 110000 AND started_at < '2024-07-05 00:00+09'").await,
        0
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_leaves_the_tables_as_they_were() {
    let db = TestDb::new().await.expect("test db");
    db.generate(&["--rows", "20000", "--videos", "1000"]).await;
    let c = db.connect().await.unwrap();
    let before = log_hash(&c, "").await;
    let fail = |flags: &'static [&'static str], expect: &'static str| {
        let config = db.config().clone();
        async move {
            let args = DatagenArgs::from_flags(flags).unwrap();
            let err = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                settle_datagen::run(&args, &config),
            )
            .await
            .unwrap_or_else(|_| panic!("{flags:?}: a failed load hangs"))
            .unwrap_err();
            assert!(err.to_string().contains(expect), "{flags:?}: {err}");
        }
    };
    let unchanged = || async {
        assert_eq!(log_hash(&c, "").await, before);
        let indexes = "SELECT count(*) FROM pg_index WHERE indrelid = 'viewing_log'::regclass";
        assert_eq!(one_i64(&c, indexes).await, 2);
        let staging = "SELECT count(*) FROM pg_class WHERE relname LIKE 'viewing_log_load%'";
        assert_eq!(
            one_i64(&c, staging).await,
            0,
            "a failed load left its tables"
        );
    };
    // The second load stream's table gets a CHECK that its rows from
    // mid-July on violate: its COPY fails part-way, with the generator still
    // running and the first stream's table loading or already committed.
    c.batch_execute(
        "CREATE FUNCTION fail_late() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                      WHERE object_identity = 'public.viewing_log_load_1') THEN
             ALTER TABLE viewing_log_load_1 ADD CONSTRAINT no_late CHECK (started_at < '2024-07-15');
           END IF;
         END $$;
         CREATE EVENT TRIGGER fail_late ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
           EXECUTE FUNCTION fail_late();",
    )
    .await
    .unwrap();
    fail(&["--rows", "300000", "--jobs", "2"], "no_late").await;
    unchanged().await;
    c.batch_execute("DROP EVENT TRIGGER fail_late")
        .await
        .unwrap();
    // An append of later days fails at once.
    c.batch_execute(
        "ALTER TABLE viewing_log ADD CONSTRAINT no_late CHECK (started_at < '2024-07-15') NOT VALID",
    )
    .await
    .unwrap();
    fail(&["--append", "--days", "3", "--rows", "30000"], "no_late").await;
    unchanged().await;
    // A full load replaces the table, which an object depending on it
    // prevents: the load fails when it swaps the tables, and says why.
    c.batch_execute("CREATE VIEW log_days AS SELECT DISTINCT started_at::date FROM viewing_log")
        .await
        .unwrap();
    fail(&["--rows", "30000", "--jobs", "3"], "depend").await;
    unchanged().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_say_what_to_do() {
    let db = TestDb::new().await.expect("test db");
    let args = DatagenArgs::from_flags(["--replay-rate", "0.5"]).unwrap();
    let err = settle_datagen::run(&args, db.config()).await.unwrap_err();
    assert!(err.to_string().contains("--replay-rate"), "{err}");
    // A full load while another holds the load lock is refused at once.
    let other = db.connect().await.unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&settle_datagen::LOAD_LOCK])
        .await
        .unwrap();
    let args = DatagenArgs::from_flags(["--rows", "1000"]).unwrap();
    let err = settle_datagen::run(&args, db.config()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("another `settle datagen` is loading"),
        "{err}"
    );
    drop(other);
    db.drop_db().await;
}

fn percentile(sorted: &[i64], p: usize) -> i64 {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Prints the data profile at ~2M rows (not a check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn profile_report() {
    let db = TestDb::new().await.expect("test db");
    let rows: u64 = std::env::var("SETTLE_DATAGEN_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let s = db.generate(&["--rows", &rows.to_string()]).await;
    println!("{s}");
    let c = db.connect().await.unwrap();
    let mut views: Vec<i64> = c
        .query("SELECT count(*) FROM viewing_log GROUP BY video_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    views.sort_unstable();
    let with_plays = views.len();
    println!(
        "views per video (videos with plays: {with_plays}): median {} p90 {} p99 {} max {}",
        percentile(&views, 50),
        percentile(&views, 90),
        percentile(&views, 99),
        views.last().unwrap()
    );
    let [total, invalid, self_play, replay, at30] = classes(&c).await;
    let pct = |n: i64| n as f64 * 100.0 / total as f64;
    println!(
        "rows {total}: invalid {invalid} ({:.3}%), self_play {self_play} ({:.3}%), rapid_replay {replay} ({:.3}%), restarts at exactly 30 s {at30}",
        pct(invalid),
        pct(self_play),
        pct(replay)
    );
    println!(
        "largest id-vs-started_at lag: {} s",
        max_disorder_secs(&c).await
    );
    for row in c
        .query(
            "SELECT extract(hour FROM started_at AT TIME ZONE 'Asia/Seoul')::int AS h, count(*)
             FROM viewing_log GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        let (h, n): (i32, i64) = (row.get(0), row.get(1));
        print!("{h:02}h {n}  ");
    }
    println!();
    let row = c
        .query_one(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_seconds),
                    count(*) FILTER (WHERE duration_seconds < 300), max(duration_seconds)
             FROM videos",
            &[],
        )
        .await
        .unwrap();
    let (med, short, max): (i32, i64, i32) = (row.get(0), row.get(1), row.get(2));
    println!("video durations: median {med} s, under 5 min {short}, max {max} s");
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE start_position > 0),
                    count(*) FILTER (WHERE start_position > 0 AND start_position % 300 = 0),
                    percentile_disc(0.5) WITHIN GROUP (ORDER BY end_position - start_position)
             FROM viewing_log",
            &[],
        )
        .await
        .unwrap();
    let (resumes, marks, med_len): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    println!("resumes {resumes} (on a 5-minute mark {marks}), median watched {med_len} s");
    db.drop_db().await;
}

/// CPU seconds (user + system) of a process from /proc; with `children`,
/// also of its reaped children.
fn proc_cpu(pid: u32, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let f: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14-17 (1-based): utime, stime, cutime, cstime, in ticks.
    let mut t = f[11] + f[12];
    if children {
        t += f[13] + f[14];
    }
    t / 100.0
}

/// CPU seconds used so far by the test cluster's server (all its processes,
/// the exited ones through the postmaster's children times).
fn server_cpu() -> f64 {
    let pidfile = settle::testkit::test_cluster_dir().join("data/postmaster.pid");
    let Some(pm) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = proc_cpu(pm, true);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pm) {
            total += proc_cpu(pid, false);
        }
    }
    total
}

/// Times a full load (not a check): SETTLE_DATAGEN_ROWS rows (default 5M),
/// SETTLE_DATAGEN_STREAMS COPY streams (default 1), then, with
/// SETTLE_DATAGEN_APPEND_DAYS, an append of that many days. Prints, every second,
/// the CPU the server and this process used, to tell their shares apart on
/// a busy machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn speed() {
    let db = TestDb::new().await.expect("test db");
    let rows = std::env::var("SETTLE_DATAGEN_ROWS").unwrap_or_else(|_| "5000000".into());
    let streams = std::env::var("SETTLE_DATAGEN_STREAMS").unwrap_or_else(|_| "1".into());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let me = std::process::id();
            let (s0, m0) = (server_cpu(), proc_cpu(me, false));
            let (mut s1, mut m1) = (s0, m0);
            let mut t = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_secs(1));
                t += 1;
                let (s2, m2) = (server_cpu(), proc_cpu(me, false));
                println!(
                    "t={t:>3}s server {:>4.0}% datagen {:>4.0}%",
                    (s2 - s1) * 100.0,
                    (m2 - m1) * 100.0
                );
                (s1, m1) = (s2, m2);
            }
            (s1 - s0, m1 - m0)
        })
    };
    let s = db
        .generate(&["--rows", &rows, "--copy-streams", &streams])
        .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (server, me) = sampler.join().unwrap();
    println!("{s}");
    println!("CPU seconds: server {server:.1}, datagen {me:.1}");
    println!("{}", serde_json::to_string(&s).unwrap());
    if let Ok(days) = std::env::var("SETTLE_DATAGEN_APPEND_DAYS") {
        let (s0, m0) = (server_cpu(), proc_cpu(std::process::id(), false));
        let a = db.generate(&["--append", "--days", &days]).await;
        println!("{a}");
        println!(
            "CPU seconds: server {:.1}, datagen {:.1}",
            server_cpu() - s0,
            proc_cpu(std::process::id(), false) - m0
        );
    }
    if std::env::var_os("SETTLE_DATAGEN_KEEP_DB").is_some() {
        println!("kept database {}", db.name);
        return;
    }
    db.drop_db().await;
}

/// Runs `settle bench datagen` with `flags` on `db`, writing into a
/// temporary directory; returns the record and its markdown, having checked
/// that pgbench's tables are gone.
async fn bench_datagen(db: &TestDb, flags: &[&str]) -> (settle_datagen::BenchRecord, String) {
    let dir = std::env::temp_dir().join(format!(
        "settle-datagen-bench-{}-{}",
        std::process::id(),
        db.name
    ));
    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        b: settle_datagen::BenchArgs,
    }
    let argv = std::iter::once("bench").chain(flags.iter().copied());
    let args = <W as clap::Parser>::parse_from(argv).b;
    let record = settle_datagen::bench_vs_pgbench(&args, db.config(), &dir)
        .await
        .expect("bench runs");
    let md = std::fs::read_to_string(&record.md_path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let c = db.connect().await.unwrap();
    assert_eq!(
        one_i64(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbench%'"
        )
        .await,
        0,
        "pgbench's tables were left behind"
    );
    (record, md)
}

/// `bench_vs_pgbench` at a small size (not a check; writes into a temporary
/// directory): SETTLE_DATAGEN_ROWS rows (default 2M) against the same number
/// of pgbench rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_small() {
    let db = TestDb::new().await.expect("test db");
    let rows = std::env::var("SETTLE_DATAGEN_ROWS").unwrap_or_else(|_| "2000000".into());
    let (_, md) = bench_datagen(&db, &["--rows", &rows]).await;
    println!("{md}");
    db.drop_db().await;
}

/// `settle bench datagen --pairs 3` at a small size: the pairs alternate
/// which goes first, the record's ratio is the median of theirs, and
/// pgbench's tables are gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pairs_alternate_and_report_the_median_ratio() {
    let db = TestDb::new().await.expect("test db");
    let (r, md) = bench_datagen(&db, &["--rows", "200000", "--pairs", "3"]).await;
    let first: Vec<bool> = r.pairs.iter().map(|p| p.datagen_first).collect();
    assert_eq!(first, [true, false, true]);
    let mut ratios: Vec<f64> = r.pairs.iter().map(|p| p.ratio.expect("timed")).collect();
    ratios.sort_by(f64::total_cmp);
    assert_eq!(r.ratio, Some(ratios[1]));
    assert_eq!(r.rows, 200_000);
    assert!(
        md.contains("median of the pairs") && md.contains("| 2 | pgbench |"),
        "{md}"
    );
    let c = db.connect().await.unwrap();
    assert_eq!(
        one_i64(&c, "SELECT count(*) FROM viewing_log").await,
        200_000
    );
    db.drop_db().await;
}
