//! Unix socket setup and peer checks, shared by every server in the workspace (the control
//! daemon's CLI socket and the dataplane's control socket).
//!
//! The socket is not a door: [`bind_listener`] creates it with mode 0600 (0660 and the given
//! group when one is configured), and every accepted connection goes through [`check_peer`],
//! which reads the peer's credentials from the kernel (`SO_PEERCRED`) and admits root, the
//! server's own user, and members of the configured group only.
//!
//! Design decisions and limitations:
//! - A path that exists and is not a socket is never removed: a typo in `--listen` must not
//!   delete a file. A socket that refuses connections is stale (its server died) and is
//!   replaced; one that accepts connections belongs to a running server and is left alone
//!   (the second server refuses to start).
//! - Between `bind` and `chmod` the socket briefly has the mode the umask gives it; changing
//!   the process-wide umask would race with other threads, and [`check_peer`] refuses
//!   unauthorised peers anyway.
//! - Group membership is the peer's primary group at connect time, or the peer user's
//!   membership in the group database (`getgrouplist`), the same sources `login` uses.
//!   Supplementary groups set by a process at run time outside the database are not seen.

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Mode of a socket without a group.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode of a socket shared with a group.
pub const GROUP_SOCKET_MODE: u32 = 0o660;
/// Mode of a parent directory created for a socket.
pub const DIRECTORY_MODE: u32 = 0o755;

/// Who is on the other end of a Unix stream, as the kernel recorded it at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Why a peer was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The credentials could not be read.
    #[error("cannot read peer credentials: {0}")]
    Credentials(#[from] nix::Error),
    /// The peer is not root, not this server's user and not in the allowed group.
    #[error("permission denied for uid {uid} (gid {gid}, pid {pid})")]
    Denied {
        /// User id.
        uid: u32,
        /// Primary group id.
        gid: u32,
        /// Process id.
        pid: i32,
    },
}

/// Resolves a group name to its id (`NotFound` if the group does not exist).
pub fn group_id(name: &str) -> io::Result<Gid> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such group {name:?}"),
        )),
        Err(e) => Err(io::Error::other(format!(
            "cannot look up group {name:?}: {e}"
        ))),
    }
}

/// Creates a listening socket at `path`.
///
/// Creates the parent directory (mode 0755) if missing; refuses to remove a path that is not a
/// socket; removes a stale socket (one that refuses connections) but fails with `AddrInUse` if
/// a server is listening there; binds; sets mode 0600, or 0660 with the socket's group set to
/// `group` when one is given.
pub fn bind_listener(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    let gid = group.map(group_id).transpose()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIRECTORY_MODE)
                .create(parent)
                .map_err(|e| annotate(e, "cannot create directory", parent))?;
        }
    }
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(|e| annotate(e, "cannot bind", path))?;
    let secure = || -> io::Result<()> {
        let mode = match gid {
            Some(gid) => {
                nix::unistd::chown(path, None, Some(gid))
                    .map_err(|e| annotate(e.into(), "cannot change the group of", path))?;
                GROUP_SOCKET_MODE
            }
            None => SOCKET_MODE,
        };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| annotate(e, "cannot set the mode of", path))
    };
    if let Err(e) = secure() {
        drop(listener);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Removes `path` if it is a socket nobody listens on; leaves a missing path alone.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, "cannot inspect", path)),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process is listening on {}; refusing to start",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(annotate(e, "cannot remove stale socket", path)),
            }
        }
        Err(e) => Err(annotate(e, "cannot probe existing socket", path)),
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Reads the peer's credentials (`SO_PEERCRED`) and admits uid 0, this process's effective
/// uid, or a member of `allowed_group` (primary group, or member in the group database).
pub fn check_peer(
    fd: BorrowedFd<'_>,
    allowed_group: Option<Gid>,
) -> Result<PeerCredentials, PeerError> {
    let raw = getsockopt(&fd, sockopt::PeerCredentials)?;
    let credentials = PeerCredentials {
        pid: raw.pid(),
        uid: raw.uid(),
        gid: raw.gid(),
    };
    if is_allowed(&credentials, Uid::effective(), allowed_group) {
        Ok(credentials)
    } else {
        Err(PeerError::Denied {
            uid: credentials.uid,
            gid: credentials.gid,
            pid: credentials.pid,
        })
    }
}

/// The admission rule of [`check_peer`], on given credentials.
pub fn is_allowed(credentials: &PeerCredentials, own_uid: Uid, allowed_group: Option<Gid>) -> bool {
    if credentials.uid == 0 || credentials.uid == own_uid.as_raw() {
        return true;
    }
    let Some(group) = allowed_group else {
        return false;
    };
    credentials.gid == group.as_raw() || user_in_group(Uid::from_raw(credentials.uid), group)
}

/// True if the user's group list in the group database includes `group`.
fn user_in_group(uid: Uid, group: Gid) -> bool {
    let Ok(Some(user)) = User::from_uid(uid) else {
        return false;
    };
    if user.gid == group {
        return true;
    }
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "vr-socket-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_the_directory_and_a_private_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("run/vrouter/test.sock");
        let listener = bind_listener(&path, None).unwrap();
        assert_eq!(mode(path.parent().unwrap()), DIRECTORY_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
        let _client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        let peer = check_peer(server.as_fd(), None).unwrap();
        assert_eq!(peer.uid, Uid::effective().as_raw());
        assert_eq!(peer.pid, std::process::id() as i32);
    }

    #[test]
    fn group_socket_is_0660_with_the_group() {
        let dir = TempDir::new();
        let path = dir.0.join("group.sock");
        let gid = Gid::effective();
        let name = Group::from_gid(gid).unwrap().unwrap().name;
        let _listener = bind_listener(&path, Some(&name)).unwrap();
        assert_eq!(mode(&path), GROUP_SOCKET_MODE);
        assert_eq!(fs::metadata(&path).unwrap().gid(), gid.as_raw());
    }

    #[test]
    fn unknown_group_is_refused_before_binding() {
        let dir = TempDir::new();
        let path = dir.0.join("nogroup.sock");
        let err = bind_listener(&path, Some("no-such-group-vrouter-test")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_to_remove_a_regular_file() {
        let dir = TempDir::new();
        let path = dir.0.join("precious.txt");
        fs::write(&path, b"keep me").unwrap();
        let err = bind_listener(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn replaces_a_stale_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind_listener(&path, None).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn refuses_to_start_over_a_live_server() {
        let dir = TempDir::new();
        let path = dir.0.join("live.sock");
        let first = bind_listener(&path, None).unwrap();
        let err = bind_listener(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // The first server still works.
        let _client = UnixStream::connect(&path).unwrap();
        first.accept().unwrap();
    }

    #[test]
    fn admission_rule() {
        let me = Uid::from_raw(1000);
        let peer = |uid, gid| PeerCredentials { pid: 1, uid, gid };
        assert!(is_allowed(&peer(0, 0), me, None));
        assert!(is_allowed(&peer(1000, 1000), me, None));
        // An unknown user (not in the passwd database) in no allowed group.
        assert!(!is_allowed(&peer(4_000_123, 4_000_123), me, None));
        assert!(!is_allowed(
            &peer(4_000_123, 4_000_123),
            me,
            Some(Gid::from_raw(4_000_999))
        ));
        // Primary group matches.
        assert!(is_allowed(
            &peer(4_000_123, 4_000_999),
            me,
            Some(Gid::from_raw(4_000_999))
        ));
    }

    #[test]
    fn socketpair_peer_is_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = check_peer(a.as_fd(), Some(Gid::from_raw(4_000_999))).unwrap();
        assert_eq!(peer.uid, Uid::effective().as_raw());
    }
}
