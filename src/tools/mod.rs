//! The operator's tools, part of the binary only: the load generator and the demo catalog.

pub mod args;
pub mod arrivals;
pub mod costs;
pub mod cpu;
pub mod demo;
pub mod demo_online;
pub mod driving;
pub mod expect;
pub mod loadgen;
pub mod open_report;
pub mod openloop;
pub mod phases;
pub mod probe;
pub mod queues;
pub mod work;
