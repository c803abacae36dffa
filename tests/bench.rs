//! `settle bench` end to end on a few million rows: CI's smoke run of the
//! engine bench. Every case runs twice (the reference once) and the record
//! is checked for completeness and for (b)'s results equalling the
//! reference's. Timings are recorded, never asserted.

use std::process::Command;

use serde_json::Value;
use settle::testkit::TestDb;

const SETTLE: &str = env!("CARGO_BIN_EXE_settle");

#[tokio::test(flavor = "multi_thread")]
async fn bench_smoke_run_records_every_case_and_agrees_with_the_reference() {
    let db = TestDb::new().await.unwrap();
    db.generate(&[
        "--rows", "2000000", "--videos", "20000", "--days", "10", "--jobs", "2",
    ])
    .await;

    let dir = std::env::temp_dir().join(format!("settle-bench-smoke-{}", db.name));
    let out = Command::new(SETTLE)
        .args([
            "bench",
            "--runs",
            "2",
            "--reference-runs",
            "1",
            "--label",
            "smoke",
            "--results-dir",
        ])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "settle bench failed:\n{stderr}");

    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let json = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a JSON record");
    let md = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "md"))
        .expect("a markdown table");
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    println!("{md}");

    assert_eq!(rec["rows"], 2_000_000, "{rec:#}");
    assert_eq!(rec["reference_differing_rows"], 0, "{rec:#}");
    assert!(md.contains("(b)'s published rows equal (c)'s"), "{md}");
    for case in [
        "floor_id_ranges",
        "floor_ctid_ranges",
        "engine_all",
        "engine_reads",
        "write_floor",
        "reference",
        "engine_date",
    ] {
        let runs = rec[case]["runs_s"].as_array().expect(case);
        let n = if case == "reference" { 1 } else { 2 };
        assert_eq!(runs.len(), n, "{case}: {rec:#}");
        for r in runs {
            assert!(r.as_f64().unwrap() > 0.0, "{case}: {rec:#}");
        }
    }
    for ratio in [
        "ratio_run_over_floor",
        "ratio_reads_over_floor",
        "ratio_write_over_floor",
        "bound_run_over_floor",
        "ratio_run_over_reads",
        "ratio_reference_over_run",
        "ratio_date_over_all",
    ] {
        let x = rec[ratio].as_f64().expect(ratio);
        assert!(x.is_finite() && x > 0.0, "{ratio}: {rec:#}");
    }
    // Each round's own ratios, one per round; the median of two is the
    // upper one.
    let runs = |case: &str| -> Vec<f64> {
        rec[case]["runs_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // A log datagen partitioned by id also has its leaves copied whole.
    assert_eq!(runs("floor_whole_leaves").len(), 2, "{rec:#}");
    assert!(md.contains("whole leaves"), "{md}");
    let method = rec["floor_method"].as_str().unwrap();
    let floor = runs(if method.ends_with("ctid ranges") {
        "floor_ctid_ranges"
    } else if method.ends_with("whole leaves") {
        "floor_whole_leaves"
    } else {
        "floor_id_ranges"
    });
    for (list, median, case) in [
        ("run_over_floor", "median_run_over_floor", "engine_all"),
        (
            "reads_over_floor",
            "median_reads_over_floor",
            "engine_reads",
        ),
    ] {
        let v: Vec<f64> = rec["rounds"][list]
            .as_array()
            .expect(list)
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = runs(case).iter().zip(&floor).map(|(x, f)| x / f).collect();
        // Equal up to the last bit the JSON round trip may change.
        assert_eq!(v.len(), want.len(), "{list}: {rec:#}");
        for (x, w) in v.iter().zip(&want) {
            assert!((x - w).abs() <= 1e-12 * w.abs(), "{list}: {rec:#}");
        }
        assert_eq!(
            rec["rounds"][median].as_f64(),
            Some(v[0].max(v[1])),
            "{rec:#}"
        );
    }
    // The date run reads one day of ten (plus its look-back), not the log.
    let date_rows = rec["date_rows_read"].as_u64().unwrap();
    assert!(
        date_rows > 100_000 && date_rows < 400_000,
        "date run read {date_rows} rows: {rec:#}"
    );
    assert!(rec["partitions"].as_u64().unwrap() >= 1);
    // (b)'s second run too published every row onto cleared tables (onto
    // the first's results it would have written none), and (w) wrote them.
    let written = rec["engine_rows_written"].as_u64().unwrap();
    assert!(written > 20_000, "{rec:#}");
    assert_eq!(rec["write_floor_rows"].as_u64(), Some(written), "{rec:#}");
    assert!(
        (rec["bound_run_over_floor"].as_f64().unwrap()
            - 1.0
            - rec["ratio_write_over_floor"].as_f64().unwrap())
        .abs()
            < 1e-9,
        "{rec:#}"
    );
    // (b') decoded every row of the log, through the engine's partitions.
    assert_eq!(rec["engine_reads_rows"], 2_000_000, "{rec:#}");
    assert!(rec["partition_seconds"]["max"].as_f64().unwrap() > 0.0);
    assert!(rec["engine_peak_rss_bytes"].as_u64().unwrap() > 0);

    // The test cluster runs on this machine, so both sides' CPU is counted:
    // the floor is all server, a run spends on both sides.
    let cpu = &rec["cpu"];
    assert!(cpu["server_unmeasured"].is_null(), "{cpu:#}");
    for case in [
        "floor_ctid_ranges",
        "floor_id_ranges",
        "floor_whole_leaves",
        "engine_all",
        "engine_reads",
        "write_floor",
    ] {
        assert!(
            cpu[case]["server_s"].as_f64().unwrap() > 0.0,
            "{case}: {cpu:#}"
        );
    }
    assert!(
        cpu["engine_all"]["engine_s"].as_f64().unwrap() > 0.0,
        "{cpu:#}"
    );
    assert!(
        cpu["engine_date"]["engine_s"].as_f64().unwrap() > 0.0,
        "{cpu:#}"
    );
    // (b') runs in the bench's own threads, which its client CPU counts.
    assert!(
        cpu["engine_reads"]["engine_s"].as_f64().unwrap() > 0.0,
        "{cpu:#}"
    );
    assert_eq!(cpu["floor_ctid_ranges"]["engine_s"], 0.0, "{cpu:#}");
    assert!(md.contains("| (b) settle run --all |"), "{md}");
    assert!(md.contains("| (b') the engine's reads alone"), "{md}");
    assert!(md.contains("| (w) the write floor"), "{md}");
    db.drop_db().await;
}
