//! The pure domain: ids, events, ingest parsing, quantile sketches, windows, live state,
//! anomaly detection and forecasts.
//! No actix, no I/O; time is passed in as an argument so tests drive a fake clock.

pub mod alert;
pub mod anomaly;
pub mod duration;
pub mod event;
pub mod forecast;
pub mod ids;
pub mod ingest;
pub mod live;
pub mod sketch;
pub mod subscription;
pub mod suggest;
pub mod text;
pub mod timeline;
pub mod trend;
pub mod users;
pub mod window;
