DROP TABLE notifications;
DROP TABLE order_history;
DROP TABLE orders;
