//! Black-box tests: the real hub on a random port, its own database, spoken to over HTTP.

mod alerts;
mod anomalies;
mod auth;
mod chaos;
mod faults;
mod forecast;
mod health;
mod helpers;
mod history;
mod ingest;
mod isolation;
mod live;
mod loadtest;
mod overview;
mod ratelimit;
mod rollups;
mod storage;
mod ws;
