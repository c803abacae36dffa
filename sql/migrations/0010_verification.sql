-- What `settle verify` found, kept beside the executions so that auditors
-- and the nightly job can see when the published results were last checked,
-- how, and with what outcome. One row per verification; never updated.
CREATE TABLE verification (
    verification_id bigserial PRIMARY KEY,
    mode           text NOT NULL CHECK (mode IN ('full','quick')),
    requested      text NOT NULL,          -- 'all', or 'from=YYYY-MM-DD;to=YYYY-MM-DD'
    day_from       date,                   -- the settled days compared (NULL: none)
    day_to         date,
    result         text NOT NULL CHECK (result IN ('match','differs','incomplete')),
    matching       bigint NOT NULL,
    differing      bigint NOT NULL,
    missing        bigint NOT NULL,
    extra          bigint NOT NULL,
    unsettled_days integer NOT NULL,       -- days asked for that were not settled
    checks         jsonb NOT NULL,         -- per table or identity: its four counts
    sample         jsonb NOT NULL,         -- a few differences, both values
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz NOT NULL DEFAULT now(),
    host           text NOT NULL,
    pid            integer NOT NULL
);
