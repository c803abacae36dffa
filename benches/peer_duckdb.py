"""Case (p) of `settle bench`: DuckDB doing the whole of SPEC.md through
postgres_scanner on the same cluster, results stored back into schema
`peer` of that database, so the bench can compare them row for row with
settle's.

It is sql/reference/settle.sql in DuckDB's dialect: the same steps, the same
rules. The log is read leaf by leaf as a UNION ALL, because postgres_scanner
parallelises by ctid ranges, which a partitioned parent does not have (on
the parent it loops over empty page ranges for ever).

Needs duckdb==1.4.4 and duckdb-ext-postgres (the extension ships in that
package, so nothing is downloaded at run time):

    python3 -m venv .venv-peer
    .venv-peer/bin/pip install duckdb==1.4.4 duckdb-ext-postgres

Usage: python peer_duckdb.py --dsn "host=... port=... dbname=... user=..."
       [--threads N]. Prints one JSON line with the step timings.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import duckdb


def extension_dir():
    """The duckdb-ext-postgres package's extension directory."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("duckdb-ext-postgres is not installed: pip install duckdb-ext-postgres")
    return os.path.join(list(spec.submodule_search_locations)[0], "extensions")


STEPS = [
    (
        "classify",
        """
CREATE TABLE work_play AS
WITH checked AS (
    SELECT l.id, l.user_id, l.video_id, l.started_at,
           l.start_position, l.end_position, v.uploader_id,
           CASE
               WHEN v.video_id IS NULL THEN 'unknown_video'
               WHEN NOT (0 <= l.start_position
                         AND l.start_position <= l.end_position
                         AND l.end_position <= v.duration_seconds) THEN 'bad_position'
           END AS reject
    FROM log l
    LEFT JOIN videos v ON v.video_id = l.video_id
)
SELECT id,
       video_id,
       -- Seoul is UTC+9 with no daylight saving (SPEC 2); TimeZone is UTC.
       CAST(CAST(started_at AS TIMESTAMP) + INTERVAL 9 HOUR AS DATE) AS day,
       start_position,
       end_position,
       CASE
           WHEN reject IS NOT NULL THEN reject
           WHEN user_id = uploader_id THEN 'self_play'
           WHEN started_at - lag(started_at) OVER same_viewer_valid < INTERVAL 30 SECOND
               THEN 'rapid_replay'
           ELSE 'counted'
       END AS outcome
FROM checked
WINDOW same_viewer_valid AS (PARTITION BY user_id, video_id, reject IS NULL
                             ORDER BY started_at, id)
""",
    ),
    (
        "video_day",
        """
CREATE TABLE work_video_day AS
SELECT video_id, day,
       count(*)::BIGINT AS views,
       sum(end_position - start_position)::BIGINT AS watch_seconds,
       sum(end_position // 300 - start_position // 300)::BIGINT AS ad_views
FROM work_play
WHERE outcome = 'counted'
GROUP BY video_id, day
""",
    ),
    (
        "price",
        """
CREATE TABLE settlement_video AS
WITH history AS (
    SELECT d.*,
           coalesce(sum(d.views) OVER earlier_days, 0)::BIGINT AS views_before,
           coalesce(sum(d.ad_views) OVER earlier_days, 0)::BIGINT AS ad_views_before
    FROM work_video_day d
    WINDOW earlier_days AS (PARTITION BY d.video_id ORDER BY d.day
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
amounts AS (
    SELECT h.*,
           tiered_tenths(h.views_before, h.views, 10, 11, 13, 15) // 10 AS video_amount,
           tiered_tenths(h.ad_views_before, h.ad_views, 100, 120, 150, 200) // 10 AS ad_amount
    FROM history h
)
SELECT 'day' AS period_kind, day AS period_start, video_id, views, watch_seconds, ad_views,
       video_amount, ad_amount, video_amount + ad_amount AS total_amount
FROM amounts
""",
    ),
    (
        "periods",
        """
INSERT INTO settlement_video
SELECT p.kind, p.start, d.video_id,
       sum(d.views), sum(d.watch_seconds), sum(d.ad_views),
       sum(d.video_amount), sum(d.ad_amount), sum(d.total_amount)
FROM settlement_video d,
     LATERAL (VALUES ('week', CAST(date_trunc('week', d.period_start) AS DATE)),
                     ('month', CAST(date_trunc('month', d.period_start) AS DATE))) AS p(kind, start)
WHERE d.period_kind = 'day'
GROUP BY p.kind, p.start, d.video_id
""",
    ),
    (
        "creators",
        """
CREATE TABLE settlement_creator AS
SELECT s.period_kind, s.period_start, v.uploader_id AS creator_id,
       sum(s.views)::BIGINT AS views, sum(s.watch_seconds)::BIGINT AS watch_seconds,
       sum(s.ad_views)::BIGINT AS ad_views, sum(s.video_amount)::BIGINT AS video_amount,
       sum(s.ad_amount)::BIGINT AS ad_amount, sum(s.total_amount)::BIGINT AS total_amount
FROM settlement_video s
JOIN videos v ON v.video_id = s.video_id
GROUP BY s.period_kind, s.period_start, v.uploader_id
""",
    ),
    (
        "top",
        """
CREATE TABLE top_videos AS
SELECT period_kind, period_start, metric, CAST(rank AS SMALLINT) AS rank, video_id, value
FROM (
    SELECT s.period_kind, s.period_start, m.metric, s.video_id, m.value,
           row_number() OVER (PARTITION BY s.period_kind, s.period_start, m.metric
                              ORDER BY m.value DESC, s.video_id) AS rank
    FROM settlement_video s,
         LATERAL (VALUES ('views', s.views), ('watch_seconds', s.watch_seconds)) AS m(metric, value)
    WHERE m.value > 0
) ranked
WHERE rank <= 5
""",
    ),
]

MACROS = """
CREATE MACRO units_in(before, n, first, last) AS
    greatest(0, least(before + n, last) - greatest(before + 1, first) + 1);
CREATE MACRO tiered_tenths(before, n, p1, p2, p3, p4) AS
      p1 * units_in(before, n, 1, 100000)
    + p2 * units_in(before, n, 100001, 500000)
    + p3 * units_in(before, n, 500001, 1000000)
    + p4 * units_in(before, n, 1000001, 9223372036854775807);
"""

STORE = {
    "settlement_video": "period_kind, period_start, video_id, views, watch_seconds, ad_views, "
    "video_amount, ad_amount, total_amount",
    "settlement_creator": "period_kind, period_start, creator_id, views, watch_seconds, ad_views, "
    "video_amount, ad_amount, total_amount",
    "top_videos": "period_kind, period_start, metric, rank, video_id, value",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="libpq connection string of the cluster")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    t0 = time.monotonic()
    steps = {}
    con = duckdb.connect(config={"extension_directory": extension_dir(),
                                 "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute(f"SET threads = {int(a.threads)}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("LOAD postgres")
    # ATTACH takes no parameters: the DSN goes in as a quoted literal.
    con.execute("ATTACH '" + a.dsn.replace("'", "''") + "' AS pg (TYPE postgres)")
    leaves = [r[0] for r in con.execute(
        "SELECT * FROM postgres_query('pg', 'SELECT relid::regclass::text FROM "
        "pg_partition_tree(''viewing_log'') WHERE isleaf ORDER BY 1')").fetchall()]
    for leaf in leaves:
        if not leaf.replace("_", "").isalnum():
            sys.exit(f"unexpected leaf name {leaf!r}")
    union = " UNION ALL ".join(
        f"SELECT id, user_id, video_id, started_at, start_position, end_position FROM pg.public.{t}"
        for t in leaves)
    con.execute(f"CREATE VIEW log AS {union}")
    con.execute("CREATE TABLE videos AS SELECT * FROM pg.public.videos")
    con.execute(MACROS)
    for name, sql in STEPS:
        t = time.monotonic()
        con.execute(sql)
        steps[name] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    con.execute("CALL postgres_execute('pg', 'DROP SCHEMA IF EXISTS peer CASCADE; CREATE SCHEMA peer; "
                "CREATE TABLE peer.settlement_video (LIKE public.settlement_video); "
                "CREATE TABLE peer.settlement_creator (LIKE public.settlement_creator); "
                "CREATE TABLE peer.top_videos (LIKE public.top_videos)')")
    # The scanner caches the catalogue: let it see the new schema.
    con.execute("CALL pg_clear_cache()")
    for table, cols in STORE.items():
        con.execute(f"INSERT INTO pg.peer.{table} ({cols}) SELECT {cols} FROM memory.main.{table}")
    steps["store"] = round(time.monotonic() - t, 3)
    rows = sum(con.execute(f"SELECT count(*) FROM memory.main.{t}").fetchone()[0] for t in STORE)
    print(json.dumps({"seconds": round(time.monotonic() - t0, 3), "steps": steps,
                      "rows": rows, "leaves": len(leaves), "threads": a.threads}))


if __name__ == "__main__":
    main()
