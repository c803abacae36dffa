//! `settle worker`: a line per claim on stderr (or JSON on stdout), until
//! the claimers end.

use settle::remote::ClaimEvent;
use settle::{Settle, StopSignal};

use super::args::{ConnArgs, WorkerArgs};

pub async fn worker(conn: &ConnArgs, args: WorkerArgs) -> anyhow::Result<i32> {
    let opts = args.options()?;
    let settle = Settle::connect(&conn.config()).await?;
    let stop = StopSignal::default();
    super::run::stop_on_signal(stop.clone(), "stopping: giving the current partitions back");
    if !args.json {
        eprintln!(
            "settle worker: {} claimer(s), claiming on {}, reading from {}{}",
            opts.threads,
            settle.database().display,
            if args.read_url.is_some() {
                "--read-url"
            } else {
                "the primary"
            },
            if args.once { " (--once)" } else { "" }
        );
    }
    let mut worker = settle.start_worker(&opts, &stop);
    while let Some(ev) = worker.events.recv().await {
        if args.json {
            super::out(&event_json(&ev).to_string());
        } else {
            eprintln!("{}", event_line(&ev));
        }
    }
    let done = tokio::task::spawn_blocking(move || worker.join()).await??;
    if !args.json {
        eprintln!("settle worker: done, {done} partition(s) completed");
    }
    Ok(0)
}

fn event_line(ev: &ClaimEvent) -> String {
    let now = chrono::Utc::now().format("%H:%M:%S");
    let what = match ev {
        ClaimEvent::Claimed { exec, no, attempt } => {
            format!("claimed partition {no} of execution {exec} (attempt {attempt})")
        }
        ClaimEvent::Done { exec, no, rows, seconds, .. } => format!(
            "completed partition {no} of execution {exec}: {rows} rows in {seconds:.1} s"
        ),
        ClaimEvent::GaveBack { exec, no, why, .. } => {
            format!("gave partition {no} of execution {exec} back: {why}")
        }
        ClaimEvent::Lost { exec, no, .. } => format!(
            "partition {no} of execution {exec} was taken back (or its run ended) before it finished; its result was dropped"
        ),
        ClaimEvent::Failed { exec, no, error, .. } => {
            format!("partition {no} of execution {exec} FAILED: {error}")
        }
        ClaimEvent::OtherServer { exec, theirs } => format!(
            "warning: execution {exec} reads from another server ({theirs}) than this worker; start a worker with --read-url pointing at that server to help it"
        ),
        ClaimEvent::Reconnecting { error } => {
            format!("lost the job repository ({error}); reconnecting")
        }
    };
    format!("{now} {what}")
}

fn event_json(ev: &ClaimEvent) -> serde_json::Value {
    use serde_json::json;
    match ev {
        ClaimEvent::Claimed { exec, no, attempt } => {
            json!({"event": "claimed", "execution": exec, "partition": no, "attempt": attempt})
        }
        ClaimEvent::Done {
            exec,
            no,
            attempt,
            rows,
            seconds,
        } => {
            json!({"event": "completed", "execution": exec, "partition": no, "attempt": attempt, "rows": rows, "seconds": seconds})
        }
        ClaimEvent::GaveBack {
            exec,
            no,
            attempt,
            why,
        } => {
            json!({"event": "gave_back", "execution": exec, "partition": no, "attempt": attempt, "why": why})
        }
        ClaimEvent::Lost { exec, no, attempt } => {
            json!({"event": "lost", "execution": exec, "partition": no, "attempt": attempt})
        }
        ClaimEvent::Failed {
            exec,
            no,
            attempt,
            error,
        } => {
            json!({"event": "failed", "execution": exec, "partition": no, "attempt": attempt, "error": error})
        }
        ClaimEvent::OtherServer { exec, theirs } => {
            json!({"event": "other_server", "execution": exec, "server": theirs})
        }
        ClaimEvent::Reconnecting { error } => json!({"event": "reconnecting", "error": error}),
    }
}
