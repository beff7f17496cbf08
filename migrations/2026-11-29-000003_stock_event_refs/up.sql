-- The message (or request) that caused a stock change, so a redelivered message is recognised
-- and not applied twice: the reference is written in the same transaction as the change.
ALTER TABLE stock_events ADD COLUMN ref TEXT;
CREATE UNIQUE INDEX stock_events_sku_ref_idx ON stock_events (sku, ref) WHERE ref IS NOT NULL;
