//! Human-readable rendering of run summaries and job history.

use std::fmt::Write;

use crate::engine::RunSummary;

pub fn human_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A `--remote` run's readers: partitions, rows and attempts per host:pid.
fn readers(s: &RunSummary) -> Vec<String> {
    let mut by: std::collections::BTreeMap<String, (Vec<u32>, u64, u32)> = Default::default();
    for t in s.partition_timings.iter().filter(|t| !t.reused) {
        let who = format!(
            "{}:{}",
            t.host.as_deref().unwrap_or("?"),
            t.pid.unwrap_or(0)
        );
        let e = by.entry(who).or_default();
        e.0.push(t.no);
        e.1 += t.rows;
        e.2 = e.2.max(t.attempts);
    }
    by.into_iter()
        .map(|(who, (mut nos, rows, attempts))| {
            nos.sort_unstable();
            let list: Vec<String> = nos.iter().map(|n| format!("#{n}")).collect();
            format!(
                "{who:>15}  partitions {} ({} rows){}",
                list.join(" "),
                human_count(rows),
                if attempts > 1 {
                    format!(", up to attempt {attempts}")
                } else {
                    String::new()
                }
            )
        })
        .collect()
}

/// The end-of-run summary.
pub fn run_summary(s: &RunSummary) -> String {
    let mut o = String::new();
    let range = match (&s.first_day, &s.last_day) {
        (Some(a), Some(b)) => format!("{a} .. {b}"),
        _ => "no days (empty viewing_log)".into(),
    };
    let _ = writeln!(
        o,
        "execution {} (attempt {}{}) COMPLETED: settled {range}{}",
        s.execution_id,
        s.attempt,
        s.restarted_from
            .map(|r| format!(", restarted from {r}"))
            .unwrap_or_default(),
        s.extended_to
            .as_ref()
            .map(|t| format!(" (extended to {t}: later settled days re-priced)"))
            .unwrap_or_default()
    );
    if let Some(c) = &s.input_changes {
        for line in input_changes(c) {
            let _ = writeln!(o, "  input changed    {line}");
        }
    }
    let _ = writeln!(
        o,
        "  rows read        {:>15}  (of which look-back context {})",
        human_count(s.rows_read),
        human_count(s.lookback_rows)
    );
    let _ = writeln!(o, "  counted plays    {:>15}", human_count(s.counted));
    let _ = writeln!(
        o,
        "  excluded         {:>15}  self_play {}, rapid_replay {}",
        human_count(s.excluded.self_play + s.excluded.rapid_replay),
        human_count(s.excluded.self_play),
        human_count(s.excluded.rapid_replay)
    );
    let _ = writeln!(
        o,
        "  rejected         {:>15}  unknown_video {}, bad_position {}",
        human_count(s.rejected.unknown_video + s.rejected.bad_position),
        human_count(s.rejected.unknown_video),
        human_count(s.rejected.bad_position)
    );
    let _ = writeln!(
        o,
        "  partitions       {:>15}  ({} read, {} reused from a failed run), workers {} x {} streams",
        s.partitions, s.partitions_read, s.partitions_reused, s.workers, s.streams
    );
    if let Some(r) = &s.read_from {
        let _ = writeln!(
            o,
            "  read from        {:>15}  {}",
            r.server,
            r.replay_lsn
                .as_ref()
                .map(|l| format!("replayed through WAL {l}: later plays settle next run"))
                .unwrap_or_default()
        );
    }
    if s.remote {
        for line in readers(s) {
            let _ = writeln!(o, "  read by          {line}");
        }
    }
    let _ = writeln!(
        o,
        "  exact path       {:>15}  seeds ({} late rows), {} re-read in {} queries, {} corrections; max disorder seen {:.0} s",
        human_count(s.exact_path.seeds),
        human_count(s.exact_path.late_rows),
        human_count(s.exact_path.reread_rows),
        s.exact_path.queries,
        s.exact_path.corrections,
        s.max_disorder_s
    );
    let p = &s.phases;
    let _ = writeln!(
        o,
        "  time             {:>14.2}s  plan {:.2}s, read+aggregate {:.2}s, exact path {:.2}s, settle {:.2}s, write {:.2}s, publish {:.2}s",
        p.total_s, p.plan_s, p.read_aggregate_s, p.exact_path_s, p.settle_s, p.write_s, p.publish_s
    );
    let _ = writeln!(
        o,
        "  throughput       {:>13.0}/s  peak RSS {}",
        s.rows_per_s,
        mib(s.peak_rss_bytes)
    );
    let _ = writeln!(
        o,
        "  written          {:>15}  video rows, {} creator rows, {} top rows; {} stored rows deleted, {} already current",
        human_count(s.written.video_rows),
        human_count(s.written.creator_rows),
        human_count(s.written.top_rows),
        human_count(s.written.deleted_rows),
        human_count(s.written.unchanged_rows)
    );
    if let Some(m) = &s.publish_method {
        let _ = writeln!(o, "  published by     {:>15}  ({})", m.method, m.why);
    }
    o
}

/// One line per changed day or video, e.g. "2024-07-31: 1,000 rows fewer,
/// 0 changed".
pub fn input_changes(c: &crate::jobs::changes::InputChanges) -> Vec<String> {
    let mut out = Vec::new();
    if c.truncated {
        out.push("viewing_log or videos was truncated".to_string());
    }
    for d in &c.days {
        let net = d.net();
        let diff = match net.cmp(&0) {
            std::cmp::Ordering::Greater => format!("{} rows more", human_count(net as u64)),
            std::cmp::Ordering::Less => format!("{} rows fewer", human_count(net.unsigned_abs())),
            std::cmp::Ordering::Equal => "as many rows".to_string(),
        };
        out.push(format!(
            "{}: {diff}, {} changed",
            d.day,
            human_count(d.updated as u64)
        ));
    }
    for v in &c.videos {
        let what = match v.op.as_str() {
            "INSERT" => "added (its plays were rejected as unknown)",
            "DELETE" => "removed",
            _ => "given another uploader or duration",
        };
        out.push(format!(
            "video {} {what}; it has plays from {}",
            v.video_id, v.from
        ));
    }
    out
}
