//! Reads Go binaries.
