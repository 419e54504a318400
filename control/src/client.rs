//! A blocking client of the control protocol, used by `vrouterctl` to talk to
//! `vrouter-control` and by the daemon to talk to the dataplane.
//!
//! One request at a time: [`Client::request`] writes a frame, then reads frames until the
//! response with the same id arrives. Ids start at 1 (the hello) and increase by one per
//! request (wrapping). Every read and write is bounded by a timeout ([`DEFAULT_TIMEOUT`],
//! changed with [`Client::set_timeout`]; a full sync of a million routes wants minutes).
//!
//! Design decisions:
//! - A response the client cannot decode (e.g. a newer server's message) is a protocol error
//!   but leaves the connection usable, because the frame was read whole.
//! - A timeout, a framing error or an I/O error may leave half a frame in the stream, so the
//!   connection is marked unusable: later requests fail with [`ClientError::Unusable`] without
//!   touching the socket, and the caller reconnects. Not fixed: a request that timed out may
//!   still have been applied by the server; the client cannot know.

use crate::proto::{
    self, ErrorCode, FrameError, Request, Response, Role, KIND_REQUEST, KIND_RESPONSE,
    PROTOCOL_MAX, PROTOCOL_MIN,
};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Read and write timeout of a new client.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (missing file, connection refused, ...).
    #[error("cannot connect to {}: {source} ({hint})", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
        /// What to check, e.g. "is vrouter-control running? see --socket".
        hint: &'static str,
    },
    /// The socket file or the server refused us.
    #[error("permission denied on {}: {reason} (run as root or as a member of the socket's group)", path.display())]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
        /// The system's or the server's reason.
        reason: String,
    },
    /// The peer does not speak the protocol as expected (bad frame, wrong id, no common
    /// version, unexpected answer to the hello).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer (or the request could not be written) within the timeout.
    #[error("no answer within {} s (the request may still be applied; raise the timeout for large changes)", .0.as_secs_f64())]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Other I/O failure on an established connection.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// An earlier timeout or framing error left the stream out of step; reconnect.
    #[error("connection unusable after an earlier error ({0}); reconnect")]
    Unusable(String),
}

impl ClientError {
    /// True when the server could not be reached at all (as opposed to a failed exchange).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::PermissionDenied { .. }
        )
    }
}

/// A connected session (hello done).
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    next_id: u32,
    timeout: Duration,
    version: u32,
    server: String,
    broken: Option<String>,
}

/// What to tell the user who cannot reach the server, by who is connecting.
fn connect_hint(role: Role) -> &'static str {
    match role {
        Role::Cli => "is vrouter-control running? see --socket",
        Role::Daemon => "is vrouter running? check its control socket path",
    }
}

impl Client {
    /// Connects to the Unix socket at `path` and opens a session as `role`, with
    /// [`DEFAULT_TIMEOUT`].
    pub fn connect(path: &Path, role: Role) -> Result<Client, ClientError> {
        Self::connect_with_timeout(path, role, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::connect`] with another timeout for the hello and later requests.
    pub fn connect_with_timeout(
        path: &Path,
        role: Role,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            } else {
                ClientError::Connect {
                    path: path.to_path_buf(),
                    source: e,
                    hint: connect_hint(role),
                }
            }
        })?;
        let mut client = Client {
            stream,
            path: path.to_path_buf(),
            next_id: 1,
            timeout,
            version: 0,
            server: String::new(),
            broken: None,
        };
        client.apply_timeout().map_err(ClientError::Io)?;
        let hello = Request::Hello {
            min_version: PROTOCOL_MIN,
            max_version: PROTOCOL_MAX,
            role,
        };
        match client.request(&hello)? {
            Response::Hello { version, server } => {
                if !(PROTOCOL_MIN..=PROTOCOL_MAX).contains(&version) {
                    return Err(ClientError::Protocol(format!(
                        "server {server} chose protocol version {version}, this build speaks {PROTOCOL_MIN}-{PROTOCOL_MAX}"
                    )));
                }
                client.version = version;
                client.server = server;
                Ok(client)
            }
            Response::Error {
                code: ErrorCode::Denied,
                message,
            } => Err(ClientError::PermissionDenied {
                path: path.to_path_buf(),
                reason: message,
            }),
            Response::Error { code, message } => Err(ClientError::Protocol(format!(
                "hello refused ({}): {message}",
                error_code_name(code)
            ))),
            other => Err(ClientError::Protocol(format!(
                "expected a hello response, got {}",
                response_name(&other)
            ))),
        }
    }

    /// Sends `request` and waits for its response. An `Error` response is a successful
    /// exchange and is returned as `Ok`; the caller decides what it means.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        if let Some(reason) = &self.broken {
            return Err(ClientError::Unusable(reason.clone()));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let result = self.exchange(id, request);
        match &result {
            // A body not understood was read whole: the stream is still in step.
            Err(ClientError::Protocol(_)) if self.broken.is_none() => {}
            Err(e) => self.mark_broken(e),
            Ok(_) => {}
        }
        result
    }

    fn exchange(&mut self, id: u32, request: &Request) -> Result<Response, ClientError> {
        if let Err(e) = proto::write_frame(&mut self.stream, KIND_REQUEST, id, request) {
            let error = self.io_error(e);
            if matches!(error, ClientError::Closed) {
                // A server that refuses a connection (peer check) says why, then closes:
                // its reason may be waiting in our receive buffer.
                if let Ok((_, body)) = proto::read_frame(&mut self.stream) {
                    if let Ok(Response::Error { code, message }) = proto::decode_body(&body) {
                        return Err(self.session_error(code, message));
                    }
                }
            }
            return Err(error);
        }
        let (header, body) = proto::read_frame(&mut self.stream).map_err(|e| match e {
            FrameError::Io(e) => self.io_error(e),
            FrameError::Closed => ClientError::Closed,
            other => {
                self.broken = Some(other.to_string());
                ClientError::Protocol(other.to_string())
            }
        })?;
        if header.kind != KIND_RESPONSE {
            self.broken = Some("request frame received".into());
            return Err(ClientError::Protocol(format!(
                "expected a response frame, got kind {}",
                header.kind
            )));
        }
        if header.id != id {
            self.broken = Some("response id mismatch".into());
            // Servers answer connection-level failures (refused peer, bad frame) with an
            // error carrying id 0 and close: report the server's reason.
            if let Ok(Response::Error { code, message }) = proto::decode_body(&body) {
                return Err(self.session_error(code, message));
            }
            return Err(ClientError::Protocol(format!(
                "response id {} does not match request id {id}",
                header.id
            )));
        }
        proto::decode_body::<Response>(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A connection-level error sent by the server.
    fn session_error(&self, code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::Denied => ClientError::PermissionDenied {
                path: self.path.clone(),
                reason: message,
            },
            code => ClientError::Protocol(format!(
                "the server ended the session: {message} ({})",
                error_code_name(code)
            )),
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout(self.timeout)
            }
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Io(e),
        }
    }

    fn mark_broken(&mut self, error: &ClientError) {
        if self.broken.is_none() {
            self.broken = Some(error.to_string());
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn apply_timeout(&self) -> io::Result<()> {
        // A zero duration is refused by the socket API: treat it as "no timeout".
        let timeout = (!self.timeout.is_zero()).then_some(self.timeout);
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    /// Changes the read and write timeout of later requests (zero: wait forever).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.timeout = timeout;
        self.apply_timeout().map_err(ClientError::Io)
    }

    /// The current timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The protocol version agreed in the hello.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The server's identity from its hello.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id the next request will carry.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// False once a timeout or framing error made the connection unusable.
    pub fn is_usable(&self) -> bool {
        self.broken.is_none()
    }
}

/// Stable name of an error code, as in the protocol's JSON.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::Protocol => "protocol",
        ErrorCode::Rejected => "rejected",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Denied => "denied",
        ErrorCode::Internal => "internal",
    }
}

/// Name of a response variant, for error messages.
pub fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Hello { .. } => "hello",
        Response::Ok { .. } => "ok",
        Response::Error { .. } => "error",
        Response::Config { .. } => "config",
        Response::Ports { .. } => "ports",
        Response::Routes { .. } => "routes",
        Response::Neighbors { .. } => "neighbors",
        Response::Stats { .. } => "stats",
        Response::Drops { .. } => "drops",
        Response::Vxlans { .. } => "vxlans",
        Response::Flows { .. } => "flows",
        Response::Connections { .. } => "connections",
        Response::Flushed { .. } => "flushed",
        Response::Status { .. } => "status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{read_frame, write_frame};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    fn temp_socket(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "vrouterctl-client-{tag}-{}-{n}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Serves one connection with `handler(id, request) -> Option<(id, response)>`; `None`
    /// stops answering (the connection stays open until the client goes).
    fn serve_one<F>(path: &Path, mut handler: F) -> thread::JoinHandle<Vec<(u32, Request)>>
    where
        F: FnMut(u32, &Request) -> Option<(u32, Response)> + Send + 'static,
    {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            while let Ok((header, body)) = read_frame(&mut stream) {
                let request: Request = proto::decode_body(&body).unwrap();
                seen.push((header.id, request.clone()));
                match handler(header.id, &request) {
                    Some((id, response)) => {
                        write_frame(&mut stream, KIND_RESPONSE, id, &response).unwrap()
                    }
                    None => {
                        // Hold the connection without answering until the client closes.
                        let _ = read_frame(&mut stream);
                        break;
                    }
                }
            }
            seen
        })
    }

    fn hello_ok(id: u32, request: &Request) -> Option<(u32, Response)> {
        match request {
            Request::Hello { .. } => Some((
                id,
                Response::Hello {
                    version: 1,
                    server: "fake".into(),
                },
            )),
            _ => Some((
                id,
                Response::Ok {
                    generation: id as u64,
                },
            )),
        }
    }

    #[test]
    fn hello_then_increasing_ids() {
        let path = temp_socket("ids");
        let server = serve_one(&path, hello_ok);
        let mut client = Client::connect(&path, Role::Daemon).unwrap();
        assert_eq!(client.server(), "fake");
        assert_eq!(client.version(), 1);
        assert_eq!(client.next_id(), 2);
        assert_eq!(
            client.request(&Request::Status).unwrap(),
            Response::Ok { generation: 2 }
        );
        assert_eq!(
            client.request(&Request::Ports).unwrap(),
            Response::Ok { generation: 3 }
        );
        drop(client);
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(matches!(
            seen[0],
            (
                1,
                Request::Hello {
                    min_version: PROTOCOL_MIN,
                    max_version: PROTOCOL_MAX,
                    role: Role::Daemon
                }
            )
        ));
        assert_eq!(seen[1], (2, Request::Status));
        assert_eq!(seen[2], (3, Request::Ports));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn mismatched_id_is_a_protocol_error_and_breaks_the_connection() {
        let path = temp_socket("mismatch");
        let server = serve_one(&path, |id, request| match request {
            Request::Hello { .. } => hello_ok(id, request),
            _ => Some((id + 7, Response::Ok { generation: 0 })),
        });
        let mut client = Client::connect(&path, Role::Cli).unwrap();
        let err = client.request(&Request::Status).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(ref m) if m.contains("does not match")));
        assert!(!client.is_usable());
        assert!(matches!(
            client.request(&Request::Status),
            Err(ClientError::Unusable(_))
        ));
        drop(client);
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refused_hello_and_denied_hello() {
        let path = temp_socket("refused");
        let server = serve_one(&path, |id, _| {
            Some((
                id,
                Response::error(ErrorCode::Protocol, "no common protocol version"),
            ))
        });
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        assert!(
            matches!(err, ClientError::Protocol(ref m) if m.contains("no common protocol version")),
            "{err}"
        );
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);

        let path = temp_socket("denied");
        let server = serve_one(&path, |id, _| {
            Some((
                id,
                Response::error(ErrorCode::Denied, "uid 1000 not allowed"),
            ))
        });
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        assert!(matches!(err, ClientError::PermissionDenied { .. }), "{err}");
        assert!(err.is_connect_failure());
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refused_peer_with_id_0_is_permission_denied() {
        let path = temp_socket("peer");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // As vrouter-control does when the peer check fails: say why, close.
            write_frame(
                &mut stream,
                KIND_RESPONSE,
                0,
                &Response::error(
                    ErrorCode::Denied,
                    "uid 1000 is not root nor in group vrouter",
                ),
            )
            .unwrap();
        });
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, ClientError::PermissionDenied { ref reason, .. } if reason.contains("uid 1000")),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);

        let path = temp_socket("badframe");
        let server = serve_one(&path, |_, _| {
            Some((0, Response::error(ErrorCode::BadMessage, "bad magic")))
        });
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        assert!(
            matches!(err, ClientError::Protocol(ref m) if m.contains("ended the session: bad magic (bad_message)")),
            "{err}"
        );
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn timeout_is_reported_and_breaks_the_connection() {
        let path = temp_socket("timeout");
        let server = serve_one(&path, |id, request| match request {
            Request::Hello { .. } => hello_ok(id, request),
            _ => None,
        });
        let mut client = Client::connect(&path, Role::Cli).unwrap();
        client.set_timeout(Duration::from_millis(100)).unwrap();
        let err = client.request(&Request::Stats).unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert!(matches!(
            client.request(&Request::Stats),
            Err(ClientError::Unusable(_))
        ));
        drop(client);
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn missing_socket_names_the_path_and_the_hint() {
        let path = temp_socket("missing");
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        assert!(err.is_connect_failure());
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("is vrouter-control running? see --socket"),
            "{text}"
        );
    }

    #[test]
    fn server_closing_is_closed() {
        let path = temp_socket("closed");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = read_frame(&mut stream);
        });
        let err = Client::connect(&path, Role::Cli).unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err}");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
