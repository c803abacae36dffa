//! `settle unsettle`: take back the newest settled days.

use settle::rules::Day;
use settle::Settle;

use super::args::ConnArgs;

#[derive(clap::Args, Debug)]
pub struct UnsettleArgs {
    /// First Seoul day to unsettle.
    #[arg(long)]
    pub from: chrono::NaiveDate,
    /// Last day to unsettle (default: the last settled day). Days after it
    /// may not stay settled: tiers carry forward from the removed days.
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// Really remove the days' results; without it, say what would go.
    #[arg(long)]
    pub yes: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn unsettle(conn: &ConnArgs, args: UnsettleArgs) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let from = Day::from_date(args.from);
    let to = args.to.map(Day::from_date);
    if !args.yes {
        let c = settle.database().connect().await?;
        let settled = settle::jobs::ledger::settled_range(&c).await?;
        let what = match settled {
            Some((a, b)) => format!("settled days: {a} .. {b}"),
            None => "no day is settled".into(),
        };
        return Err(settle::Error::Usage(format!(
            "unsettle removes the published results of {from} .. {} and marks those days unsettled ({what}); \
             add --yes to do it",
            to.map_or("the last settled day".to_string(), |d| d.to_string())
        ))
        .into());
    }
    let u = settle.unsettle(from, to).await?;
    if args.json {
        let mut v = serde_json::to_value(&u)?;
        v["status"] = "OK".into();
        super::out(&v.to_string());
        return Ok(0);
    }
    super::out(&format!(
        "unsettled {} .. {}: {} settled day(s) and {} result rows removed (unsettle {})",
        u.from, u.to, u.days, u.rows_deleted, u.unsettle_id
    ));
    for p in &u.rebuilt {
        super::out(&format!(
            "  {} of {} summed again from its days before {}",
            p.kind.as_str(),
            p.start,
            u.from
        ));
    }
    super::out(&match u.settled {
        Some((a, b)) => format!("settled days now: {a} .. {b}"),
        None => "no day is settled now".into(),
    });
    Ok(0)
}
