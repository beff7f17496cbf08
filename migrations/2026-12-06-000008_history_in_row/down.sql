CREATE TABLE order_history (
    order_id UUID NOT NULL REFERENCES orders (order_id),
    status   TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, status)
);
INSERT INTO order_history (order_id, status, at)
SELECT o.order_id, s->>'status', (s->>'at')::timestamptz
FROM orders o, jsonb_array_elements(o.history) AS s
ON CONFLICT DO NOTHING;
ALTER TABLE orders DROP COLUMN history;
