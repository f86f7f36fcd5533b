//! The shared proxy core.
