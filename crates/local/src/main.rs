//! The `kdp` command line.

fn main() {}
