//! The `shadower-hub` binary's wiring.
//!
//! # Layout
//! - [`settings`]: layered configuration. [`telemetry`]: logs and process limits.
//! - [`cli`]: the command line. [`startup`]: [`startup::Application`], the hub assembled.
//!
//! The domain, actors and storage live in `shadower-actors`; routes in `shadower-handlers`.

pub mod cli;
pub mod settings;
pub mod startup;
pub mod telemetry;
