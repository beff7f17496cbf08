DROP INDEX stock_events_sku_ref_idx;
ALTER TABLE stock_events DROP COLUMN ref;
