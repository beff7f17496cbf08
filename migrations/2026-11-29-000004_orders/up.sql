-- Orders, their status history and the customers' notifications. Written in batches by the
-- order writer (one transaction per batch); every status change is guarded by the status it
-- leaves, so an order is never decided twice.
CREATE TABLE orders (
    order_id            UUID PRIMARY KEY,
    idempotency_key     TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    cart_id             UUID,
    origin              TEXT NOT NULL CHECK (origin IN ('http', 'queue')),
    status              TEXT NOT NULL CHECK (status IN ('received', 'reserved', 'scheduled', 'rejected', 'failed', 'cancelled')),
    items               JSONB NOT NULL,
    total_cents         BIGINT NOT NULL CHECK (total_cents >= 0),
    currency            TEXT NOT NULL,
    delivery_method     TEXT NOT NULL,
    shipping_address    JSONB NOT NULL,
    payment             JSONB NOT NULL,
    delivery            JSONB,
    rejection           JSONB,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_customer_idx ON orders (customer_id, created_at DESC);
CREATE INDEX orders_open_idx ON orders (status) WHERE status IN ('received', 'reserved');

-- The state machine never enters a status twice, so (order, status) is unique.
CREATE TABLE order_history (
    order_id UUID NOT NULL REFERENCES orders (order_id),
    status   TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, status)
);

CREATE TABLE notifications (
    id          UUID PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    order_id    UUID NOT NULL,
    message     TEXT NOT NULL,
    suggestions JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX notifications_customer_idx ON notifications (customer_id, created_at DESC);
