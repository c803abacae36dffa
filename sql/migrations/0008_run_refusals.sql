-- Runs refused before they read anything (a gap in the settled history, the
-- lock held, days outside the log, nothing to settle) are not executions:
-- they are kept here, so `settle history --all` and the console show them
-- without counting them as failures.
CREATE TABLE run_refusal (
    refusal_id  bigserial PRIMARY KEY,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    params_key  text NOT NULL,          -- what was asked, as job_instance.params_key
    kind        text NOT NULL,          -- the refusal's kind, e.g. 'gap', 'locked', 'nothing_to_settle'
    reason      text NOT NULL,          -- the refusal in words
    detail      jsonb,                  -- its facts
    host        text NOT NULL,
    pid         integer NOT NULL
);
CREATE INDEX run_refusal_at ON run_refusal (refused_at DESC);

-- Refusals that earlier versions recorded as FAILED executions (nothing
-- read, the error a refusal's words) become refusals.
CREATE TEMP TABLE refused_execution ON COMMIT DROP AS
SELECT e.execution_id, e.started_at, i.params_key, e.error, e.host, e.pid,
       CASE WHEN e.error LIKE '%is after --to%' THEN 'backwards'
            WHEN e.error LIKE '%are not settled yet%' THEN 'gap'
            WHEN e.error LIKE '%is not settled, and tiers count%' THEN 'hole'
            ELSE 'unsettled_before' END AS kind
FROM job_execution e JOIN job_instance i USING (instance_id)
WHERE e.status = 'FAILED' AND e.rows_read = 0
  AND NOT EXISTS (SELECT 1 FROM partition_execution p
                  WHERE p.execution_id = e.execution_id AND p.status = 'COMPLETED')
  AND (e.error LIKE '%is after --to%'
       OR e.error LIKE '%are not settled yet%'
       OR e.error LIKE '%is not settled, and tiers count%'
       OR e.error LIKE '%that are not settled, and tiers count a video''s whole history%');

INSERT INTO run_refusal (refused_at, params_key, kind, reason, host, pid)
SELECT started_at, params_key, kind, error, host, pid FROM refused_execution;

UPDATE job_execution SET restarted_from = NULL
WHERE restarted_from IN (SELECT execution_id FROM refused_execution);
DELETE FROM job_execution WHERE execution_id IN (SELECT execution_id FROM refused_execution);
