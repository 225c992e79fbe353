//! Skiff's sidecar proxy: Envoy-compatible configuration, transparent interception, and the data
//! path for TCP (and, later, HTTP) traffic.

pub mod addr;
pub mod admin;
pub mod app;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod flags;
pub mod http;
pub mod listener;
pub mod refusals;
pub mod snapshot;
pub mod tcp;
pub mod tls;
pub mod xds;
