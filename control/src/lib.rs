//! Control protocol and desired state.
