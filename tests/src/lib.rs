//! Helpers for out-of-process tests.
