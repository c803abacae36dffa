//! Text renderings of the job repository for `settle history` and
//! `settle status`.

use std::fmt::Write;

use settle::jobs::history::{ExecutionRow, Status};
use settle::jobs::verification::VerificationRecord;
use settle::report::human_count;

pub fn render_history(rows: &[ExecutionRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>6}  {:<32} {:>3}  {:<9}  {:<20}  {:>9}  {:>13}  {:>13}  {:>11}  {:>9}",
        "exec",
        "parameters",
        "try",
        "status",
        "started (UTC)",
        "duration",
        "rows read",
        "counted",
        "excluded",
        "rejected"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>6}  {:<32} {:>3}  {:<9}  {:<20}  {:>9}  {:>13}  {:>13}  {:>11}  {:>9}",
            r.execution_id,
            r.params,
            r.attempt,
            r.status,
            r.started_at,
            r.duration_s
                .map(|d| format!("{d:.1}s"))
                .unwrap_or_else(|| "-".into()),
            human_count(r.rows_read as u64),
            human_count(r.counted as u64),
            human_count((r.excluded_self_play + r.excluded_rapid_replay) as u64),
            human_count((r.rejected_unknown_video + r.rejected_bad_position) as u64),
        );
    }
    if rows.is_empty() {
        o.push_str("(no executions yet: run `settle run --all`)\n");
    }
    o
}

pub fn render_verifications(rows: &[VerificationRecord]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>6}  {:<5}  {:<10}  {:<10}  {:<10}  {:<20}  {:>8}  {:>11}  {:>9}  {:>9}  {:>9}",
        "verif",
        "mode",
        "result",
        "from",
        "to",
        "started (UTC)",
        "duration",
        "matching",
        "differing",
        "missing",
        "extra"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>6}  {:<5}  {:<10}  {:<10}  {:<10}  {:<20}  {:>8}  {:>11}  {:>9}  {:>9}  {:>9}",
            r.verification_id,
            r.mode,
            r.result,
            r.day_from.as_deref().unwrap_or("-"),
            r.day_to.as_deref().unwrap_or("-"),
            r.started_at,
            format!("{:.1}s", r.duration_s),
            human_count(r.matching as u64),
            human_count(r.differing as u64),
            human_count(r.missing as u64),
            human_count(r.extra as u64),
        );
    }
    if rows.is_empty() {
        o.push_str("(no verifications yet: run `settle verify --all`)\n");
    }
    o
}

pub fn render_status(s: &Status) -> String {
    let e = &s.execution;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "execution {} of {} (attempt {}): {}{}",
        e.execution_id,
        e.params,
        e.attempt,
        e.status,
        e.restarted_from
            .map(|r| format!(", continuing execution {r}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "  started {} on {} (pid {}), ended {}, {}",
        e.started_at,
        e.host,
        e.pid,
        e.ended_at.as_deref().unwrap_or("-"),
        // An --all run knows its days only once it has read them.
        match (e.day_from.as_deref(), e.day_to.as_deref()) {
            (Some(a), Some(b)) => format!("days {a} .. {b}"),
            _ => "days not known yet (an --all run finds them as it reads)".into(),
        }
    );
    let _ = writeln!(
        o,
        "  rows read {}, counted {}, excluded self_play {} / rapid_replay {}, rejected unknown_video {} / bad_position {}",
        human_count(e.rows_read as u64),
        human_count(e.counted as u64),
        human_count(e.excluded_self_play as u64),
        human_count(e.excluded_rapid_replay as u64),
        human_count(e.rejected_unknown_video as u64),
        human_count(e.rejected_bad_position as u64)
    );
    if let Some(err) = &e.error {
        let _ = writeln!(o, "  error: {err}");
    }
    let done = s
        .partitions
        .iter()
        .filter(|p| p.status == "COMPLETED")
        .count();
    let _ = writeln!(
        o,
        "  partitions: {done} of {} completed",
        s.partitions.len()
    );
    for p in &s.partitions {
        let _ = writeln!(
            o,
            "    #{:<4} ids {:>12} ..= {:<12} {:<9} attempts {:<2} rows {:>12}  {}{}{}{}",
            p.partition_no,
            p.id_lo,
            p.id_hi,
            p.status,
            p.attempts,
            human_count(p.rows_read as u64),
            p.duration_ms
                .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                .unwrap_or_default(),
            p.reused_from
                .map(|r| format!(" (kept from execution {r})"))
                .unwrap_or_default(),
            p.host
                .as_ref()
                .map(|h| format!(" by {h} pid {}", p.pid.unwrap_or(0)))
                .unwrap_or_default(),
            p.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
    }
    if s.rejects_by_reason.is_empty() {
        let _ = writeln!(o, "  rejected rows: none recorded");
    } else {
        let by: Vec<String> = s
            .rejects_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {}", human_count(*n as u64)))
            .collect();
        let _ = writeln!(o, "  rejected rows: {}; sample:", by.join(", "));
        for r in &s.reject_sample {
            let _ = writeln!(
                o,
                "    id {} {:<13} user {} video {} started {} positions {}..{}",
                r.viewing_log_id,
                r.reason,
                r.user_id,
                r.video_id,
                r.started_at,
                r.start_position,
                r.end_position
            );
        }
    }
    o
}

pub fn render_refusals(rows: &[settle::jobs::refusals::RefusalRow]) -> String {
    let mut o = String::from("\nrefused runs (not executions: nothing was read or recorded)\n");
    let _ = writeln!(
        o,
        "{:>6}  {:<20}  {:<32} {:<18} reason",
        "id", "refused (UTC)", "parameters", "kind"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>6}  {:<20}  {:<32} {:<18} {}",
            r.refusal_id, r.refused_at, r.params, r.kind, r.reason
        );
    }
    if rows.is_empty() {
        o.push_str("(none)\n");
    }
    o
}

pub fn render_unsettles(rows: &[settle::jobs::unsettle::UnsettleRow]) -> String {
    let mut o = String::from("\nunsettled days (settle unsettle)\n");
    let _ = writeln!(
        o,
        "{:>6}  {:<20}  {:<24} {:>6} {:>14}  host",
        "id", "unsettled (UTC)", "days", "count", "rows deleted"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>6}  {:<20}  {:<24} {:>6} {:>14}  {}",
            r.unsettle_id,
            r.unsettled_at,
            format!("{} .. {}", r.from, r.to),
            r.days,
            r.rows_deleted,
            r.host
        );
    }
    if rows.is_empty() {
        o.push_str("(none)\n");
    }
    o
}
