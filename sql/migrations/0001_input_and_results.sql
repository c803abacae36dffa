-- Input tables and result tables exactly as in shared/SPEC.md (sections 1 and 5).

CREATE TABLE videos (
    video_id         bigint PRIMARY KEY,
    uploader_id      bigint NOT NULL,
    duration_seconds integer NOT NULL CHECK (duration_seconds > 0),
    title            text NOT NULL,
    created_at       timestamptz NOT NULL
);

CREATE TABLE viewing_log (
    id             bigint PRIMARY KEY,
    user_id        bigint NOT NULL,
    video_id       bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    start_position integer NOT NULL,
    end_position   integer NOT NULL
);

-- Date-range runs find their rows through this. BRIN because the log is
-- appended roughly in started_at order: a few kB instead of a 2 GB b-tree,
-- and it costs nothing on the bulk-load path.
CREATE INDEX viewing_log_started_at_brin ON viewing_log USING brin (started_at) WITH (pages_per_range = 32);

CREATE TABLE settlement_video (
    period_kind   text NOT NULL CHECK (period_kind IN ('day','week','month')),
    period_start  date NOT NULL,
    video_id      bigint NOT NULL,
    views         bigint NOT NULL,
    watch_seconds bigint NOT NULL,
    ad_views      bigint NOT NULL,
    video_amount  bigint NOT NULL,
    ad_amount     bigint NOT NULL,
    total_amount  bigint NOT NULL,
    PRIMARY KEY (period_kind, period_start, video_id)
);

CREATE TABLE settlement_creator (
    period_kind   text NOT NULL CHECK (period_kind IN ('day','week','month')),
    period_start  date NOT NULL,
    creator_id    bigint NOT NULL,
    views         bigint NOT NULL,
    watch_seconds bigint NOT NULL,
    ad_views      bigint NOT NULL,
    video_amount  bigint NOT NULL,
    ad_amount     bigint NOT NULL,
    total_amount  bigint NOT NULL,
    PRIMARY KEY (period_kind, period_start, creator_id)
);

CREATE TABLE top_videos (
    period_kind  text NOT NULL CHECK (period_kind IN ('day','week','month')),
    period_start date NOT NULL,
    metric       text NOT NULL CHECK (metric IN ('views','watch_seconds')),
    rank         smallint NOT NULL CHECK (rank BETWEEN 1 AND 5),
    video_id     bigint NOT NULL,
    value        bigint NOT NULL,
    PRIMARY KEY (period_kind, period_start, metric, rank)
);

-- The days whose rows in the result tables are current. Tiers carry forward,
-- so the engine needs to know which history it may build on.
CREATE TABLE settled_day (
    day           date PRIMARY KEY,
    execution_id  bigint,
    settled_at    timestamptz NOT NULL DEFAULT now()
);
