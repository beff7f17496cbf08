-- Shopping carts. A cart is `open` until a checkout turns it into an order; then it is
-- `ordered` and names that order, and it cannot produce a second one.
CREATE TABLE carts (
    cart_id     UUID PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ordered')),
    order_id    UUID,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT carts_ordered_has_order CHECK ((status = 'ordered') = (order_id IS NOT NULL))
);

CREATE INDEX carts_customer_idx ON carts (customer_id);

CREATE TABLE cart_items (
    cart_id    UUID NOT NULL REFERENCES carts (cart_id) ON DELETE CASCADE,
    sku        TEXT NOT NULL REFERENCES products (sku),
    quantity   BIGINT NOT NULL CHECK (quantity >= 1),
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cart_id, sku)
);
