//! XDP program loading.
