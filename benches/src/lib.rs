//! Shared helpers for the Portcullis benchmarks (the load harness lives beside them).
