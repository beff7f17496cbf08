-- Issue 19: one index of open orders, not two. The sweeper looks for orders still `received` or
-- `reserved` and untouched since a time, oldest first: `orders_open_updated_idx` (updated_at,
-- same predicate) answers that; `orders_open_idx` (status) answered nothing else and cost an index
-- entry for every order written.
DROP INDEX orders_open_idx;
