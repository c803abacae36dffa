//! The plain-SQL reference implementation (sql/reference/), the oracle for
//! differential tests and case (c) of `settle bench`.
//!
//! The engine is fast and therefore clever; the reference is slow and
//! therefore obvious. Running both on the same data and comparing their rows
//! ([`compare`]) is how we trust the clever one. The reference writes to
//! schema `reference`, never to the public result tables.

use std::fmt;

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// The whole SPEC as one idempotent script: it rebuilds schema `reference`
/// (`settlement_video`, `settlement_creator`, `top_videos`, `play_outcome`)
/// from `public.videos` and `public.viewing_log`, all time.
pub const SQL: &str = include_str!("../../sql/reference/settle.sql");

/// How many differing rows per table [`Diff`]'s Display lists; the counts
/// are always complete.
pub const SHOWN_ROWS_PER_TABLE: usize = 20;

/// Runs the reference settlement. One multi-statement query, so it commits
/// as a whole or not at all.
pub async fn run(client: &Client) -> Result<()> {
    client
        .batch_execute(SQL)
        .await
        .db("running the reference settlement (sql/reference/settle.sql)")
}

/// A result table as compared: its key columns (to sort differences so that
/// the two versions of one row sit together) and its value columns.
struct Table {
    name: &'static str,
    key: &'static [&'static str],
    values: &'static [&'static str],
}

const SUMS: &[&str] = &[
    "views",
    "watch_seconds",
    "ad_views",
    "video_amount",
    "ad_amount",
    "total_amount",
];

const TABLES: [Table; 3] = [
    Table {
        name: "settlement_video",
        key: &["period_kind", "period_start", "video_id"],
        values: SUMS,
    },
    Table {
        name: "settlement_creator",
        key: &["period_kind", "period_start", "creator_id"],
        values: SUMS,
    },
    Table {
        name: "top_videos",
        key: &["period_kind", "period_start", "metric", "rank"],
        values: &["video_id", "value"],
    },
];

/// Which side of the comparison a differing row is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// In `reference.*` (the expected rows) but not in `public.*`.
    Reference,
    /// In `public.*` (the engine's rows) but not in `reference.*`.
    Engine,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str, so that width specifiers line the sides up
        f.pad(match self {
            Side::Reference => "reference",
            Side::Engine => "engine",
        })
    }
}

/// One row present on one side only, as `column=value` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRow {
    pub side: Side,
    pub key: String,
    pub values: String,
}

/// The differences in one result table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDiff {
    pub table: &'static str,
    /// Rows in `reference.<table>` missing from `public.<table>`.
    pub only_in_reference: u64,
    /// Rows in `public.<table>` missing from `reference.<table>`.
    pub only_in_engine: u64,
    /// Up to [`SHOWN_ROWS_PER_TABLE`] of those rows, sorted by key.
    pub rows: Vec<DiffRow>,
}

impl TableDiff {
    pub fn is_empty(&self) -> bool {
        self.only_in_reference == 0 && self.only_in_engine == 0
    }
}

/// The result of [`compare`]: one entry per result table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    pub tables: Vec<TableDiff>,
}

impl Diff {
    /// True when `reference.*` and `public.*` hold exactly the same rows.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(TableDiff::is_empty)
    }

    /// The number of rows on either side that the other side lacks.
    pub fn differing_rows(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.only_in_reference + t.only_in_engine)
            .sum()
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(
                f,
                "no differences: reference.* and public.* hold the same rows"
            );
        }
        writeln!(
            f,
            "the engine (public.*) differs from the reference (reference.*):"
        )?;
        for t in self.tables.iter().filter(|t| !t.is_empty()) {
            writeln!(
                f,
                "{}: {} row(s) only in reference, {} row(s) only in engine",
                t.table, t.only_in_reference, t.only_in_engine
            )?;
            for r in &t.rows {
                writeln!(f, "  {:<9}  {}  |  {}", r.side, r.key, r.values)?;
            }
            let hidden = t.only_in_reference + t.only_in_engine - t.rows.len() as u64;
            if hidden > 0 {
                writeln!(f, "  ... and {hidden} more")?;
            }
        }
        Ok(())
    }
}

/// Compares the reference's result tables with the engine's (`public.*`)
/// row for row, with EXCEPT in both directions. Run [`run`] first.
pub async fn compare(client: &Client) -> Result<Diff> {
    compare_schema(client, "reference").await
}

/// [`compare`] against the result tables of another schema, e.g. `peer`
/// for the bench's DuckDB case (a constant, never user text).
pub async fn compare_schema(client: &Client, schema: &'static str) -> Result<Diff> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in &TABLES {
        tables.push(compare_table(client, table, schema).await?);
    }
    Ok(Diff { tables })
}

async fn compare_table(client: &Client, table: &Table, schema: &str) -> Result<TableDiff> {
    let columns: Vec<&str> = table.key.iter().chain(table.values).copied().collect();
    let list = columns.join(", ");
    let as_text = |cols: &[&str]| {
        cols.iter()
            .map(|c| format!("'{c}=' || {c}::text"))
            .collect::<Vec<_>>()
            .join(" || ' ' || ")
    };
    let sql = format!(
        "WITH only_ref AS (SELECT {list} FROM {schema}.{t} EXCEPT SELECT {list} FROM public.{t}),
              only_eng AS (SELECT {list} FROM public.{t} EXCEPT SELECT {list} FROM {schema}.{t}),
              both_sides AS (SELECT true AS is_ref, * FROM only_ref
                             UNION ALL
                             SELECT false, * FROM only_eng)
         SELECT (SELECT count(*) FROM only_ref),
                (SELECT count(*) FROM only_eng),
                is_ref, {key_text}, {values_text}
         FROM both_sides
         ORDER BY {key}, is_ref DESC
         LIMIT {limit}",
        t = table.name,
        key = table.key.join(", "),
        key_text = as_text(table.key),
        values_text = as_text(table.values),
        limit = SHOWN_ROWS_PER_TABLE,
    );
    let rows = client.query(sql.as_str(), &[]).await.db(format!(
        "comparing {schema}.{0} with public.{0} (has the {schema} run?)",
        table.name
    ))?;
    let (mut only_in_reference, mut only_in_engine) = (0, 0);
    let mut shown = Vec::with_capacity(rows.len());
    for row in &rows {
        only_in_reference = row.get::<_, i64>(0) as u64;
        only_in_engine = row.get::<_, i64>(1) as u64;
        shown.push(DiffRow {
            side: if row.get(2) {
                Side::Reference
            } else {
                Side::Engine
            },
            key: row.get(3),
            values: row.get(4),
        });
    }
    Ok(TableDiff {
        table: table.name,
        only_in_reference,
        only_in_engine,
        rows: shown,
    })
}
