//! orderflow: an order-flow and inventory engine for online marketplaces.
//!
//! - [`domain`]: the pure core (ledger, products, validation).
//! - [`engine`]: one actix actor per SKU and the write-behind persister.
//! - [`persistence`]: Postgres through diesel and r2d2 (schema, migrations, the engine's store).
//! - [`messaging`]: the RabbitMQ connection.
//! - [`http`]: the actix-web API.
//! - [`startup`]: configuration and wiring of all of it.

pub mod active;
pub mod batch;
pub mod carts;
pub mod catalog;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod intake;
pub mod lease;
pub mod messaging;
pub mod orders;
pub mod persistence;
pub mod startup;
