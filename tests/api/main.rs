//! Integration tests: one binary, one module per area. Every test gets its own database on the
//! machine's real PostgreSQL (dropped afterwards) and talks to the real RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod batches;
mod bulkheads;
mod card_data;
mod carts;
mod catalog;
mod checkout;
mod client;
mod cluster;
mod contract;
mod crash;
mod engine_pg;
mod faults;
mod ha;
mod helpers;
mod hostile;
mod http_api;
mod identity;
mod inventory_queue;
mod load;
mod monitor;
mod one_write;
mod overload;
mod probe;
mod regressions;
mod roles;
mod traces;
