//! Time-weighted request statistics and the `Stat` protobuf messages.
