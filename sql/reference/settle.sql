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
-- session's TimeZone. Weeks start on Monday, months on the 1st; both are
-- computed from `date::timestamp` (no time zone) so the session's TimeZone
-- cannot shift them either.

DROP SCHEMA IF EXISTS reference CASCADE;
CREATE SCHEMA reference;

-- The result tables: the same columns, types and keys as the public ones, so
-- the two can be compared with EXCEPT.
CREATE UNLOGGED TABLE reference.settlement_video   (LIKE public.settlement_video   INCLUDING ALL);
CREATE UNLOGGED TABLE reference.settlement_creator (LIKE public.settlement_creator INCLUDING ALL);
CREATE UNLOGGED TABLE reference.top_videos         (LIKE public.top_videos         INCLUDING ALL);

-- What became of every viewing_log row. The primary key is added after the
-- load (building an index once is much cheaper than maintaining it per row).
CREATE UNLOGGED TABLE reference.play_outcome (
    id      bigint NOT NULL,
    outcome text   NOT NULL CHECK (outcome IN
                ('counted', 'self_play', 'rapid_replay', 'unknown_video', 'bad_position'))
);

-- SPEC §3's price table, verbatim: ordinals first..last (inclusive) cost
-- view_tenths per view and ad_tenths per ad view, in tenths of a won.
CREATE UNLOGGED TABLE reference.price_tier (
    first_ordinal bigint NOT NULL,
    last_ordinal  bigint NOT NULL,
    view_tenths   bigint NOT NULL,
    ad_tenths     bigint NOT NULL
);
INSERT INTO reference.price_tier VALUES
    (      1,   100000, 10, 100),
    ( 100001,   500000, 11, 120),
    ( 500001,  1000000, 13, 150),
    (1000001, 9223372036854775807, 15, 200);   -- "and above": bigint's maximum

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
       (started_at AT TIME ZONE 'Asia/Seoul')::date AS day,
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

-- ---------------------------------------------------------------------------
-- Step 3: price each (video, day).
--
-- views_before (V) and ad_views_before are the video's counted totals on all
-- earlier days; the day's units are the ordinals before+1 ..= before+count.
-- A tier contributes its price times the number of those ordinals inside
-- [first_ordinal, last_ordinal]. Everything is exact integer/numeric math;
-- amounts are floor(tenths / 10).
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
priced AS (
    SELECT h.*,
           (SELECT sum(t.view_tenths
                       * greatest(0, least(h.views_before + h.views, t.last_ordinal)
                                     - greatest(h.views_before + 1, t.first_ordinal) + 1))
            FROM reference.price_tier t) AS view_tenths,
           (SELECT sum(t.ad_tenths
                       * greatest(0, least(h.ad_views_before + h.ad_views, t.last_ordinal)
                                     - greatest(h.ad_views_before + 1, t.first_ordinal) + 1))
            FROM reference.price_tier t) AS ad_tenths
    FROM history h
),
amounts AS (
    SELECT p.*,
           floor(p.view_tenths / 10)::bigint AS video_amount,
           floor(p.ad_tenths / 10)::bigint   AS ad_amount
    FROM priced p
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

-- The work tables were only steps; the results and price_tier remain.
DROP TABLE reference.work_play;
DROP TABLE reference.work_video_day;
