-- What a later run compares to notice rows that changed after an execution
-- read the log: the highest id its snapshot saw, and the snapshot itself
-- (pg_snapshot as text): a row whose xmin that snapshot could not see was
-- inserted or updated after the execution read it. NULL for executions
-- recorded before this migration.
ALTER TABLE job_execution
    ADD COLUMN snapshot_max_id bigint,
    ADD COLUMN snapshot text;
