//! The node side of the one binary (see docs/ARCHITECTURE.md).

pub mod config;
