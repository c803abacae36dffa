-- Remote partitioning: `settle run --remote` makes its partitions claimable,
-- and `settle worker` processes on any host claim them here (FOR UPDATE SKIP
-- LOCKED), read them in the execution's snapshot and store their results.
--
-- `remote` is what a worker needs to read for the execution (the exported
-- snapshot, the server it lives on, the rows in scope, the claim timeout);
-- it is set only once the partitions are recorded, and a partition is
-- claimable only while its execution is RUNNING with `remote` set.
-- `read_server`/`read_lsn`: where the run read the log, and for a hot
-- standby the WAL position it had replayed (plays committed on the primary
-- after it are not in this run; "rows added since" finds them).
ALTER TABLE job_execution
    ADD COLUMN remote jsonb,
    ADD COLUMN read_server text,
    ADD COLUMN read_lsn pg_lsn;

-- Who holds a partition: a worker's host and pid, and until when its claim
-- stands (claimed_at + the run's --partition-timeout). The claimant also
-- holds the session advisory lock (execution_id, claim key) for as long as
-- it lives, so a dead worker frees its partition at once.
ALTER TABLE partition_execution
    ADD COLUMN claimed_host text,
    ADD COLUMN claimed_pid integer,
    ADD COLUMN claimed_at timestamptz,
    ADD COLUMN lease_until timestamptz;

CREATE INDEX partition_execution_pending ON partition_execution (execution_id, partition_no)
    WHERE status = 'PENDING';

-- The rows each Seoul day holds in its last hours, as the partition read
-- them (the ledger's tail counts): a partition read by a worker reaches the
-- coordinator only through this table, and its encoded result does not
-- carry them.
ALTER TABLE partition_execution
    ADD COLUMN tail_days integer[],
    ADD COLUMN tail_rows bigint[];
