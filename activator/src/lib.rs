//! The activator (being written).
