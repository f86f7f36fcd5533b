//! The queue-proxy.
