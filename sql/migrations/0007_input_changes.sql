-- Every change to settled input, recorded by the statement that makes it, so
-- that a run notices deleted, corrected and late plays, and videos whose
-- uploader or duration changed, without recounting the log. Statement-level
-- triggers with transition tables: one trigger call per statement, and one
-- row here per Seoul day (or video) the statement touched. A run treats
-- every row its snapshot sees as pending and deletes them when it publishes,
-- in the same transaction, having settled again from the earliest day they
-- touch. Changes made with triggers disabled, or directly on a partition of
-- viewing_log, are not seen here (settle verify still finds them).
CREATE TABLE input_change (
    change_id  bigserial PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    changed_at timestamptz NOT NULL DEFAULT now(),
    source     text NOT NULL CHECK (source IN ('viewing_log', 'videos')),
    op         text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    day        date,              -- viewing_log: the Seoul day of the plays; NULL for TRUNCATE
    video_id   bigint,            -- videos: the video added, removed or changed
    rows_in    bigint NOT NULL DEFAULT 0,  -- rows that arrived on the day (inserted, or an update's new version)
    rows_out   bigint NOT NULL DEFAULT 0   -- rows that left it (deleted, or an update's old version)
);

-- Inserts are recorded only for days up to the last settled one: a new
-- day's plays are the normal case and must cost no more than a trigger call.
CREATE FUNCTION settle_log_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO input_change (source, op, day, rows_in)
    SELECT 'viewing_log', 'INSERT', d, count(*)
    FROM (SELECT (started_at AT TIME ZONE 'Asia/Seoul')::date AS d FROM new_rows) n
    WHERE d <= (SELECT max(day) FROM settled_day)
    GROUP BY d;
    RETURN NULL;
END $$;

CREATE FUNCTION settle_log_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO input_change (source, op, day, rows_out)
    SELECT 'viewing_log', 'DELETE', (started_at AT TIME ZONE 'Asia/Seoul')::date, count(*)
    FROM old_rows GROUP BY 3;
    RETURN NULL;
END $$;

CREATE FUNCTION settle_log_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO input_change (source, op, day, rows_in, rows_out)
    SELECT 'viewing_log', 'UPDATE', d, sum(i), sum(o)
    FROM (SELECT (started_at AT TIME ZONE 'Asia/Seoul')::date AS d, 1 AS i, 0 AS o FROM new_rows
          UNION ALL
          SELECT (started_at AT TIME ZONE 'Asia/Seoul')::date, 0, 1 FROM old_rows) c
    GROUP BY d;
    RETURN NULL;
END $$;

CREATE FUNCTION settle_log_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO input_change (source, op) VALUES (TG_TABLE_NAME, 'TRUNCATE');
    RETURN NULL;
END $$;

-- Videos: only what the rules read (uploader, duration) and the set of ids,
-- and only once something is settled (a fresh load records nothing).
CREATE FUNCTION settle_videos_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM settled_day) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO input_change (source, op, video_id)
        SELECT 'videos', 'INSERT', video_id FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO input_change (source, op, video_id)
        SELECT 'videos', 'DELETE', video_id FROM old_rows;
    ELSE
        INSERT INTO input_change (source, op, video_id)
        SELECT DISTINCT 'videos', 'UPDATE', coalesce(o.video_id, n.video_id)
        FROM old_rows o FULL JOIN new_rows n ON n.video_id = o.video_id
        WHERE o.video_id IS NULL OR n.video_id IS NULL
           OR o.uploader_id <> n.uploader_id OR o.duration_seconds <> n.duration_seconds;
    END IF;
    RETURN NULL;
END $$;

-- Puts the triggers on viewing_log and videos where they are missing.
-- Idempotent; every run calls it first, because a full `settle datagen`
-- load recreates viewing_log, and with it drops its triggers.
CREATE FUNCTION settle_watch_input() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    t record;
    made integer := 0;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('viewing_log', 'settle_log_inserted', 'INSERT', 'REFERENCING NEW TABLE AS new_rows', 'settle_log_inserted'),
        ('viewing_log', 'settle_log_deleted', 'DELETE', 'REFERENCING OLD TABLE AS old_rows', 'settle_log_deleted'),
        ('viewing_log', 'settle_log_updated', 'UPDATE', 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows', 'settle_log_updated'),
        ('viewing_log', 'settle_log_truncated', 'TRUNCATE', '', 'settle_log_truncated'),
        ('videos', 'settle_videos_inserted', 'INSERT', 'REFERENCING NEW TABLE AS new_rows', 'settle_videos_changed'),
        ('videos', 'settle_videos_deleted', 'DELETE', 'REFERENCING OLD TABLE AS old_rows', 'settle_videos_changed'),
        ('videos', 'settle_videos_updated', 'UPDATE', 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows', 'settle_videos_changed'),
        ('videos', 'settle_videos_truncated', 'TRUNCATE', '', 'settle_log_truncated')
    ) AS x(tbl, name, event, refs, func)
    LOOP
        IF to_regclass(t.tbl) IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t.tbl) AND tgname = t.name) THEN
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %I %s FOR EACH STATEMENT EXECUTE FUNCTION %I()',
                           t.name, t.event, t.tbl, t.refs, t.func);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

SELECT settle_watch_input();
