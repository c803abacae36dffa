//! `settle show`, `settle verify` and `settle export`: flags, and the
//! printing of what `settle::statements` returns.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, ContentArrangement, Table};
use settle::report::human_count;
use settle::rules::{Day, Period, PeriodKind};
use settle::statements::{self, export, show, verify, Metric, Sums};
use settle::Settle;

use super::args::ConnArgs;

fn parse_month(s: &str) -> Result<Day, String> {
    statements::parse_month(s).ok_or_else(|| format!("{s:?} is not a month: write YYYY-MM"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MetricArg {
    Views,
    #[value(name = "watch_seconds")]
    WatchSeconds,
}

impl MetricArg {
    fn metric(self) -> Metric {
        match self {
            MetricArg::Views => Metric::Views,
            MetricArg::WatchSeconds => Metric::WatchSeconds,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ShowWhat {
    /// The published top 5 videos of a day, week or month.
    Top {
        /// A Seoul day (YYYY-MM-DD).
        #[arg(long, group = "period", required_unless_present_any = ["week", "month"])]
        day: Option<chrono::NaiveDate>,
        /// Any day of the week (Monday to Sunday) to show.
        #[arg(long, group = "period")]
        week: Option<chrono::NaiveDate>,
        /// A month (YYYY-MM).
        #[arg(long, group = "period", value_parser = parse_month)]
        month: Option<Day>,
        /// Only this ranking [default: both].
        #[arg(long, value_enum)]
        metric: Option<MetricArg>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// What a creator earned in a month: each video's row and the total.
    Creator {
        /// The creator (uploader) id.
        id: i64,
        /// The month (YYYY-MM).
        #[arg(long, value_parser = parse_month)]
        month: Day,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A video's published day rows over a range of days.
    Video {
        /// The video id.
        id: i64,
        /// First Seoul day (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last Seoul day, inclusive.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Verify every settled day.
    #[arg(long, conflicts_with_all = ["date", "from", "to"], required_unless_present_any = ["date", "from"])]
    pub all: bool,
    /// Verify one Seoul day (YYYY-MM-DD), with its week and month.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<chrono::NaiveDate>,
    /// First day to verify (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<chrono::NaiveDate>,
    /// Last day to verify, inclusive (with --from).
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,
    /// Check the published tables' identities only (weeks and months are
    /// the sums of their days, creators of their videos, top 5 of the video
    /// rows, total = video + ad), without recounting the log.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Csv,
    Parquet,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The month to export (YYYY-MM); every day of it must be settled.
    #[arg(long, value_parser = parse_month)]
    pub month: Day,
    /// Only this creator's statement.
    #[arg(long)]
    pub creator: Option<i64>,
    /// File format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FormatArg,
    /// Write CSV without the UTF-8 byte order mark (for machines; Excel
    /// needs it to read Korean text).
    #[arg(long)]
    pub no_bom: bool,
    /// The directory to create (an earlier export there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Right-aligns every column from `from` on (the numbers).
fn numbers_right(t: &mut Table, from: usize, columns: usize) {
    for i in from..columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn n(v: i64) -> String {
    if v < 0 {
        format!("-{}", human_count(v.unsigned_abs()))
    } else {
        human_count(v as u64)
    }
}

fn sums_cells(s: &Sums) -> Vec<String> {
    [
        s.views,
        s.watch_seconds,
        s.ad_views,
        s.video_amount,
        s.ad_amount,
        s.total_amount,
    ]
    .iter()
    .map(|v| n(*v))
    .collect()
}

const SUM_HEADER: [&str; 6] = [
    "views",
    "watch_seconds",
    "ad_views",
    "video_amount",
    "ad_amount",
    "total_amount",
];

/// "all 7 days settled", or how much of the period is not published yet.
fn coverage_line(c: &show::Coverage) -> String {
    match (c.settled_days, c.days) {
        (1, 1) => "settled".into(),
        (s, d) if s == d => format!("all {d} days settled"),
        (0, 1) => "not settled: nothing published yet".into(),
        (0, d) => format!("none of its {d} days settled: nothing published yet"),
        (s, d) => format!("{s} of {d} days settled; the rest is not published yet"),
    }
}

/// "2024-07-15", "the week 2024-07-15 to 2024-07-21" or "2024-07".
fn period_name(kind: PeriodKind, start: Day) -> String {
    match kind {
        PeriodKind::Day => start.to_string(),
        PeriodKind::Week => format!("the week {start} to {}", Day(start.0 + 6)),
        PeriodKind::Month => statements::month_name(start),
    }
}

fn print_json(value: impl serde::Serialize, status: &str) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), status.into());
    }
    println!("{}", serde_json::to_string(&v)?);
    Ok(())
}

pub async fn show(conn: &ConnArgs, what: ShowWhat) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let c = settle.database().connect().await?;
    match what {
        ShowWhat::Top {
            day,
            week,
            month,
            metric,
            json,
        } => {
            let period = match (day, week, month) {
                (Some(d), _, _) => Period {
                    kind: PeriodKind::Day,
                    start: Day::from_date(d),
                },
                (_, Some(w), _) => Period {
                    kind: PeriodKind::Week,
                    start: Day::from_date(w).week_start(),
                },
                (_, _, Some(m)) => statements::month(m),
                _ => anyhow::bail!(settle::Error::Usage(
                    "say which period: --day D, --week D or --month YYYY-MM".into()
                )),
            };
            let top = show::top(&c, period, metric.map(MetricArg::metric)).await?;
            if json {
                print_json(&top, "ok")?;
            } else {
                print!("{}", render_top(&top));
            }
        }
        ShowWhat::Creator { id, month, json } => {
            let m = show::creator(&c, id, month).await?;
            if json {
                print_json(&m, "ok")?;
            } else {
                print!("{}", render_creator(&m));
            }
        }
        ShowWhat::Video { id, from, to, json } => {
            let v = show::video(&c, id, Day::from_date(from), Day::from_date(to)).await?;
            if json {
                print_json(&v, "ok")?;
            } else {
                print!("{}", render_video(&v));
            }
        }
    }
    Ok(0)
}

fn render_top(top: &show::Top) -> String {
    let mut o = format!(
        "top videos of {} ({})\n",
        period_name(top.period_kind, top.period_start),
        coverage_line(&top.coverage)
    );
    for list in &top.lists {
        o.push_str(&format!("\nby {}:\n", list.metric.as_str()));
        if list.entries.is_empty() {
            o.push_str("  (no published ranking for this period)\n");
            continue;
        }
        let mut t = table(&[
            "rank",
            "video_id",
            "title",
            "creator_id",
            list.metric.as_str(),
        ]);
        for e in &list.entries {
            t.add_row(vec![
                e.rank.to_string(),
                e.video_id.to_string(),
                e.title.clone().unwrap_or_else(|| "(not in videos)".into()),
                e.creator_id.map(|c| c.to_string()).unwrap_or_default(),
                n(e.value),
            ]);
        }
        numbers_right(&mut t, 4, 5);
        for i in [0, 1, 3] {
            numbers_right(&mut t, i, i + 1);
        }
        o.push_str(&format!("{t}\n"));
    }
    o
}

fn render_creator(m: &show::CreatorMonth) -> String {
    let mut o = format!(
        "creator {} in {} ({})\n",
        m.creator_id,
        statements::month_name(m.month),
        coverage_line(&m.coverage)
    );
    let mut header = vec!["video_id", "title"];
    header.extend(SUM_HEADER);
    let mut t = table(&header);
    for v in &m.videos {
        let mut row = vec![v.video_id.to_string(), v.title.clone().unwrap_or_default()];
        row.extend(sums_cells(&v.sums));
        t.add_row(row);
    }
    match &m.total {
        Some(total) => {
            let mut row = vec!["total".to_string(), format!("{} videos", m.videos.len())];
            row.extend(sums_cells(total));
            t.add_row(row);
        }
        None => {
            o.push_str("(no published month row: nothing counted for this creator)\n");
            return o;
        }
    }
    numbers_right(&mut t, 2, header.len());
    numbers_right(&mut t, 0, 1);
    o.push_str(&format!("{t}\n"));
    o
}

fn render_video(v: &show::VideoRange) -> String {
    let mut o = format!(
        "video {} {} (creator {}), {} to {} ({})\n",
        v.video_id,
        v.title
            .as_deref()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|| "(not in videos)".into()),
        v.creator_id.map(|c| c.to_string()).unwrap_or("-".into()),
        v.coverage.first_day,
        v.coverage.last_day,
        coverage_line(&v.coverage)
    );
    let mut header = vec!["day"];
    header.extend(SUM_HEADER);
    let mut t = table(&header);
    for d in &v.days {
        let mut row = vec![d.day.to_string()];
        row.extend(sums_cells(&d.sums));
        t.add_row(row);
    }
    let mut row = vec![format!("total ({} days)", v.days.len())];
    row.extend(sums_cells(&v.total));
    t.add_row(row);
    numbers_right(&mut t, 1, header.len());
    o.push_str(&format!("{t}\n"));
    o
}

pub async fn verify(conn: &ConnArgs, args: VerifyArgs) -> anyhow::Result<i32> {
    let scope = match (args.all, args.date, args.from, args.to) {
        (true, ..) => verify::Scope::All,
        (_, Some(d), ..) => verify::Scope::Days(Day::from_date(d), Day::from_date(d)),
        (_, _, Some(a), Some(b)) => verify::Scope::Days(Day::from_date(a), Day::from_date(b)),
        _ => anyhow::bail!(settle::Error::Usage(
            "say which days: --date D, --from D --to D, or --all".into()
        )),
    };
    let mode = if args.quick {
        verify::Mode::Quick
    } else {
        verify::Mode::Full
    };
    let settle = Settle::connect(&conn.config()).await?;
    let v = verify::verify(settle.database(), scope, mode).await?;
    if args.json {
        print_json(&v, v.result)?;
    } else {
        print!("{}", render_verification(&v));
    }
    Ok(if v.passed() { 0 } else { 1 })
}

fn render_verification(v: &verify::Verification) -> String {
    let what = match v.mode {
        verify::Mode::Full => "recount with sql/reference/ compared row for row",
        verify::Mode::Quick => "identities of the published tables, no recount",
    };
    let [days, weeks, months] = v.periods;
    let mut o = format!(
        "verification {} ({what}): days {} to {}, {days} days, {weeks} weeks, {months} months\n",
        v.verification_id,
        v.first_day.map(|d| d.to_string()).unwrap_or_default(),
        v.last_day.map(|d| d.to_string()).unwrap_or_default(),
    );
    let mut t = table(&[
        "check",
        "table",
        "matching",
        "differing",
        "missing",
        "extra",
    ]);
    for c in &v.checks {
        t.add_row(vec![
            c.check.to_string(),
            c.table.to_string(),
            n(c.matching),
            n(c.differing),
            n(c.missing),
            n(c.extra),
        ]);
    }
    let [m, d, mi, e] = v.totals();
    t.add_row(vec!["all".into(), String::new(), n(m), n(d), n(mi), n(e)]);
    numbers_right(&mut t, 2, 6);
    o.push_str(&format!("{t}\n"));
    if !v.unsettled_days.is_empty() {
        let list: Vec<String> = v.unsettled_days.iter().map(|d| d.to_string()).collect();
        o.push_str(&format!(
            "not settled, so nothing published to verify: {}\n",
            list.join(", ")
        ));
    }
    if !v.sample.is_empty() {
        o.push_str("differences (a sample; published | expected):\n");
        for s in &v.sample {
            o.push_str(&format!(
                "  {:<8} {} {}\n           published: {}\n           expected:  {}\n",
                s.kind,
                s.table,
                s.key,
                s.published.as_deref().unwrap_or("(no row)"),
                s.expected.as_deref().unwrap_or("(no row)"),
            ));
        }
    }
    o.push_str(&format!(
        "result: {} ({:.1}s)\n",
        match v.result {
            "match" => "MATCH: every compared row is right",
            "differs" => "DIFFERS: the published results are not what they should be",
            _ => "INCOMPLETE: no difference, but some days asked for are not settled",
        },
        v.seconds
    ));
    o
}

pub async fn export(conn: &ConnArgs, args: ExportArgs) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let req = export::ExportRequest {
        month: args.month,
        creator: args.creator,
        format: match args.format {
            FormatArg::Csv => export::Format::Csv,
            FormatArg::Parquet => export::Format::Parquet,
        },
        bom: !args.no_bom,
        out: args.out,
    };
    let r = export::export(settle.database(), &req).await?;
    if args.json {
        print_json(&r, "ok")?;
        return Ok(0);
    }
    let m = &r.manifest;
    let bytes: u64 = r.written.iter().map(|(_, b)| b).sum();
    println!(
        "exported {} ({} creators, {} videos) from execution {} to {}: {} files, {} bytes in {:.2}s",
        m.month,
        m.creators,
        m.videos,
        m.execution_id,
        r.out.display(),
        r.written.len(),
        human_count(bytes),
        r.seconds
    );
    println!(
        "  totals: views {}, video_amount {} won, ad_amount {} won, total_amount {} won",
        n(m.totals.views),
        n(m.totals.video_amount),
        n(m.totals.ad_amount),
        n(m.totals.total_amount)
    );
    println!(
        "  check the files with: (cd {} && sha256sum -c SHA256SUMS)",
        r.out.display()
    );
    Ok(0)
}
