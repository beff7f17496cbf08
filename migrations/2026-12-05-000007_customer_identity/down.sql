DROP TABLE server_secrets;
DROP INDEX checkout_keys_created_idx;
DROP INDEX checkout_keys_customer_key_idx;
ALTER TABLE checkout_keys DROP COLUMN customer_id;
