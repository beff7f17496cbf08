-- Reliability (issue 7).

-- Each stock change carries an id of its own, so a retried batch recognises its own earlier
-- commit (and not a different change that happens to have the same version).
ALTER TABLE stock_events ADD COLUMN change_id UUID;

-- An order that ended without its stock (rejected, failed, cancelled) while it may still hold
-- reservations is `settled = false` until every line is released; whoever finds it so (the
-- consumer, a cancel retry, the sweeper) finishes the releases. Decisions come first, releases
-- after, so a crash in between never changes the decision.
ALTER TABLE orders ADD COLUMN settled BOOLEAN NOT NULL DEFAULT true;
CREATE INDEX orders_unsettled_idx ON orders (updated_at) WHERE NOT settled;
CREATE INDEX orders_open_updated_idx ON orders (updated_at) WHERE status IN ('received', 'reserved');

-- Every idempotency key intake accepted, with the fingerprint of its request, written before the
-- checkout is published: the same key with another body is refused even across a restart or
-- after a publish that timed out.
CREATE TABLE checkout_keys (
    order_id        UUID PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO checkout_keys (order_id, idempotency_key, fingerprint, created_at)
SELECT order_id, idempotency_key, request_fingerprint, created_at FROM orders
ON CONFLICT DO NOTHING;
