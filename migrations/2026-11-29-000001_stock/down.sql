DROP TABLE stock_events;
DROP TABLE stock;
DROP TABLE products;
