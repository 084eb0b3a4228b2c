//! gobinary's integration tests, in one binary: they share the Go builds of `common`.

mod common;
mod releases;
mod robustness;
