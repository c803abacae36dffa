//! `settle verify`, `settle export` and `settle show` on a small generated
//! month settled by the engine, through the binary where the exit code or
//! the printed text is the contract.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cli::{settle_blocking, text};
use common::*;
use settle::jobs::Requested;
use settle::testkit::TestDb;
use tokio_postgres::Client;

/// A generated July (2024-07-01 .. 31), settled by the engine in one run.
async fn settled_july() -> (TestDb, Client) {
    let db = TestDb::new().await.unwrap();
    db.generate(&[
        "--rows",
        "120000",
        "--videos",
        "1500",
        "--users",
        "15000",
        "--creators",
        "150",
    ])
    .await;
    let database = db.database().await.unwrap();
    run(&database, &opts(Requested::All, 2, 2)).await;
    let c = db.connect().await.unwrap();
    let settled: i64 = c
        .query_one(
            "SELECT count(*) FROM settled_day WHERE day BETWEEN '2024-07-01' AND '2024-07-31'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(settled, 31, "the generated month is wholly settled");
    (db, c)
}

fn settle(url: &str, args: &[&str]) -> Output {
    settle_blocking(url, args, &[])
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// A day row of some video: (day, video_id).
async fn some_day_row(c: &Client) -> (chrono::NaiveDate, i64) {
    let r = c
        .query_one(
            "SELECT period_start, video_id FROM settlement_video \
             WHERE period_kind = 'day' AND period_start = '2024-07-10' \
             ORDER BY total_amount DESC, video_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_matches_a_settled_log_and_names_a_row_changed_by_hand() {
    let (db, c) = settled_july().await;
    let o = settle(&db.url, &["verify", "--all", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["status"], "match");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    for ch in checks {
        assert!(ch["matching"].as_i64().unwrap() > 0, "{ch}");
    }

    let (day, video) = some_day_row(&c).await;
    c.execute(
        "UPDATE settlement_video SET video_amount = video_amount + 7, total_amount = total_amount + 7 \
         WHERE period_kind = 'day' AND period_start = $1 AND video_id = $2",
        &[&day, &video],
    )
    .await
    .unwrap();
    let o = settle(&db.url, &["verify", "--all"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let named = format!("period_kind=day period_start={day} video_id={video}");
    assert!(out.contains(&named), "names {named}:\n{out}");
    assert!(out.contains("DIFFERS"), "{out}");

    // The range restricts the comparison: another week of the month is
    // still right (its month row is untouched, and day 10 is not in it).
    let o = settle(
        &db.url,
        &["verify", "--from", "2024-07-22", "--to", "2024-07-23"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = settle(&db.url, &["verify", "--date", &day.to_string(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["status"], "differs");
    assert_eq!(v["checks"][0]["differing"], 1, "{v}");

    // Each verification is recorded, newest first, and history lists them.
    let recent = settle::jobs::verification::recent(&c, 10).await.unwrap();
    let results: Vec<&str> = recent.iter().map(|r| r.result.as_str()).collect();
    assert_eq!(results, ["differs", "match", "differs", "match"]);
    assert_eq!(recent[0].differing, 1);
    let o = settle(&db.url, &["history"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("latest verifications") && out.contains("differs"),
        "{out}"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_verify_catches_a_week_row_that_is_not_the_sum_of_its_days() {
    let (db, c) = settled_july().await;
    let o = settle(&db.url, &["verify", "--all", "--quick", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["checks"].as_array().unwrap().len(), 6);

    let video: i64 = c
        .query_one(
            "SELECT video_id FROM settlement_video WHERE period_kind = 'week' \
             AND period_start = '2024-07-08' ORDER BY video_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE settlement_video SET watch_seconds = watch_seconds + 1 \
         WHERE period_kind = 'week' AND period_start = '2024-07-08' AND video_id = $1",
        &[&video],
    )
    .await
    .unwrap();
    let o = settle(&db.url, &["verify", "--all", "--quick", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json(&o);
    let week = &v["checks"][0];
    assert_eq!(week["check"], "week/month = sum of its days");
    assert_eq!(week["differing"], 1, "{v}");
    let named = format!("period_kind=week period_start=2024-07-08 video_id={video}");
    assert!(
        v["sample"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["key"] == named.as_str()),
        "names {named}: {v}"
    );

    // total = video + ad, on its own.
    c.execute(
        "UPDATE settlement_video SET watch_seconds = watch_seconds - 1 \
         WHERE period_kind = 'week' AND period_start = '2024-07-08' AND video_id = $1",
        &[&video],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE settlement_creator SET total_amount = total_amount + 1 \
         WHERE (period_kind, period_start, creator_id) = \
               (SELECT period_kind, period_start, creator_id FROM settlement_creator \
                WHERE period_kind = 'day' ORDER BY period_start, creator_id LIMIT 1)",
        &[],
    )
    .await
    .unwrap();
    let o = settle(&db.url, &["verify", "--all", "--quick", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json(&o);
    let failed: Vec<String> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ch| ch["differing"].as_i64() != Some(0))
        .map(|ch| format!("{} {}", ch["check"], ch["table"]))
        .collect();
    assert!(
        failed.contains(&"\"total = video + ad\" \"settlement_creator\"".to_string()),
        "{failed:?}"
    );
    db.drop_db().await;
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A CSV file's records, after its byte order mark.
fn records(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").expect("a BOM");
    let mut r = csv::Reader::from_reader(body);
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

async fn month_sum(c: &Client, table: &str) -> i64 {
    c.query_one(
        &format!(
            "SELECT sum(total_amount)::int8 FROM {table} \
             WHERE period_kind = 'month' AND period_start = '2024-07-01'"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_statements_that_add_up_and_reproduce_byte_for_byte() {
    let (db, c) = settled_july().await;
    let (_, video) = some_day_row(&c).await;
    c.execute(
        "UPDATE videos SET title = '=HYPERLINK(\"http://x\")' WHERE video_id = $1",
        &[&video],
    )
    .await
    .unwrap();
    let creator: i64 = c
        .query_one(
            "SELECT uploader_id FROM videos WHERE video_id = $1",
            &[&video],
        )
        .await
        .unwrap()
        .get(0);
    let tmp = std::env::temp_dir().join(format!("settle-export-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    for out in [&a, &b] {
        let o = settle(
            &db.url,
            &[
                "export",
                "--month",
                "2024-07",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }

    // The summary's totals equal the published month rows to the won.
    let (header, rows) = records(&read(&a.join("creators.csv")));
    for name in [
        "creator_id",
        "views",
        "watch_seconds",
        "ad_views",
        "video_amount",
        "ad_amount",
        "total_amount",
    ] {
        assert!(header.iter().any(|h| h == name), "{name} in {header:?}");
    }
    let total = column(&header, "total_amount");
    let exported: i64 = rows.iter().map(|r| r[total].parse::<i64>().unwrap()).sum();
    assert!(exported > 0);
    assert_eq!(exported, month_sum(&c, "settlement_creator").await);
    assert_eq!(exported, month_sum(&c, "settlement_video").await);

    // Each statement's lines add up to its total row, and the statements
    // together to the summary.
    let mut statements_total = 0;
    for r in &rows {
        let id = &r[column(&header, "creator_id")];
        let (h, lines) = records(&read(&a.join(format!("statements/creator_{id}.csv"))));
        let t = column(&h, "total_amount");
        let (last, videos) = lines.split_last().unwrap();
        assert_eq!(last[column(&h, "row_type")], "total");
        let sum: i64 = videos.iter().map(|l| l[t].parse::<i64>().unwrap()).sum();
        assert_eq!(sum, last[t].parse::<i64>().unwrap(), "creator {id}");
        statements_total += sum;
        if id.parse::<i64>().unwrap() == creator {
            let title = column(&h, "title");
            let line = videos
                .iter()
                .find(|l| l[column(&h, "video_id")] == video.to_string())
                .unwrap();
            assert_eq!(line[title], "'=HYPERLINK(\"http://x\")");
        }
    }
    assert_eq!(statements_total, exported);

    // CRLF line ends only, and a BOM.
    let raw = read(&a.join("creators.csv"));
    assert!(raw.starts_with(b"\xEF\xBB\xBFmonth,creator_id,"));
    let lf = raw.iter().filter(|&&b| b == b'\n').count();
    let crlf = raw.windows(2).filter(|w| w == b"\r\n").count();
    assert_eq!(lf, rows.len() + 1);
    assert_eq!(crlf, lf);

    // Byte-identical re-export, sums that sha256sum accepts, _SUCCESS.
    assert_eq!(read(&a.join("SHA256SUMS")), read(&b.join("SHA256SUMS")));
    assert_eq!(
        read(&a.join("manifest.json")),
        read(&b.join("manifest.json"))
    );
    assert!(a.join("_SUCCESS").is_file());
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&a)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&a.join("manifest.json"))).unwrap();
    assert_eq!(manifest["totals"]["total_amount"], exported);
    assert_eq!(manifest["files"].as_array().unwrap().len(), rows.len() + 1);
    assert!(manifest["execution_id"].as_i64().unwrap() > 0);
    // Nothing left beside the final directories.
    let names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let _ = std::fs::remove_dir_all(&tmp);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn export_keeps_the_header_of_an_empty_statement_and_refuses_an_unsettled_month() {
    let (db, c) = settled_july().await;
    let tmp = std::env::temp_dir().join(format!("settle-export-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = tmp.join("nobody");
    let o = settle(
        &db.url,
        &[
            "export",
            "--month",
            "2024-07",
            "--creator",
            "987654321",
            "--no-bom",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary = read(&out.join("creators.csv"));
    assert_eq!(
        summary,
        b"month,creator_id,videos,views,watch_seconds,ad_views,video_amount,ad_amount,total_amount\r\n"
    );
    let statement = String::from_utf8(read(&out.join("statements/creator_987654321.csv"))).unwrap();
    assert_eq!(statement.lines().count(), 2, "{statement}");
    assert!(
        statement.ends_with("total,2024-07-01,987654321,,,0,0,0,0,0,0\r\n"),
        "{statement}"
    );

    c.execute(
        "DELETE FROM settled_day WHERE day IN ('2024-07-30', '2024-07-31')",
        &[],
    )
    .await
    .unwrap();
    let o = settle(
        &db.url,
        &[
            "export",
            "--month",
            "2024-07",
            "--out",
            tmp.join("july").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2024-07-30 to 2024-07-31"), "{err}");
    assert!(!tmp.join("july").exists());
    let _ = std::fs::remove_dir_all(&tmp);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_statements_carry_int64_amounts_and_the_execution_id() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let (db, c) = settled_july().await;
    let tmp = std::env::temp_dir().join(format!("settle-export-pq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let o = settle(
        &db.url,
        &[
            "export",
            "--month",
            "2024-07",
            "--format",
            "parquet",
            "--out",
            tmp.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let file = std::fs::File::open(tmp.join("creators.parquet")).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .clone();
    let exec: i64 = c
        .query_one("SELECT max(execution_id) FROM settled_day", &[])
        .await
        .unwrap()
        .get(0);
    assert!(kv
        .iter()
        .any(|k| k.key == "settle.execution_id"
            && k.value.as_deref() == Some(exec.to_string().as_str())));
    let schema = builder.schema().clone();
    assert_eq!(
        schema.field_with_name("total_amount").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    let mut sum = 0i64;
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let col = batch
            .column_by_name("total_amount")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap()
            .clone();
        sum += col.iter().map(|v| v.unwrap()).sum::<i64>();
    }
    assert_eq!(sum, month_sum(&c, "settlement_creator").await);
    let _ = std::fs::remove_dir_all(&tmp);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_the_published_top_5_and_a_creators_month() {
    let (db, c) = settled_july().await;
    let expected: Vec<(i64, i64)> = c
        .query(
            "SELECT video_id, value FROM top_videos WHERE period_kind = 'day' \
             AND period_start = '2024-07-15' AND metric = 'views' ORDER BY rank",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(expected.len(), 5);
    let o = settle(
        &db.url,
        &[
            "show",
            "top",
            "--day",
            "2024-07-15",
            "--metric",
            "views",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    let shown: Vec<(i64, i64)> = v["lists"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["video_id"].as_i64().unwrap(),
                e["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, expected);

    // The table lists them in rank order.
    let o = settle(
        &db.url,
        &["show", "top", "--day", "2024-07-15", "--metric", "views"],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let mut at = 0;
    for (rank, (video, _)) in expected.iter().enumerate() {
        let needle = format!("│ {:>4} ┆ {:>8} ┆", rank + 1, video);
        let found = out[at..].find(&needle);
        assert!(found.is_some(), "{needle} after byte {at} in:\n{out}");
        at += found.unwrap();
    }

    // A creator's month: the total is the published creator row.
    let (creator, total): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT creator_id, total_amount FROM settlement_creator WHERE period_kind = 'month' \
                 AND period_start = '2024-07-01' ORDER BY total_amount DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let o = settle(
        &db.url,
        &[
            "show",
            "creator",
            &creator.to_string(),
            "--month",
            "2024-07",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["total"]["total_amount"], total);
    let lines: i64 = v["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["total_amount"].as_i64().unwrap())
        .sum();
    assert_eq!(lines, total);
    let o = settle(
        &db.url,
        &[
            "show",
            "video",
            "1",
            "--from",
            "2024-07-01",
            "--to",
            "2024-07-07",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("total ("));
    db.drop_db().await;
}
