//! Portcullis benchmarks: criterion micro-benchmarks (in `benches/`), the bare Pingora proxy
//! used as a floor, and the end-to-end load harness.

pub mod harness;
