//! Benchmark command (being written).
fn main() {}
