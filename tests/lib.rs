//! Cross-binary integration tests (see `integration/`).
