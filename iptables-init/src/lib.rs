//! Skiff's `iptables-init`: programs a pod's iptables exactly as istio-iptables does.

pub mod app;
pub mod apply;
pub mod backend;
pub mod cli;
pub mod config;
pub mod host;
pub mod plan;
pub mod routes;
pub mod rules;
pub mod state;
pub mod validation;
