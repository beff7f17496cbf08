//! orderflow: an order-flow and inventory engine for online marketplaces.
//!
//! - [`domain`]: the pure core — ledger, products, carts, checkout validation, the order model
//!   and its state machine, delivery scheduling, money, stored-text rules.
//! - [`engine`]: one actix actor per SKU, and the write-behind persister.
//! - [`batch`]: the batching writer the persister and the order writer share; [`blocking`]: the
//!   one way into blocking code.
//! - [`persistence`]: PostgreSQL through diesel and r2d2 (schema, migrations, error classes,
//!   the engine's store, products, carts, orders).
//! - [`catalog`]: the in-memory catalog and the suggestion engine.
//! - [`carts`], [`orders`]: the services — carts, and the checkout pipeline.
//! - [`messaging`]: RabbitMQ — the connection, topology, confirmed publishing, consumers, dead
//!   letters; [`consumers`]: the handlers behind the queues.
//! - [`monitor`]: the service watching itself — counters, admission, the snapshot shown.
//! - [`lease`], [`active`]: one active instance at a time, and what runs only on it.
//! - [`http`]: the actix-web API.
//! - [`config`], [`startup`]: configuration and the wiring of all of it.
//! - [`queues`], [`urls`]: the contract's queue and header names, and URLs fit for logs;
//!   [`sampler`]: reads the broker, the pool and the active parts into the monitor.
//!
//! The modules import each other without a cycle (`tests/structure.rs`; the layers are in
//! `docs/architecture.md`).

pub mod active;
pub mod auth;
pub mod batch;
pub mod blocking;
pub mod carts;
pub mod catalog;
pub mod config;
pub mod consumers;
pub mod domain;
pub mod engine;
pub mod http;
pub mod lease;
pub mod messaging;
pub mod monitor;
pub mod orders;
pub mod persistence;
pub mod queues;
pub mod sampler;
pub mod startup;
pub mod telemetry;
pub mod urls;
