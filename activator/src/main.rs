//! The activator binary.

fn main() {}
