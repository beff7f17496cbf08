-- Catalog products, their stock ledgers, and the append-only log of every stock change.

CREATE TABLE products (
    sku         TEXT PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    tags        TEXT[] NOT NULL DEFAULT '{}',
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency    TEXT NOT NULL DEFAULT 'BRL' CHECK (currency ~ '^[A-Z]{3}$'),
    attributes  JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX products_category_idx ON products (category, sku);

-- The database refuses negative stock even when memory is wrong (DESIGN.md rule 3):
-- the write-behind persister writes deltas guarded by `version`, and these checks hold the line.
CREATE TABLE stock (
    sku        TEXT PRIMARY KEY REFERENCES products (sku),
    on_hand    BIGINT NOT NULL DEFAULT 0,
    reserved   BIGINT NOT NULL DEFAULT 0,
    version    BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stock_on_hand_non_negative CHECK (on_hand >= 0),
    CONSTRAINT stock_reserved_non_negative CHECK (reserved >= 0),
    CONSTRAINT stock_available_non_negative CHECK (on_hand >= reserved),
    CONSTRAINT stock_version_non_negative CHECK (version >= 0)
);

-- One row per accepted change, written in the same transaction as the stock row it moved.
CREATE TABLE stock_events (
    sku         TEXT NOT NULL,
    version     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    on_hand     BIGINT NOT NULL,
    reserved    BIGINT NOT NULL,
    reason      TEXT,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, version)
);
