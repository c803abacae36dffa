-- The reference settlement: shared/SPEC.md in plain SQL, written to be read.
--
-- It is the oracle the engine is compared against (src/reference.rs) and a
-- benchmark case of its own, so it is set-based: one pass over the log
-- (a join and one window sort), then aggregates of aggregates.
--
-- It settles all time, from the earliest day in the data, into schema
-- `reference`, which it drops and rebuilds: running it twice gives the same
-- rows. Run it as one multi-statement query (one implicit transaction), so a
-- failure leaves the previous `reference` schema in place.
--
-- Every table here is derived and can be rebuilt at will, so all of them
-- are UNLOGGED: no WAL for ~100M play_outcome rows. A server crash empties
-- them; run the script again.
--
-- Calendar: a play belongs to the Seoul day of started_at, whatever the
-- session's TimeZone. SPEC §2 defines Seoul as UTC+9 with no daylight
-- saving, so the offset is fixed: the 'Asia/Seoul' zone of the time zone
-- database would move 1954-61 (+8:30) and the summers of 1987-88 (+10). Weeks start on Monday, months on the 1st; both are
-- computed from `date::timestamp` (no time zone) so the session's TimeZone
-- cannot shift them either.

DROP SCHEMA IF EXISTS reference CASCADE;
CREATE SCHEMA reference;

-- The result tables: the same columns, types and checks as the public ones,
-- so the two can be compared with EXCEPT. Their primary keys (the same as
-- public's) are added at the end, after the load.
CREATE UNLOGGED TABLE reference.settlement_video
    (LIKE public.settlement_video   INCLUDING ALL EXCLUDING INDEXES);
CREATE UNLOGGED TABLE reference.settlement_creator
    (LIKE public.settlement_creator INCLUDING ALL EXCLUDING INDEXES);
CREATE UNLOGGED TABLE reference.top_videos
    (LIKE public.top_videos         INCLUDING ALL EXCLUDING INDEXES);

-- What became of every viewing_log row. Its primary key too is added after
-- the load: building an index once is much cheaper than maintaining it per
-- row.
CREATE UNLOGGED TABLE reference.play_outcome (
    id      bigint NOT NULL,
    outcome text   NOT NULL CHECK (outcome IN
                ('counted', 'self_play', 'rapid_replay', 'unknown_video', 'bad_position'))
);

-- SPEC §3's price table. units_in counts the ordinals before+1 ..= before+n
-- that fall in the bracket first ..= last; tiered_tenths prices them with
-- the bracket prices p1..p4 (tenths of a won). Plain SQL functions, so the
-- planner inlines them into the query as integer arithmetic.
CREATE FUNCTION reference.units_in(before bigint, n bigint, first bigint, last bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(0, least(before + n, last) - greatest(before + 1, first) + 1)
$$;

CREATE FUNCTION reference.tiered_tenths(before bigint, n bigint,
                                        p1 bigint, p2 bigint, p3 bigint, p4 bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT p1 * reference.units_in(before, n,       1,  100000)
         + p2 * reference.units_in(before, n,  100001,  500000)
         + p3 * reference.units_in(before, n,  500001, 1000000)
         + p4 * reference.units_in(before, n, 1000001, 9223372036854775807)  -- "and above"
$$;

-- ---------------------------------------------------------------------------
-- Step 1: classify every row of the log, in one pass.
--
-- `reject` is the SPEC §2 validity check (unknown video first). The replay
-- rule compares a valid row with its immediate predecessor among the VALID
-- rows of the same (user, video) in (started_at, id) order: if any valid row
-- started less than 30 s before p, the immediate predecessor did too, so
-- lag() is exact. Putting `reject IS NULL` in the partition keeps invalid
-- rows out of the valid rows' look-back. The look-back ignores days, so it
-- crosses midnight, and the predecessor need not have counted. Self-play is
-- tested first: it is reported even when the row is also a rapid replay.
CREATE UNLOGGED TABLE reference.work_play AS
WITH checked AS (
    SELECT l.id, l.user_id, l.video_id, l.started_at,
           l.start_position, l.end_position, v.uploader_id,
           CASE
               WHEN v.video_id IS NULL THEN 'unknown_video'
               WHEN NOT (0 <= l.start_position
                         AND l.start_position <= l.end_position
                         AND l.end_position <= v.duration_seconds) THEN 'bad_position'
           END AS reject
    FROM public.viewing_log l
    LEFT JOIN public.videos v ON v.video_id = l.video_id
)
SELECT id,
       video_id,
       (started_at AT TIME ZONE INTERVAL '+09:00')::date AS day,
       start_position,
       end_position,
       CASE
           WHEN reject IS NOT NULL THEN reject
           WHEN user_id = uploader_id THEN 'self_play'
           WHEN started_at - lag(started_at) OVER same_viewer_valid < interval '30 seconds'
               THEN 'rapid_replay'
           ELSE 'counted'
       END AS outcome
FROM checked
WINDOW same_viewer_valid AS (PARTITION BY user_id, video_id, reject IS NULL
                             ORDER BY started_at, id);
ANALYZE reference.work_play;  -- fresh tables have no statistics; later plans need them

INSERT INTO reference.play_outcome (id, outcome)
SELECT id, outcome FROM reference.work_play;
ALTER TABLE reference.play_outcome ADD PRIMARY KEY (id);

-- ---------------------------------------------------------------------------
-- Step 2: counted plays per (video, Seoul day).
--
-- ad_views of one play = #{k >= 1 : start < 300k <= end}
--                      = floor(end / 300) - floor(start / 300)   for 0 <= start <= end;
-- integer division is floor division for the non-negative positions a
-- counted play has.
CREATE UNLOGGED TABLE reference.work_video_day AS
SELECT video_id,
       day,
       count(*)                                          AS views,
       sum(end_position - start_position)::bigint        AS watch_seconds,
       sum(end_position / 300 - start_position / 300)::bigint AS ad_views
FROM reference.work_play
WHERE outcome = 'counted'
GROUP BY video_id, day;
ANALYZE reference.work_video_day;

-- ---------------------------------------------------------------------------
-- Step 3: price each (video, day).
--
-- views_before (V) and ad_views_before are the video's counted totals on all
-- earlier days; the day's units are the ordinals before+1 ..= before+count.
-- Views cost 1.0 / 1.1 / 1.3 / 1.5 won, ad views 10 / 12 / 15 / 20 won by
-- bracket. Integer math throughout; amounts are floor(tenths / 10), and
-- bigint division of non-negative numbers is floor division.
INSERT INTO reference.settlement_video
    (period_kind, period_start, video_id, views, watch_seconds, ad_views,
     video_amount, ad_amount, total_amount)
WITH history AS (
    SELECT d.*,
           coalesce(sum(d.views)    OVER earlier_days, 0)::bigint AS views_before,
           coalesce(sum(d.ad_views) OVER earlier_days, 0)::bigint AS ad_views_before
    FROM reference.work_video_day d
    WINDOW earlier_days AS (PARTITION BY d.video_id ORDER BY d.day
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
amounts AS (
    SELECT h.*,
           reference.tiered_tenths(h.views_before, h.views, 10, 11, 13, 15) / 10
               AS video_amount,
           reference.tiered_tenths(h.ad_views_before, h.ad_views, 100, 120, 150, 200) / 10
               AS ad_amount
    FROM history h
)
SELECT 'day', day, video_id, views, watch_seconds, ad_views,
       video_amount, ad_amount, video_amount + ad_amount
FROM amounts;

-- ---------------------------------------------------------------------------
-- Step 4: weeks (Monday) and months (the 1st) per video: sums of the video's
-- day rows, amounts included (they are not re-priced per period).
INSERT INTO reference.settlement_video
    (period_kind, period_start, video_id, views, watch_seconds, ad_views,
     video_amount, ad_amount, total_amount)
SELECT p.kind, p.start, d.video_id,
       sum(d.views), sum(d.watch_seconds), sum(d.ad_views),
       sum(d.video_amount), sum(d.ad_amount), sum(d.total_amount)
FROM reference.settlement_video d
CROSS JOIN LATERAL (VALUES
    ('week',  date_trunc('week',  d.period_start::timestamp)::date),
    ('month', date_trunc('month', d.period_start::timestamp)::date)
) AS p(kind, start)
WHERE d.period_kind = 'day'
GROUP BY p.kind, p.start, d.video_id;

-- ---------------------------------------------------------------------------
-- Step 5: creators: for every period, the sum over the creator's videos.
-- (Summing the video rows of a week equals summing the creator's day rows.)
INSERT INTO reference.settlement_creator
    (period_kind, period_start, creator_id, views, watch_seconds, ad_views,
     video_amount, ad_amount, total_amount)
SELECT s.period_kind, s.period_start, v.uploader_id,
       sum(s.views), sum(s.watch_seconds), sum(s.ad_views),
       sum(s.video_amount), sum(s.ad_amount), sum(s.total_amount)
FROM reference.settlement_video s
JOIN public.videos v ON v.video_id = s.video_id
GROUP BY s.period_kind, s.period_start, v.uploader_id;

-- ---------------------------------------------------------------------------
-- Step 6: top 5 videos per period and metric: descending value, ties to the
-- smaller video_id, only values above 0.
INSERT INTO reference.top_videos (period_kind, period_start, metric, rank, video_id, value)
SELECT period_kind, period_start, metric, rank, video_id, value
FROM (
    SELECT s.period_kind, s.period_start, m.metric, s.video_id, m.value,
           row_number() OVER (PARTITION BY s.period_kind, s.period_start, m.metric
                              ORDER BY m.value DESC, s.video_id) AS rank
    FROM reference.settlement_video s
    CROSS JOIN LATERAL (VALUES
        ('views',         s.views),
        ('watch_seconds', s.watch_seconds)
    ) AS m(metric, value)
    WHERE m.value > 0
) ranked
WHERE rank <= 5;

-- The keys. A duplicate here would be a bug in this script, and fails it.
ALTER TABLE reference.settlement_video   ADD PRIMARY KEY (period_kind, period_start, video_id);
ALTER TABLE reference.settlement_creator ADD PRIMARY KEY (period_kind, period_start, creator_id);
ALTER TABLE reference.top_videos         ADD PRIMARY KEY (period_kind, period_start, metric, rank);

-- The work tables were only steps.
DROP TABLE reference.work_play;
DROP TABLE reference.work_video_day;
