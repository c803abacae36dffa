-- What a later run compares to notice plays written after a day was
-- settled: the rows (valid or not) that started in the day's last hours,
-- from tail_from to the next Seoul midnight, as the settling run saw them.
-- NULL when that run reused partitions of a failed one (no count kept).
ALTER TABLE settled_day
    ADD COLUMN tail_from timestamptz,
    ADD COLUMN tail_rows bigint;
