//! Shadower Hub's core: the pure domain, the actors that own live state, and storage.
//!
//! # Layout
//! - [`domain`]: ids, events, ingest parsing, quantile sketches, rolling windows, live state.
//!   Pure: no actix, no I/O, the clock is an argument.
//! - [`messages`]: every actor message.
//! - [`writer`]: group commit of ingest requests to PostgreSQL, answered after the commit.
//! - [`workspace`]: one actor per workspace holding its windows; [`registry`] finds or
//!   starts it on a dedicated arbiter.
//! - [`fanout`]: a workspace's WebSocket sessions, frames, coalescing and replay.
//! - [`store`]: pools, migrations, partitions, the idempotent batch insert, the rebuild.
//! - [`maintenance`]: partitions ahead and retention, on a timer.
//! - [`notifier`]: signed webhook deliveries with persisted retries.
//! - [`config`]: the settings sections this crate owns; [`metrics`]: the hub's metrics.

pub mod config;
pub mod domain;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod maintenance;
pub mod messages;
pub mod metrics;
pub mod notifier;
pub mod registry;
pub mod rollup;
pub mod store;
pub mod workspace;
pub mod writer;
