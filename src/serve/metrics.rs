//! Prometheus metrics. Counters and histograms are fed by runs in this
//! process; gauges about the database (executions by status, the last
//! settled day) are read from it at scrape time, so they are true across
//! processes and restarts.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::api::RunOutcome;
use crate::error::Result;

/// One recorder per process (the `metrics` facade has one global slot);
/// every server in the process renders from its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ])
                .expect("constant buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder installed first (an embedding program's)
            // keeps its slot; this handle then renders what it has.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "settle_rows_read_total",
        "viewing_log rows read by runs of this process"
    );
    metrics::describe_counter!("settle_rows_counted_total", "plays counted");
    metrics::describe_counter!("settle_rows_excluded_total", "plays excluded, by reason");
    metrics::describe_counter!("settle_rows_rejected_total", "rows rejected, by reason");
    metrics::describe_counter!(
        "settle_partition_retries_total",
        "partition reads tried again after a transient error"
    );
    metrics::describe_counter!("settle_runs_total", "runs of this process by outcome");
    metrics::describe_histogram!(
        "settle_phase_seconds",
        "duration of a completed run's phases"
    );
    metrics::describe_gauge!(
        "settle_executions",
        "executions in the job repository by status"
    );
    metrics::describe_gauge!(
        "settle_last_settled_day_timestamp_seconds",
        "start (Seoul midnight) of the last settled day, Unix seconds"
    );
    metrics::describe_gauge!(
        "settle_last_settled_day_age_seconds",
        "seconds since the end of the last settled day"
    );
    metrics::describe_gauge!(
        "settle_next_fire_timestamp_seconds",
        "next scheduled fire time per schedule, Unix seconds"
    );
    metrics::describe_gauge!("settle_schedule_paused", "1 when a schedule is paused");
    // A counter shows only once touched; retries are rare, and an alert on
    // their rate must see the zero before the first one.
    metrics::counter!("settle_partition_retries_total").increment(0);
}

pub fn partition_retry() {
    metrics::counter!("settle_partition_retries_total").increment(1);
}

/// Counts a run's end; a completed run adds its rows and phase times.
pub fn run_ended(outcome: &Result<RunOutcome>) {
    let label = match outcome {
        Ok(RunOutcome::Completed(_)) => "completed",
        Ok(RunOutcome::AlreadyCompleted { .. }) => "already_completed",
        Err(crate::error::Error::Stopped) => "stopped",
        Err(crate::error::Error::Locked { .. }) => "locked",
        Err(_) => "failed",
    };
    metrics::counter!("settle_runs_total", "outcome" => label).increment(1);
    let Ok(RunOutcome::Completed(s)) = outcome else {
        return;
    };
    metrics::counter!("settle_rows_read_total").increment(s.rows_read);
    metrics::counter!("settle_rows_counted_total").increment(s.counted);
    for (reason, n) in [
        ("self_play", s.excluded.self_play),
        ("rapid_replay", s.excluded.rapid_replay),
    ] {
        metrics::counter!("settle_rows_excluded_total", "reason" => reason).increment(n);
    }
    for (reason, n) in [
        ("unknown_video", s.rejected.unknown_video),
        ("bad_position", s.rejected.bad_position),
    ] {
        metrics::counter!("settle_rows_rejected_total", "reason" => reason).increment(n);
    }
    let p = &s.phases;
    for (phase, secs) in [
        ("plan", p.plan_s),
        ("read", p.read_aggregate_s),
        ("exact_path", p.exact_path_s),
        ("settle", p.settle_s),
        ("write", p.write_s),
        ("publish", p.publish_s),
        ("total", p.total_s),
    ] {
        metrics::histogram!("settle_phase_seconds", "phase" => phase).record(secs);
    }
}

/// Sets the database gauges just before a scrape renders them.
pub async fn refresh_gauges(
    c: &tokio_postgres::Client,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    use crate::error::DbContext;
    let rows = c
        .query(
            "SELECT status, count(*) FROM job_execution GROUP BY status",
            &[],
        )
        .await
        .db("counting executions")?;
    for status in [
        "STARTING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "STOPPED",
        "ABANDONED",
    ] {
        let n = rows
            .iter()
            .find(|r| r.get::<_, String>(0) == status)
            .map_or(0, |r| r.get::<_, i64>(1));
        metrics::gauge!("settle_executions", "status" => status).set(n as f64);
    }
    let last: Option<chrono::NaiveDate> = c
        .query_one("SELECT max(day) FROM settled_day", &[])
        .await
        .db("reading the last settled day")?
        .get(0);
    if let Some(day) = last {
        let start = crate::rules::Day::from_date(day).start_pg_micros();
        let start = crate::rules::calendar::pg_micros_to_utc(start);
        metrics::gauge!("settle_last_settled_day_timestamp_seconds").set(start.timestamp() as f64);
        let end = start + chrono::Duration::days(1);
        metrics::gauge!("settle_last_settled_day_age_seconds")
            .set((now - end).num_seconds().max(0) as f64);
    }
    Ok(())
}
