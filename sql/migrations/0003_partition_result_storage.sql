-- A partition's kept result is 10-20 MB of bincode at 100M rows. pglz spent
-- about a fifth of the server's CPU compressing them during a run, competing
-- with the COPY readers; stored uncompressed, they cost a little WAL instead.
ALTER TABLE partition_execution ALTER COLUMN result SET STORAGE EXTERNAL;
