-- Issue 19: an order's history lives in its own row, `[{"status", "at"}, …]` in the order the
-- steps happened. A status change is one row version (no history rows beside it, no index
-- entries for them): the order row is the one durable record of the order.
ALTER TABLE orders ADD COLUMN history JSONB NOT NULL DEFAULT '[]'::jsonb;
UPDATE orders o SET history = h.steps
FROM (SELECT order_id,
             jsonb_agg(jsonb_build_object('status', status, 'at', at) ORDER BY at, status) AS steps
      FROM order_history GROUP BY order_id) h
WHERE h.order_id = o.order_id;
DROP TABLE order_history;
