//! The SQL of `settle verify`: the scope tables, the reference recount in
//! session-local scratch tables, the expected rows of each check, and one
//! row-for-row comparison. Every statement is built from constants here;
//! the only values from outside (days, the cutoff) travel as parameters.

use tokio_postgres::Transaction;

use crate::error::{DbContext, Error, Result};

/// Key and value columns of a compared relation.
pub(super) struct Shape {
    pub key: &'static [&'static str],
    pub values: &'static [&'static str],
}

const SUMS: &[&str] = &[
    "views",
    "watch_seconds",
    "ad_views",
    "video_amount",
    "ad_amount",
    "total_amount",
];

pub(super) const VIDEO: Shape = Shape {
    key: &["period_kind", "period_start", "video_id"],
    values: SUMS,
};
pub(super) const CREATOR: Shape = Shape {
    key: &["period_kind", "period_start", "creator_id"],
    values: SUMS,
};
pub(super) const TOP: Shape = Shape {
    key: &["period_kind", "period_start", "metric", "rank"],
    values: &["video_id", "value"],
};
pub(super) const VIDEO_TOTAL: Shape = Shape {
    key: &["period_kind", "period_start", "video_id"],
    values: &["total_amount"],
};
pub(super) const CREATOR_TOTAL: Shape = Shape {
    key: &["period_kind", "period_start", "creator_id"],
    values: &["total_amount"],
};

/// The periods a verification covers (the settled days asked for, and the
/// weeks and months they touch), each with its last day. Session-local, and
/// dropped with the transaction's rollback.
pub(super) const CREATE_SCOPE: &str = "SET LOCAL temp_buffers = '256MB'; \
     CREATE TEMP TABLE verify_periods (kind text NOT NULL, start date NOT NULL, last date NOT NULL, \
                                       PRIMARY KEY (kind, start)); \
     CREATE TEMP TABLE verify_bounds (cutoff timestamptz NOT NULL)";

pub(super) const INSERT_SCOPE: &str = "INSERT INTO pg_temp.verify_periods (kind, start, last) \
     SELECT * FROM unnest($1::text[], $2::date[], $3::date[])";

/// The last settled day inside the scope's periods: the recount needs the
/// log up to its end and no further (a day's rows depend only on earlier
/// plays).
pub(super) const LAST_SETTLED_IN_SCOPE: &str = "SELECT max(d.day) FROM public.settled_day d \
     JOIN pg_temp.verify_periods p ON d.day BETWEEN p.start AND p.last";

pub(super) const INSERT_CUTOFF: &str =
    "INSERT INTO pg_temp.verify_bounds (cutoff) VALUES ($1::timestamptz)";

/// sql/reference/settle.sql, rewritten to settle the log before the cutoff
/// into session-local tables `pg_temp.ref_*` instead of schema `reference`:
/// concurrent verifications, the bench and the tests do not meet, and
/// nothing is left behind. Each rewrite must apply, so a change to the
/// reference script that breaks one fails loudly instead of recounting
/// something else.
pub(super) fn reference_script() -> Result<String> {
    let mut sql = crate::tools::reference::SQL.to_string();
    let rewrites: [(&str, &str); 4] = [
        (
            "DROP SCHEMA IF EXISTS reference CASCADE;\nCREATE SCHEMA reference;\n",
            "",
        ),
        (
            "LEFT JOIN public.videos v ON v.video_id = l.video_id\n",
            "LEFT JOIN public.videos v ON v.video_id = l.video_id\n    \
             WHERE l.started_at < (SELECT cutoff FROM pg_temp.verify_bounds)\n",
        ),
        ("CREATE UNLOGGED TABLE reference.", "CREATE TEMP TABLE ref_"),
        ("reference.", "pg_temp.ref_"),
    ];
    for (from, to) in rewrites {
        if !sql.contains(from) {
            return Err(Error::Tool(format!(
                "sql/reference/settle.sql no longer contains {from:?}; settle verify cannot restrict it"
            )));
        }
        sql = sql.replace(from, to);
    }
    Ok(sql)
}

/// Expected video rows of the full recount: for every period in scope, the
/// sum of the reference's day rows over the period's settled days (a
/// published week that is half settled holds its settled days).
pub(super) const EXPECTED_VIDEO: &str = "CREATE TEMP TABLE verify_exp_video AS \
     SELECT p.kind AS period_kind, p.start AS period_start, r.video_id, \
            sum(r.views)::int8 AS views, sum(r.watch_seconds)::int8 AS watch_seconds, \
            sum(r.ad_views)::int8 AS ad_views, sum(r.video_amount)::int8 AS video_amount, \
            sum(r.ad_amount)::int8 AS ad_amount, sum(r.total_amount)::int8 AS total_amount \
     FROM pg_temp.verify_periods p \
     JOIN public.settled_day d ON d.day BETWEEN p.start AND p.last \
     JOIN pg_temp.ref_settlement_video r ON r.period_kind = 'day' AND r.period_start = d.day \
     GROUP BY 1, 2, 3; \
     ANALYZE pg_temp.verify_exp_video";

/// The creators of the video rows in `source`, as SQL.
pub(super) fn creators_of(source: &str) -> String {
    format!(
        "SELECT s.period_kind, s.period_start, v.uploader_id AS creator_id, \
                sum(s.views)::int8 AS views, sum(s.watch_seconds)::int8 AS watch_seconds, \
                sum(s.ad_views)::int8 AS ad_views, sum(s.video_amount)::int8 AS video_amount, \
                sum(s.ad_amount)::int8 AS ad_amount, sum(s.total_amount)::int8 AS total_amount \
         FROM ({source}) s JOIN public.videos v ON v.video_id = s.video_id \
         GROUP BY 1, 2, 3"
    )
}

/// SPEC §4 over the video rows in `source`: top 5 per period and metric,
/// descending, ties to the smaller video_id, values above 0 only.
pub(super) fn ranking_of(source: &str) -> String {
    format!(
        "SELECT period_kind, period_start, metric, rank::int2 AS rank, video_id, value FROM ( \
           SELECT s.period_kind, s.period_start, m.metric, s.video_id, m.value, \
                  row_number() OVER (PARTITION BY s.period_kind, s.period_start, m.metric \
                                     ORDER BY m.value DESC, s.video_id) AS rank \
           FROM ({source}) s \
           CROSS JOIN LATERAL (VALUES ('views', s.views), ('watch_seconds', s.watch_seconds)) AS m(metric, value) \
           WHERE m.value > 0) ranked \
         WHERE rank <= 5"
    )
}

/// The published rows of `table` in the scope's periods (`filter` narrows
/// the periods, e.g. to weeks and months).
pub(super) fn published(table: &str, filter: &str) -> String {
    format!(
        "SELECT s.* FROM public.{table} s \
         JOIN pg_temp.verify_periods p ON s.period_kind = p.kind AND s.period_start = p.start \
         WHERE {filter}"
    )
}

/// For the weeks and months in scope, the sums of the stored day rows of
/// `table` (keyed by `id`) that fall inside them.
pub(super) fn day_sums(table: &str, id: &str) -> String {
    format!(
        "SELECT p.kind AS period_kind, p.start AS period_start, s.{id}, \
                sum(s.views)::int8 AS views, sum(s.watch_seconds)::int8 AS watch_seconds, \
                sum(s.ad_views)::int8 AS ad_views, sum(s.video_amount)::int8 AS video_amount, \
                sum(s.ad_amount)::int8 AS ad_amount, sum(s.total_amount)::int8 AS total_amount \
         FROM pg_temp.verify_periods p \
         JOIN public.{table} s ON s.period_kind = 'day' AND s.period_start BETWEEN p.start AND p.last \
         WHERE p.kind <> 'day' \
         GROUP BY 1, 2, 3"
    )
}

/// What one comparison found.
pub(super) struct Found {
    pub counts: [i64; 4],
    /// (kind, key, published values, expected values)
    pub sample: Vec<(String, String, Option<String>, Option<String>)>,
}

fn as_text(alias: &str, cols: &[&str]) -> String {
    cols.iter()
        .map(|c| {
            let q = if alias.is_empty() {
                c.to_string()
            } else {
                format!("{alias}.{c}")
            };
            format!("'{c}=' || {q}::text")
        })
        .collect::<Vec<_>>()
        .join(" || ' ' || ")
}

/// Compares `published` with `expected` (both SQL relations with `shape`'s
/// columns) row for row on the key: matching, differing, missing (expected
/// only) and extra (published only), with up to `limit` of the others.
pub(super) async fn compare(
    tx: &Transaction<'_>,
    shape: &Shape,
    published: &str,
    expected: &str,
    limit: i64,
) -> Result<Found> {
    let key = shape.key.join(", ");
    let vals = shape.values.join(", ");
    let qualified = |a: &str| {
        shape
            .values
            .iter()
            .map(|c| format!("{a}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "CREATE TEMP TABLE verify_cmp AS \
         SELECT {key}, p.here AS p_here, e.here AS e_here, \
                ROW({pv}) IS NOT DISTINCT FROM ROW({ev}) AS same, \
                {pt} AS p_text, {et} AS e_text, {kt} AS k_text \
         FROM (SELECT {key}, {vals}, true AS here FROM ({published}) x) p \
         FULL JOIN (SELECT {key}, {vals}, true AS here FROM ({expected}) y) e USING ({key})",
        pv = qualified("p"),
        ev = qualified("e"),
        pt = as_text("p", shape.values),
        et = as_text("e", shape.values),
        kt = as_text("", shape.key),
    );
    tx.batch_execute(&sql).await.db("comparing rows")?;
    let c = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE p_here AND e_here AND same), \
                    count(*) FILTER (WHERE p_here AND e_here AND NOT same), \
                    count(*) FILTER (WHERE e_here AND p_here IS NULL), \
                    count(*) FILTER (WHERE p_here AND e_here IS NULL) \
             FROM pg_temp.verify_cmp",
            &[],
        )
        .await
        .db("counting compared rows")?;
    let counts = [c.get(0), c.get(1), c.get(2), c.get(3)];
    let rows = tx
        .query(
            &format!(
                "SELECT CASE WHEN p_here IS NULL THEN 'missing' WHEN e_here IS NULL THEN 'extra' \
                        ELSE 'differs' END, k_text, p_text, e_text \
                 FROM pg_temp.verify_cmp WHERE NOT (coalesce(p_here AND e_here AND same, false)) \
                 ORDER BY {key} LIMIT $1"
            ),
            &[&limit],
        )
        .await
        .db("sampling differences")?;
    tx.batch_execute("DROP TABLE pg_temp.verify_cmp")
        .await
        .db("dropping a comparison")?;
    Ok(Found {
        counts,
        sample: rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect(),
    })
}
