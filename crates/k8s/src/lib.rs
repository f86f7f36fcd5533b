//! Kubernetes reflectors for the activator (being written).
