//! Exporters: they read snapshots from the aggregator and never touch BPF maps.

pub mod api;
pub mod events;
pub mod otlp;
pub mod pprof;
pub mod prometheus;
