//! The operator's tools, part of the binary only: the load generator and the demo catalog.

pub mod demo;
pub mod loadgen;
pub mod openloop;
pub mod phases;
