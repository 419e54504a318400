//! Longest-prefix-match tables.
