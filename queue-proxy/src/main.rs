//! The queue-proxy binary.

fn main() {}
