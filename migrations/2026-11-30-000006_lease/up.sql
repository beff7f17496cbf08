-- One active instance at a time (issue 11): a lease row. Taking it bumps the epoch; the holder
-- renews it before it expires (by the database's clock, so instances' clocks never matter);
-- every batch the active instance commits checks, in its own transaction and holding a share
-- lock on this row, that its holder and epoch are still current (fencing). A takeover's UPDATE
-- waits for those transactions, and none of the old epoch commits after it.
CREATE TABLE leader_lease (
    id         INT PRIMARY KEY CHECK (id = 1),
    holder     UUID,
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    taken_at   TIMESTAMPTZ
);
INSERT INTO leader_lease (id) VALUES (1);
