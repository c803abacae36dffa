//! `settle run`: the run's progress on stderr, its summary on stdout.

use std::sync::Mutex;
use std::time::Duration;

use settle::engine::Note;
use settle::{Event, Observer, RunOutcome, Settle};

use super::args::{ConnArgs, RunArgs};

pub async fn run(conn: &ConnArgs, args: RunArgs) -> anyhow::Result<i32> {
    let req = args.request()?;
    let settle = Settle::connect(&conn.config()).await?;
    stop_on_signal(
        req.stop_signal(),
        "stopping: finishing or abandoning the current partitions; nothing will be published",
    );
    let progress = Progress::new(!args.json);
    let outcome = settle.run(&req, &progress).await;
    progress.finish();
    match outcome? {
        RunOutcome::AlreadyCompleted { execution_id } => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"status": "ALREADY_COMPLETED", "execution_id": execution_id})
                );
            } else {
                println!("this date range already COMPLETED in execution {execution_id}; nothing to do (use --force to run it again)");
            }
            Ok(0)
        }
        RunOutcome::Completed(summary) => {
            if args.json {
                let mut v = serde_json::to_value(&summary)?;
                v["status"] = "COMPLETED".into();
                println!("{v}");
            } else {
                print!("{}", settle::report::run_summary(&summary));
            }
            Ok(0)
        }
    }
}

/// Raises `stop` on the first SIGTERM or Ctrl-C, saying `message`.
pub fn stop_on_signal(stop: settle::StopSignal, message: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("{message}");
        stop.raise();
    });
}

/// Draws the read's progress bar and prints notes, from the run's events.
pub struct Progress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    show: bool,
}

impl Progress {
    pub fn new(show: bool) -> Progress {
        Progress {
            bar: Mutex::new(None),
            show,
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }

    fn bar(&self) -> indicatif::ProgressBar {
        let mut slot = self.bar.lock().expect("progress lock");
        slot.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} reading viewing_log: {human_pos} rows ({per_sec}) {elapsed}{msg}",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        })
        .clone()
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event) {
        match event {
            Event::Note(n) => {
                let kind = if matches!(n, Note::Unattributed { .. }) {
                    "warning"
                } else {
                    "note"
                };
                let line = format!("{kind}: {}", note(n));
                match self.bar.lock().expect("progress lock").as_ref() {
                    Some(bar) => bar.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
            }
            Event::Planned { to_read, .. } if self.show && *to_read > 0 => {
                self.bar();
            }
            Event::Claims(states) if self.show => {
                self.bar().set_message(claims_line(states));
            }
            Event::PartitionRetry { no, error, .. } => {
                let line = format!("note: partition {no} is read again: {error}");
                match self.bar.lock().expect("progress lock").as_ref() {
                    Some(bar) => bar.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
            }
            Event::RowsRead(n) if self.show => {
                if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
                    bar.set_position(*n);
                }
            }
            Event::Phase(p) if *p != settle::Phase::Read && *p != settle::Phase::Plan => {
                self.finish()
            }
            _ => {}
        }
    }
}

/// Who holds which partition of a `--remote` run, for the progress line:
/// ` · 3/8 done · reading #4 host-a:812, #5 host-b:77 · 1 waiting`.
fn claims_line(states: &[settle::jobs::claims::ClaimState]) -> String {
    let done = states.iter().filter(|s| s.status == "COMPLETED").count();
    let reading: Vec<String> = states
        .iter()
        .filter(|s| s.status == "RUNNING")
        .map(|s| {
            format!(
                "#{} {}:{}",
                s.no,
                s.host.as_deref().unwrap_or("?"),
                s.pid.unwrap_or(0)
            )
        })
        .collect();
    let waiting = states.iter().filter(|s| s.status == "PENDING").count();
    let mut line = format!(" · {done}/{} done", states.len());
    if !reading.is_empty() {
        line.push_str(&format!(" · reading {}", reading.join(", ")));
    }
    if waiting > 0 {
        line.push_str(&format!(" · {waiting} waiting for a worker"));
    }
    line
}

/// A note in operator's words.
pub fn note(n: &Note) -> String {
    match n {
        Note::RowsAdded { previous, rows } => format!(
            "{rows} row(s) of viewing_log within this run's days were written after execution {previous} completed them; settling them again"
        ),
        Note::Abandoned { executions } => format!(
            "marked execution(s) {executions:?} ABANDONED: their process died while running"
        ),
        Note::Restated { day, delta } => format!(
            "{day} has {} plays in its last hours than when it was settled (rows written after it was settled); re-settling it with this run",
            if *delta > 0 { format!("{delta} more") } else { format!("{} fewer", -delta) }
        ),
        Note::Extended { after, to } => format!(
            "days after {after} up to {to} are already settled; re-settling them too, because tiers carry forward"
        ),
        Note::ReadAgain { previous, first, last } => format!(
            "execution {previous} read other days than this run must ({}); reading every partition again",
            match (first, last) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                _ => "all days".into(),
            }
        ),
        Note::LogChanged { previous, changed, added } => format!(
            "viewing_log changed since execution {previous} read it: {changed} of its finished partitions hold other rows now and are read again, and {added} new partitions cover ids outside its plan"
        ),
        Note::InputChanged(c) => format!(
            "settled input changed since it was settled; settling again from its earliest day: {}",
            settle::report::input_changes(c).join("; ")
        ),
        Note::Unattributed { rows } => format!(
            "{rows} stored rows belong to videos no longer in `videos`; they are not in any creator's sums"
        ),
    }
}
