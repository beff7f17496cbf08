-- Customer identity (issue 17).
--
-- Idempotency keys belong to a customer: the same key from two customers is two orders. The key
-- row holds the order id it was given (random for the storefront's checkouts), so ids no longer
-- come from the key; rows are pruned after a retention (a reuse after that is a new order).
ALTER TABLE checkout_keys ADD COLUMN customer_id TEXT NOT NULL DEFAULT '';
UPDATE checkout_keys k SET customer_id = o.customer_id FROM orders o WHERE o.order_id = k.order_id;
CREATE UNIQUE INDEX checkout_keys_customer_key_idx ON checkout_keys (customer_id, idempotency_key);
CREATE INDEX checkout_keys_created_idx ON checkout_keys (created_at);

-- Secrets the server keeps, made here once: `order_ids` keys the derivation of the ids of
-- checkouts that arrive from other systems without one (HMAC), so no client can compute an
-- order id. 32 bytes from gen_random_uuid() (PostgreSQL's strong random source).
CREATE TABLE server_secrets (
    name   TEXT PRIMARY KEY,
    secret BYTEA NOT NULL CHECK (length(secret) >= 16)
);
INSERT INTO server_secrets (name, secret)
VALUES ('order_ids', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
