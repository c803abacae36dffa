-- `settle unsettle` takes back the newest settled days: their result rows
-- and ledger entries go in one transaction, and this row says when, which
-- days and from where, so the history shows why days are no longer settled.
CREATE TABLE unsettlement (
    unsettle_id   bigserial PRIMARY KEY,
    unsettled_at  timestamptz NOT NULL DEFAULT now(),
    from_day      date NOT NULL,
    to_day        date NOT NULL,
    days          bigint NOT NULL,       -- settled days removed
    rows_deleted  bigint NOT NULL,       -- result rows deleted
    host          text NOT NULL,
    pid           integer NOT NULL
);
