-- settle serve: schedules (with the scheduler's state), the fires it made,
-- and an audit log of every state-changing call to the server.

CREATE TABLE serve_schedule (
    schedule_id          bigserial PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    cron                 text NOT NULL,                 -- seconds optional (croner)
    timezone             text NOT NULL DEFAULT 'Asia/Seoul',
    day_offset           integer NOT NULL DEFAULT 1 CHECK (day_offset BETWEEN 0 AND 366), -- 1 = settle yesterday
    catch_up             text NOT NULL DEFAULT 'all' CHECK (catch_up IN ('all', 'latest')),
    paused               boolean NOT NULL DEFAULT false,
    paused_reason        text,
    max_failures         integer NOT NULL DEFAULT 3 CHECK (max_failures >= 1),
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- The last fire time handled (ran, or found already settled); missed
    -- fires after it are caught up. Starts at creation.
    last_fire_at         timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO serve_schedule (name, cron) VALUES ('nightly', '0 0 1 * * *');

CREATE TABLE serve_fire (
    fire_id      bigserial PRIMARY KEY,
    schedule_id  bigint NOT NULL REFERENCES serve_schedule ON DELETE CASCADE,
    fire_at      timestamptz NOT NULL,       -- the scheduled time
    day          date NOT NULL,              -- the day it settles
    outcome      text NOT NULL CHECK (outcome IN ('completed', 'already_completed', 'failed', 'locked')),
    execution_id bigint,
    error        text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX serve_fire_schedule ON serve_fire (schedule_id, fire_id);

CREATE TABLE serve_audit (
    audit_id   bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    token_name text NOT NULL,
    action     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    remote     text NOT NULL,
    status     integer NOT NULL
);
