DROP TABLE checkout_keys;
DROP INDEX orders_open_updated_idx;
DROP INDEX orders_unsettled_idx;
ALTER TABLE orders DROP COLUMN settled;
ALTER TABLE stock_events DROP COLUMN change_id;
