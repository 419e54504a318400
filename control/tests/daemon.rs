//! The control daemon in-process, on temporary sockets and directories, against a fake
//! dataplane (a thread speaking the protocol and recording what it was sent), plus the
//! `vrouter-control` binary for exit codes and signals.

use control::client::Client;
use control::config::{Cidr, Config, PortConfig, RouteConfig};
use control::daemon::{Daemon, DaemonConfig, DaemonHandle, STATE_FILE};
use control::proto::{
    self, Change, ErrorCode, Header, Request, Response, Role, Status, HEADER_LEN, KIND_REQUEST,
    KIND_RESPONSE, MAX_BODY,
};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "vrc-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// A dataplane stand-in: answers hello, accepts or rejects `Sync`/`Apply`, answers `Status`
/// and `Ports`, and records every request.
struct FakeDataplane {
    path: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    reject: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDataplane {
    fn start(path: &Path) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reject: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let generation = Arc::new(AtomicU64::new(0));
        let thread = {
            let (requests, reject, stop, streams) = (
                requests.clone(),
                reject.clone(),
                stop.clone(),
                streams.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    stream.set_nonblocking(false).unwrap();
                    streams.lock().unwrap().push(stream.try_clone().unwrap());
                    let (requests, reject, generation) =
                        (requests.clone(), reject.clone(), generation.clone());
                    thread::spawn(move || serve_fake(stream, requests, reject, generation));
                }
            })
        };
        FakeDataplane {
            path: path.to_path_buf(),
            requests,
            reject,
            stop,
            streams,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn syncs(&self) -> Vec<Config> {
        self.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Sync { config } => Some(config),
                _ => None,
            })
            .collect()
    }

    fn applies(&self) -> Vec<Vec<Change>> {
        self.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Apply { changes } => Some(changes),
                _ => None,
            })
            .collect()
    }

    fn set_reject(&self, message: Option<&str>) {
        *self.reject.lock().unwrap() = message.map(String::from);
    }

    /// Closes the listener and every connection, like a dataplane that exits.
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for FakeDataplane {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve_fake(
    mut stream: UnixStream,
    requests: Arc<Mutex<Vec<Request>>>,
    reject: Arc<Mutex<Option<String>>>,
    generation: Arc<AtomicU64>,
) {
    while let Ok((header, body)) = proto::read_frame(&mut stream) {
        let Ok(request) = proto::decode_body::<Request>(&body) else {
            return;
        };
        requests.lock().unwrap().push(request.clone());
        let response = match request {
            Request::Hello { .. } => Response::Hello {
                version: 1,
                server: "fake-vrouter".into(),
            },
            Request::Sync { .. } | Request::Apply { .. } => match reject.lock().unwrap().clone() {
                Some(message) => Response::error(ErrorCode::Rejected, message),
                None => Response::Ok {
                    generation: generation.fetch_add(1, Ordering::Relaxed) + 1,
                },
            },
            Request::Status => Response::Status {
                status: Status {
                    server: "fake-vrouter".into(),
                    peer_connected: true,
                    in_sync: true,
                    last_error: None,
                    generation: Some(generation.load(Ordering::Relaxed)),
                },
            },
            Request::Ports => Response::Ports { ports: vec![] },
            _ => Response::error(ErrorCode::Internal, "not faked"),
        };
        if proto::write_frame(&mut stream, KIND_RESPONSE, header.id, &response).is_err() {
            return;
        }
    }
}

fn daemon_config(dir: &TempDir) -> DaemonConfig {
    DaemonConfig {
        vrouter_socket: dir.join("vrouter.sock"),
        listen: dir.join("run/control.sock"),
        state_dir: dir.join("state"),
        config_file: None,
        socket_group: None,
        reconnect_interval: Duration::from_millis(50),
        resync_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(100),
        sync_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        client_idle_timeout: Duration::from_secs(30),
        max_clients: 64,
    }
}

fn cli(daemon: &DaemonHandle) -> Client {
    Client::connect(daemon.listen_path(), Role::Cli).unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn port(name: &str, address: &str) -> PortConfig {
    PortConfig {
        name: name.into(),
        vrf: 0,
        addresses: vec![cidr(address)],
        mtu: None,
        mac: None,
    }
}

fn route_via(prefix: &str, via: &str) -> RouteConfig {
    RouteConfig {
        prefix: prefix.parse().unwrap(),
        vrf: 0,
        via: Some(via.parse().unwrap()),
        dev: None,
        blackhole: false,
        unreachable: false,
        nexthops: vec![],
        vxlan: None,
        remote: None,
        mac: None,
    }
}

fn show_config(client: &mut Client) -> Config {
    match client.request(&Request::ShowConfig).unwrap() {
        Response::Config { config } => config,
        other => panic!("expected a config, got {other:?}"),
    }
}

fn status(client: &mut Client) -> Status {
    match client.request(&Request::Status).unwrap() {
        Response::Status { status } => status,
        other => panic!("expected a status, got {other:?}"),
    }
}

fn persisted(dir: &TempDir) -> Option<Config> {
    let text = fs::read_to_string(dir.join("state").join(STATE_FILE)).ok()?;
    Some(Config::parse(&text).unwrap())
}

const BASE: &str = r#"
[[port]]
name = "pod1"
addresses = ["10.0.1.1/24"]

[[port]]
name = "pod2"
addresses = ["10.0.2.1/24"]
"#;

#[test]
fn change_is_forwarded_persisted_and_survives_a_restart() {
    let dir = TempDir::new("restart");
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    assert_eq!(fake.syncs(), vec![Config::default()]);

    let mut client = cli(&daemon);
    let change = Change::AddPort(port("pod1", "10.0.1.1/24").into());
    let response = client
        .request(&Request::Apply {
            changes: vec![change.clone()],
        })
        .unwrap();
    assert!(
        matches!(response, Response::Ok { generation } if generation > 0),
        "{response:?}"
    );
    assert_eq!(fake.applies(), vec![vec![change]]);
    let mut expected = Config::default();
    expected.ports.push(port("pod1", "10.0.1.1/24"));
    assert_eq!(show_config(&mut client), expected);
    assert_eq!(persisted(&dir), Some(expected.clone()));
    let st = status(&mut client);
    assert!(st.peer_connected && st.in_sync, "{st:?}");
    assert_eq!(st.generation, Some(2));
    drop(client);
    daemon.shutdown();
    assert!(!dir.join("run/control.sock").exists());

    // A new daemon on the same state directory pushes the same state.
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    assert!(wait_until(|| fake.syncs().len() == 2));
    assert_eq!(fake.syncs()[1], expected);
    let mut client = cli(&daemon);
    assert_eq!(show_config(&mut client), expected);
    assert!(wait_until(|| daemon.daemon().status().in_sync));
}

#[test]
fn rejection_by_the_dataplane_changes_nothing() {
    let dir = TempDir::new("reject");
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    let mut config = daemon_config(&dir);
    let file = dir.join("vrouter.toml");
    fs::write(&file, BASE).unwrap();
    config.config_file = Some(file);
    let daemon = Daemon::start(config).unwrap();
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    let before = daemon.daemon().desired();
    assert_eq!(before.ports.len(), 2);

    fake.set_reject(Some("interface pod3 does not exist"));
    let mut client = cli(&daemon);
    let response = client
        .request(&Request::Apply {
            changes: vec![Change::AddPort(port("pod3", "10.0.3.1/24").into())],
        })
        .unwrap();
    assert_eq!(
        response,
        Response::error(ErrorCode::Rejected, "interface pod3 does not exist")
    );
    assert_eq!(fake.applies().len(), 1);
    assert_eq!(show_config(&mut client), before);
    assert_eq!(persisted(&dir), None, "nothing accepted, nothing written");
    // Still in sync: a refused change does not break the link.
    assert!(status(&mut client).in_sync);

    // A change the daemon itself refuses never reaches the dataplane.
    fake.set_reject(None);
    let response = client
        .request(&Request::Apply {
            changes: vec![Change::AddRoute(
                route_via("10.9.0.0/16", "192.0.2.1").into(),
            )],
        })
        .unwrap();
    assert!(
        matches!(response, Response::Error { code: ErrorCode::Rejected, ref message } if message.contains("192.0.2.1")),
        "{response:?}"
    );
    let response = client
        .request(&Request::Apply {
            changes: vec![Change::DelPort {
                name: "nope".into(),
            }],
        })
        .unwrap();
    assert!(matches!(
        response,
        Response::Error {
            code: ErrorCode::Rejected,
            ..
        }
    ));
    assert_eq!(fake.applies().len(), 1);
    assert_eq!(show_config(&mut client), before);

    // A whole-state sync (apply -f) that does not validate is refused before forwarding.
    let mut bad = before.clone();
    bad.routes.push(route_via("10.9.0.0/16", "192.0.2.1"));
    let response = client.request(&Request::Sync { config: bad }).unwrap();
    assert!(matches!(
        response,
        Response::Error {
            code: ErrorCode::Rejected,
            ..
        }
    ));
    assert_eq!(fake.syncs().len(), 1);
    assert_eq!(show_config(&mut client), before);
}

#[test]
fn sync_from_the_cli_replaces_the_state() {
    let dir = TempDir::new("apply-f");
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    let mut client = cli(&daemon);
    let mut wanted = Config::parse(BASE).unwrap();
    wanted.routes.push(route_via("10.9.0.0/16", "10.0.2.7"));
    let response = client
        .request(&Request::Sync {
            config: wanted.clone(),
        })
        .unwrap();
    assert!(matches!(response, Response::Ok { generation } if generation > 0));
    assert_eq!(fake.syncs().last(), Some(&wanted));
    assert_eq!(show_config(&mut client), wanted);
    assert_eq!(persisted(&dir), Some(wanted));
}

#[test]
fn dataplane_down_change_is_persisted_then_pushed() {
    let dir = TempDir::new("down");
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    let mut client = cli(&daemon);
    assert!(wait_until(|| status(&mut client).last_error.is_some()));
    let st = status(&mut client);
    assert!(!st.peer_connected && !st.in_sync, "{st:?}");
    assert!(
        st.last_error.as_deref().unwrap().contains("not reachable"),
        "{st:?}"
    );

    let response = client
        .request(&Request::Apply {
            changes: vec![Change::AddPort(port("pod1", "10.0.1.1/24").into())],
        })
        .unwrap();
    assert_eq!(response, Response::Ok { generation: 0 });
    let expected = daemon.daemon().desired();
    assert_eq!(expected.ports.len(), 1);
    assert_eq!(persisted(&dir), Some(expected.clone()));
    assert_eq!(
        client.request(&Request::Ports).unwrap(),
        Response::error(ErrorCode::Unavailable, "vrouter not connected")
    );

    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    assert!(wait_until(|| !fake.syncs().is_empty()));
    assert_eq!(fake.syncs(), vec![expected.clone()]);
    assert!(wait_until(|| status(&mut client).in_sync));
    let st = status(&mut client);
    assert_eq!(st.last_error, None);
    assert_eq!(
        client.request(&Request::Ports).unwrap(),
        Response::Ports { ports: vec![] }
    );

    // The dataplane restarts: the daemon notices and pushes the state again.
    fake.stop();
    assert!(wait_until(|| !daemon.daemon().status().peer_connected));
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    assert!(wait_until(|| fake.syncs().len() == 1));
    assert_eq!(fake.syncs(), vec![expected]);
}

#[test]
fn rejected_sync_is_retried_until_accepted() {
    let dir = TempDir::new("retry");
    let file = dir.join("vrouter.toml");
    fs::write(&file, BASE).unwrap();
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    fake.set_reject(Some("interface pod2 does not exist"));
    let mut config = daemon_config(&dir);
    config.config_file = Some(file);
    let daemon = Daemon::start(config).unwrap();
    assert!(wait_until(|| fake.syncs().len() >= 2), "retried");
    let st = daemon.daemon().status();
    assert!(st.peer_connected && !st.in_sync, "{st:?}");
    assert_eq!(
        st.last_error.as_deref(),
        Some("interface pod2 does not exist")
    );

    // Out of sync: changes are kept and pushed by the next sync.
    let mut client = cli(&daemon);
    let response = client
        .request(&Request::Apply {
            changes: vec![Change::AddRoute(
                route_via("10.9.0.0/16", "10.0.1.2").into(),
            )],
        })
        .unwrap();
    assert_eq!(response, Response::Ok { generation: 0 });
    assert!(fake.applies().is_empty());

    fake.set_reject(None);
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    assert_eq!(fake.syncs().last(), Some(&daemon.daemon().desired()));
    assert_eq!(daemon.daemon().desired().routes.len(), 1);
}

/// Opens a raw connection to the CLI socket.
fn raw(daemon: &DaemonHandle) -> UnixStream {
    let stream = UnixStream::connect(daemon.listen_path()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Reads one response frame, or `None` if the server closed the connection.
fn read_response(stream: &mut UnixStream) -> Option<(Header, Response)> {
    let (header, body) = proto::read_frame(stream).ok()?;
    assert_eq!(header.kind, KIND_RESPONSE);
    Some((header, proto::decode_body(&body).unwrap()))
}

fn assert_closed(stream: &mut UnixStream) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

fn expect_error(stream: &mut UnixStream, code: ErrorCode) -> String {
    match read_response(stream) {
        Some((_, Response::Error { code: c, message })) if c == code => message,
        other => panic!("expected a {code:?} error, got {other:?}"),
    }
}

fn hello(stream: &mut UnixStream) {
    let hello = Request::Hello {
        min_version: 1,
        max_version: 1,
        role: Role::Cli,
    };
    proto::write_frame(stream, KIND_REQUEST, 1, &hello).unwrap();
    assert!(matches!(
        read_response(stream),
        Some((_, Response::Hello { version: 1, .. }))
    ));
}

#[test]
fn bad_input_on_the_cli_socket_is_answered_and_changes_nothing() {
    let dir = TempDir::new("garbage");
    let file = dir.join("vrouter.toml");
    fs::write(&file, BASE).unwrap();
    let mut config = daemon_config(&dir);
    config.config_file = Some(file);
    let daemon = Daemon::start(config).unwrap();
    let before = daemon.daemon().desired();

    // Garbage: not our magic.
    let mut s = raw(&daemon);
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let message = expect_error(&mut s, ErrorCode::BadMessage);
    assert!(message.contains("magic"), "{message}");
    assert_closed(&mut s);

    // A length header above the limit.
    let mut s = raw(&daemon);
    let mut frame = proto::encode(KIND_REQUEST, 1, &Request::Status);
    frame[12..16].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
    s.write_all(&frame[..HEADER_LEN]).unwrap();
    let message = expect_error(&mut s, ErrorCode::BadMessage);
    assert!(message.contains("exceeds"), "{message}");
    assert_closed(&mut s);

    // A framing version we do not speak.
    let mut s = raw(&daemon);
    let mut frame = proto::encode(KIND_REQUEST, 1, &Request::Status);
    frame[4..6].copy_from_slice(&9u16.to_be_bytes());
    s.write_all(&frame).unwrap();
    expect_error(&mut s, ErrorCode::Protocol);
    assert_closed(&mut s);

    // A request before the hello.
    let mut s = raw(&daemon);
    let changes = vec![Change::DelPort {
        name: "pod1".into(),
    }];
    proto::write_frame(&mut s, KIND_REQUEST, 1, &Request::Apply { changes }).unwrap();
    let message = expect_error(&mut s, ErrorCode::Protocol);
    assert!(message.contains("hello"), "{message}");
    assert_closed(&mut s);

    // After the hello: an unknown message type, a body that is not JSON and a response
    // frame are answered and the session goes on; a second hello is a protocol error.
    let mut s = raw(&daemon);
    hello(&mut s);
    let unknown = serde_json::json!({"type": "reboot"});
    proto::write_frame(&mut s, KIND_REQUEST, 2, &unknown).unwrap();
    let (header, response) = read_response(&mut s).unwrap();
    assert_eq!(header.id, 2);
    assert!(matches!(
        response,
        Response::Error {
            code: ErrorCode::BadMessage,
            ..
        }
    ));
    let mut frame = proto::encode(KIND_REQUEST, 3, &Request::Status);
    frame.truncate(HEADER_LEN);
    frame[12..16].copy_from_slice(&4u32.to_be_bytes());
    frame.extend_from_slice(b"\xff\x00{]");
    s.write_all(&frame).unwrap();
    expect_error(&mut s, ErrorCode::BadMessage);
    proto::write_frame(&mut s, KIND_RESPONSE, 4, &Response::Ok { generation: 1 }).unwrap();
    expect_error(&mut s, ErrorCode::BadMessage);
    let again = Request::Hello {
        min_version: 1,
        max_version: 1,
        role: Role::Cli,
    };
    proto::write_frame(&mut s, KIND_REQUEST, 5, &again).unwrap();
    expect_error(&mut s, ErrorCode::Protocol);
    proto::write_frame(&mut s, KIND_REQUEST, 6, &Request::ShowConfig).unwrap();
    let (header, response) = read_response(&mut s).unwrap();
    assert_eq!(header.id, 6);
    assert_eq!(
        response,
        Response::Config {
            config: before.clone()
        }
    );
    drop(s);

    // No common protocol version.
    let mut s = raw(&daemon);
    let future = Request::Hello {
        min_version: 7,
        max_version: 9,
        role: Role::Cli,
    };
    proto::write_frame(&mut s, KIND_REQUEST, 1, &future).unwrap();
    expect_error(&mut s, ErrorCode::Protocol);
    assert_closed(&mut s);

    // Half a frame, then the client goes away.
    let mut s = raw(&daemon);
    s.write_all(&proto::encode(KIND_REQUEST, 1, &Request::Status)[..10])
        .unwrap();
    drop(s);

    // The daemon still serves the next client, with the state untouched.
    let mut client = cli(&daemon);
    assert_eq!(show_config(&mut client), before);
    assert_eq!(persisted(&dir), None);
}

#[test]
fn concurrent_clients_are_serialised() {
    let dir = TempDir::new("concurrent");
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    let file = dir.join("vrouter.toml");
    fs::write(&file, BASE).unwrap();
    let mut config = daemon_config(&dir);
    config.config_file = Some(file);
    let daemon = Daemon::start(config).unwrap();
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    let path = daemon.listen_path().to_path_buf();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || {
                let mut client = Client::connect(&path, Role::Cli).unwrap();
                for j in 0..5 {
                    let route = route_via(&format!("10.{}.{j}.0/24", 100 + i), "10.0.1.2");
                    let response = client
                        .request(&Request::Apply {
                            changes: vec![Change::AddRoute(route.into())],
                        })
                        .unwrap();
                    assert!(matches!(response, Response::Ok { .. }), "{response:?}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let desired = daemon.daemon().desired();
    assert_eq!(desired.routes.len(), 40);
    assert_eq!(fake.applies().len(), 40);
    assert_eq!(persisted(&dir), Some(desired));
}

#[test]
fn too_many_clients_are_refused() {
    let dir = TempDir::new("limit");
    let mut config = daemon_config(&dir);
    config.max_clients = 2;
    let daemon = Daemon::start(config).unwrap();
    let _first = cli(&daemon);
    let _second = cli(&daemon);
    let mut third = raw(&daemon);
    let message = expect_error(&mut third, ErrorCode::Unavailable);
    assert!(message.contains("too many"), "{message}");
    assert_closed(&mut third);
    drop(_first);
    assert!(wait_until(|| Client::connect(
        daemon.listen_path(),
        Role::Cli
    )
    .is_ok()));
}

#[test]
fn bad_config_file_names_the_file_and_line() {
    let dir = TempDir::new("badconfig");
    let file = dir.join("vrouter.toml");
    fs::write(
        &file,
        "[[port]]\nname = \"pod1\"\naddresses = [\"10.0.1.1/24\"]\n\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"192.0.2.1\"\n",
    )
    .unwrap();
    let mut config = daemon_config(&dir);
    config.config_file = Some(file.clone());
    let err = Daemon::start(config.clone()).err().unwrap().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("line 5: route 10.9.0.0/16"), "{err}");
    assert!(!config.listen.exists(), "no socket left behind");

    // A syntax error.
    fs::write(&file, "[[port]]\nname = \"pod1\"\nmtu = \"big\"\n").unwrap();
    let err = Daemon::start(config.clone()).err().unwrap().to_string();
    assert!(err.contains("line 3"), "{err}");

    // A missing file.
    fs::remove_file(&file).unwrap();
    let err = Daemon::start(config).err().unwrap().to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn state_file_takes_precedence_and_its_errors_name_it() {
    let dir = TempDir::new("precedence");
    let file = dir.join("vrouter.toml");
    fs::write(&file, BASE).unwrap();
    let state_dir = dir.join("state");
    fs::create_dir_all(&state_dir).unwrap();
    let state = "# persisted\n[[port]]\nname = \"up0\"\naddresses = [\"192.0.2.1/24\"]\n";
    fs::write(state_dir.join(STATE_FILE), state).unwrap();
    let mut config = daemon_config(&dir);
    config.config_file = Some(file);
    let daemon = Daemon::start(config.clone()).unwrap();
    let desired = daemon.daemon().desired();
    assert_eq!(desired.ports.len(), 1);
    assert_eq!(desired.ports[0].name, "up0");
    daemon.shutdown();

    fs::write(
        state_dir.join(STATE_FILE),
        "[[port]]\nname = \"up0\"\n\n[[port]]\nname = \"up0\"\n",
    )
    .unwrap();
    let err = Daemon::start(config).err().unwrap().to_string();
    assert!(err.starts_with("state file "), "{err}");
    assert!(err.contains(STATE_FILE), "{err}");
    assert!(err.contains("line 4: port up0"), "{err}");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let dir = TempDir::new("twice");
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    let err = Daemon::start(daemon_config(&dir))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another process is listening"), "{err}");
    // The first one is unharmed.
    let mut client = cli(&daemon);
    assert_eq!(show_config(&mut client), Config::default());
}

const BIN: &str = env!("CARGO_BIN_EXE_vrouter-control");

#[test]
fn binary_exits_1_on_a_bad_config_naming_the_line() {
    let dir = TempDir::new("bin-bad");
    let file = dir.join("vrouter.toml");
    fs::write(
        &file,
        "[[port]]\nname = \"pod1\"\n\n[[port]]\nname = \"pod1\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .arg("--listen")
        .arg(dir.join("control.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--vrouter-socket")
        .arg(dir.join("vrouter.sock"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 4: port pod1"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

#[test]
fn binary_stops_on_sigterm_and_removes_its_socket() {
    let dir = TempDir::new("bin-term");
    let socket = dir.join("run/control.sock");
    let mut child = std::process::Command::new(BIN)
        .arg("--listen")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--vrouter-socket")
        .arg(dir.join("vrouter.sock"))
        .arg("--log-level")
        .arg("debug")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(|| Client::connect(&socket, Role::Cli).is_ok()));
    let mut client = Client::connect(&socket, Role::Cli).unwrap();
    let response = client
        .request(&Request::Apply {
            changes: vec![Change::AddPort(port("pod1", "10.0.1.1/24").into())],
        })
        .unwrap();
    assert_eq!(response, Response::Ok { generation: 0 });
    drop(client);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
    assert_eq!(persisted(&dir).unwrap().ports.len(), 1);
}

#[test]
fn the_deployed_example_config_is_valid() {
    let text = include_str!("../../deploy/vrouter.example.toml");
    let config = Config::parse(text).unwrap_or_else(|e| panic!("deploy/vrouter.example.toml: {e}"));
    assert_eq!(config.ports.len(), 3);
    assert!(config.routes.iter().any(|r| r.nexthops.len() >= 2));
    assert!(config.routes.iter().any(|r| r.blackhole));
    assert_eq!(config.neighbors.len(), 1);
    assert_eq!(Config::parse(&config.to_toml().unwrap()).unwrap(), config);
}

#[test]
fn a_change_that_cannot_be_persisted_is_not_kept() {
    let dir = TempDir::new("nodisk");
    let fake = FakeDataplane::start(&dir.join("vrouter.sock"));
    let daemon = Daemon::start(daemon_config(&dir)).unwrap();
    assert!(wait_until(|| daemon.daemon().status().in_sync));
    // Make the state directory unusable: a regular file in its place.
    let state_dir = dir.join("state");
    let _ = fs::remove_dir_all(&state_dir);
    fs::write(&state_dir, b"not a directory").unwrap();

    let mut client = cli(&daemon);
    let change = Change::AddPort(port("pod1", "10.0.1.1/24").into());
    let response = client
        .request(&Request::Apply {
            changes: vec![change.clone()],
        })
        .unwrap();
    assert!(
        matches!(response, Response::Error { code: ErrorCode::Internal, ref message } if message.contains("cannot persist")),
        "{response:?}"
    );
    assert_eq!(show_config(&mut client), Config::default());
    // The dataplane had accepted the change: it is put back to the kept state.
    assert!(wait_until(|| fake.syncs().len() == 2));
    assert_eq!(fake.syncs()[1], Config::default());
    assert!(wait_until(|| daemon.daemon().status().in_sync));

    // With the dataplane gone, the same failure is reported and nothing changes either.
    fake.stop();
    assert!(wait_until(|| !daemon.daemon().status().peer_connected));
    let response = client
        .request(&Request::Apply {
            changes: vec![change],
        })
        .unwrap();
    assert!(matches!(
        response,
        Response::Error {
            code: ErrorCode::Internal,
            ..
        }
    ));
    assert_eq!(show_config(&mut client), Config::default());
}
