//! Running code inside another network namespace.
//!
//! AF_XDP sockets, XDP attachments and interface lookups act in the network namespace of the
//! calling *thread*. `setns(2)` switches only the calling thread, so code that needs another
//! namespace runs on a short-lived thread that switches first; what it creates (sockets,
//! attachments: file descriptors) can be returned and used from any thread afterwards.

use std::io;

use super::sys;

/// Runs `f` on a new thread inside the network namespace `netns`: a name under `/run/netns`
/// (as created by `ip netns add`) or a path such as `/proc/<pid>/ns/net`. Returns what `f`
/// returns; a panic in `f` is propagated to the caller.
pub fn run_in_netns<T, F>(netns: &str, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = if netns.contains('/') {
        netns.to_string()
    } else {
        format!("/run/netns/{netns}")
    };
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> io::Result<T> {
            sys::setns_net(&path)?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
