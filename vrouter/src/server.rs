//! The dataplane's control socket: a mio event loop on the control thread.
//!
//! Every connection is checked for peer credentials at accept (root, our uid, or the
//! configured group), must open with a hello, and is then served request by request.
//! Requests are handled in the loop itself (a transaction of a million routes blocks other
//! control connections for its duration, never the workers). Bad input follows the protocol's
//! rules ([`control::proto`]): a body that does not decode gets an error and the connection
//! stays; broken framing or an oversized length gets an error and the connection is closed.
//! Between events the loop services the dataplane: learned neighbors, aging.

use crate::dataplane::Dataplane;
use control::proto::{
    decode_body, encode, negotiate, ErrorCode, FrameDecoder, FrameError, Request, Response, Role,
    KIND_REQUEST, KIND_RESPONSE,
};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LISTENER: Token = Token(0);
/// Token of the waker used to stop the loop.
pub const WAKER: Token = Token(1);
const MAX_CONNECTIONS: usize = 32;
/// Bytes a client may leave unanswered in our output buffer before we stop reading it.
const MAX_PENDING_OUTPUT: usize = 512 << 20;

struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    output: Vec<u8>,
    hello: Option<Role>,
    closing: bool,
}

/// Runs the loop until `stop` is set (and the waker woken).
pub fn run(
    listener: std::os::unix::net::UnixListener,
    allowed_group: Option<nix::unistd::Gid>,
    dataplane: &mut Dataplane,
    mut poll: Poll,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = UnixListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut next_token = 2usize;
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            if let Err(e) =
                                control::socket::check_peer(stream.as_fd(), allowed_group)
                            {
                                tracing::warn!("control connection refused: {e}");
                                let _ = stream.write_all(&encode(
                                    KIND_RESPONSE,
                                    0,
                                    &Response::error(ErrorCode::Denied, e.to_string()),
                                ));
                                continue;
                            }
                            if connections.len() >= MAX_CONNECTIONS {
                                let _ = stream.write_all(&encode(
                                    KIND_RESPONSE,
                                    0,
                                    &Response::error(
                                        ErrorCode::Unavailable,
                                        "too many connections",
                                    ),
                                ));
                                continue;
                            }
                            let token = Token(next_token);
                            next_token += 1;
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            connections.insert(
                                token,
                                Connection {
                                    stream,
                                    decoder: FrameDecoder::default(),
                                    output: Vec::new(),
                                    hello: None,
                                    closing: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            break;
                        }
                    }
                },
                WAKER => {}
                token => {
                    let daemon_connected =
                        connections.values().any(|c| c.hello == Some(Role::Daemon));
                    let Some(connection) = connections.get_mut(&token) else {
                        continue;
                    };
                    let open = serve(connection, dataplane, daemon_connected);
                    if !open {
                        if let Some(mut connection) = connections.remove(&token) {
                            let _ = poll.registry().deregister(&mut connection.stream);
                        }
                    }
                }
            }
        }
        dataplane.service();
    }
    Ok(())
}

/// Reads, answers and writes what it can; false when the connection is finished.
fn serve(connection: &mut Connection, dataplane: &mut Dataplane, daemon_connected: bool) -> bool {
    let mut buffer = [0u8; 64 * 1024];
    let mut peer_closed = false;
    if connection.output.len() < MAX_PENDING_OUTPUT {
        loop {
            match connection.stream.read(&mut buffer) {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(n) => connection.decoder.push(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
    while !connection.closing {
        match connection.decoder.next_frame() {
            Ok(Some((header, body))) => {
                if header.kind != KIND_REQUEST {
                    respond(
                        connection,
                        header.id,
                        &Response::error(ErrorCode::Protocol, "expected a request frame"),
                    );
                    continue;
                }
                let response = match decode_body::<Request>(&body) {
                    Err(FrameError::BadBody(message)) => {
                        Response::error(ErrorCode::BadMessage, message)
                    }
                    Err(e) => Response::error(ErrorCode::BadMessage, e.to_string()),
                    Ok(request) => answer(connection, request, dataplane, daemon_connected),
                };
                respond(connection, header.id, &response);
            }
            Ok(None) => break,
            Err(e) => {
                // Framing is lost: say why and close once the reply is out.
                respond(
                    connection,
                    0,
                    &Response::error(ErrorCode::BadMessage, e.to_string()),
                );
                connection.closing = true;
            }
        }
    }
    while !connection.output.is_empty() {
        match connection.stream.write(&connection.output) {
            Ok(0) => return false,
            Ok(n) => {
                connection.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    let flushed = connection.output.is_empty();
    !(peer_closed || (connection.closing && flushed))
}

fn respond(connection: &mut Connection, id: u32, response: &Response) {
    connection
        .output
        .extend_from_slice(&encode(KIND_RESPONSE, id, response));
}

fn answer(
    connection: &mut Connection,
    request: Request,
    dataplane: &mut Dataplane,
    daemon_connected: bool,
) -> Response {
    match (&connection.hello, request) {
        (
            None,
            Request::Hello {
                min_version,
                max_version,
                role,
            },
        ) => match negotiate(min_version, max_version) {
            Ok(version) => {
                connection.hello = Some(role);
                if role == Role::Daemon {
                    tracing::info!("control daemon connected");
                }
                Response::Hello {
                    version,
                    server: format!("vrouter {}", env!("CARGO_PKG_VERSION")),
                }
            }
            Err(message) => {
                connection.closing = true;
                Response::error(ErrorCode::Protocol, message)
            }
        },
        (None, _) => Response::error(ErrorCode::Protocol, "the first request must be hello"),
        (Some(_), request) => dataplane.handle(request, daemon_connected),
    }
}

/// A waker to interrupt the loop from a signal thread.
pub fn waker(poll: &Poll) -> io::Result<Waker> {
    Waker::new(poll.registry(), WAKER)
}
