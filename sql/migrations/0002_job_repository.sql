-- The job repository: what ran, with which parameters, how it ended, and what
-- each partition produced, so that a failed run restarts where it stopped.

CREATE TABLE job_instance (
    instance_id  bigserial PRIMARY KEY,
    job_name     text NOT NULL,
    params_key   text NOT NULL,          -- canonical identifying parameters, e.g. 'from=2024-07-01;to=2024-07-31'
    params       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_name, params_key)
);

CREATE TABLE job_execution (
    execution_id   bigserial PRIMARY KEY,
    instance_id    bigint NOT NULL REFERENCES job_instance,
    attempt        integer NOT NULL,
    status         text NOT NULL CHECK (status IN ('STARTING','RUNNING','COMPLETED','FAILED','STOPPED','ABANDONED')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    host           text NOT NULL,
    pid            integer NOT NULL,
    day_from       date,                 -- the effective range, once known
    day_to         date,
    partitions     integer,
    workers        integer,
    stop_requested boolean NOT NULL DEFAULT false,
    restarted_from bigint REFERENCES job_execution,
    rows_read      bigint NOT NULL DEFAULT 0,
    counted        bigint NOT NULL DEFAULT 0,
    excluded_self_play     bigint NOT NULL DEFAULT 0,
    excluded_rapid_replay  bigint NOT NULL DEFAULT 0,
    rejected_unknown_video bigint NOT NULL DEFAULT 0,
    rejected_bad_position  bigint NOT NULL DEFAULT 0,
    summary        jsonb,
    error          text
);
CREATE INDEX job_execution_instance ON job_execution (instance_id, execution_id);

CREATE TABLE partition_execution (
    execution_id  bigint NOT NULL REFERENCES job_execution ON DELETE CASCADE,
    partition_no  integer NOT NULL,
    id_lo         bigint NOT NULL,       -- inclusive
    id_hi         bigint NOT NULL,       -- exclusive
    status        text NOT NULL CHECK (status IN ('PENDING','RUNNING','COMPLETED','FAILED','STOPPED')),
    attempts      integer NOT NULL DEFAULT 0,
    rows_read     bigint NOT NULL DEFAULT 0,
    duration_ms   bigint,
    error         text,
    reused_from   bigint,                -- execution whose result this partition kept on restart
    result        bytea,                 -- the partition's aggregate, kept so a restart can skip it
    PRIMARY KEY (execution_id, partition_no)
);

CREATE TABLE rejected_play (
    execution_id   bigint NOT NULL REFERENCES job_execution ON DELETE CASCADE,
    viewing_log_id bigint NOT NULL,
    reason         text NOT NULL CHECK (reason IN ('unknown_video','bad_position')),
    user_id        bigint NOT NULL,
    video_id       bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    start_position integer NOT NULL,
    end_position   integer NOT NULL,
    PRIMARY KEY (execution_id, viewing_log_id)
);
