-- settle ingest: which files were loaded into viewing_log (exactly once: the
-- row is written in the same transaction as the file's plays), which were
-- refused for too many unparseable rows, and those rows.
CREATE TABLE ingest_file (
    file_id      bigserial PRIMARY KEY,
    name         text NOT NULL,
    size_bytes   bigint NOT NULL,
    sha256       text NOT NULL,
    format       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('loaded', 'refused')),
    rows_loaded  bigint NOT NULL,
    rejects      bigint NOT NULL,
    forced       boolean NOT NULL DEFAULT false,
    first_id     bigint,
    last_id      bigint,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_file_sha256 ON ingest_file (sha256);

CREATE TABLE ingest_reject (
    file_id     bigint NOT NULL REFERENCES ingest_file ON DELETE CASCADE,
    line        bigint NOT NULL,
    column_name text NOT NULL,
    reason      text NOT NULL,
    PRIMARY KEY (file_id, line)
);

-- Ids for files without an id column: a block per file, in file order.
CREATE SEQUENCE viewing_log_ingest_id;

-- settle retention: each partition of viewing_log that was retired, with the
-- range of its plays. The engine refuses runs that would read before
-- max(last_started_at).
CREATE TABLE log_retired (
    partition_name   text NOT NULL,
    id_from          bigint,
    id_to            bigint,
    rows_retired     bigint NOT NULL,
    first_started_at timestamptz,
    last_started_at  timestamptz NOT NULL,
    last_day         date NOT NULL,
    detached         boolean NOT NULL,
    retired_at       timestamptz NOT NULL DEFAULT now()
);
