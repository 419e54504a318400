//! The control daemon `vrouter-control`: owner of the node's desired state.
//!
//! Three parts, all running on background threads of one [`DaemonHandle`]:
//! - **Desired state**: one [`Config`], loaded at start, changed only by accepted CLI
//!   requests, persisted atomically on every change.
//! - **Dataplane link**: a connection to the `vrouter` control socket, kept up by a thread
//!   that reconnects every [`DaemonConfig::reconnect_interval`] while the dataplane is absent
//!   and pushes the whole desired state (`Sync`) on every (re)connect.
//! - **CLI server**: the `vrouterctl` socket, a thread per connection.
//!
//! # Startup: where the desired state comes from
//! 1. `STATE_DIR/state.toml` if it exists: the latest state the daemon accepted. A parse error
//!    there stops the daemon (the error names the file and the line); it is never replaced by
//!    something else silently.
//! 2. else `--config FILE` if given (a bad or missing file stops the daemon, the error names
//!    the file and the line);
//! 3. else the empty state.
//!
//! When both a state file and `--config` exist, the state file wins and a log line says so:
//! changes made with `vrouterctl` since the config file was written must survive a restart
//! (or a reboot). To make the daemon take a file again on purpose, `vrouterctl apply -f FILE`.
//! The state loaded from `--config` is not written to the state directory until the first
//! accepted change, so editing the config file and restarting works as long as nothing was
//! changed through the CLI.
//!
//! # Persistence
//! Every accepted change writes the whole state to `state.toml.tmp`, fsyncs it, renames it to
//! `state.toml` and fsyncs the directory: after a crash the file is either the old or the new
//! state, never a mixture. A change is acknowledged only after it is on disk.
//!
//! # Transactions
//! One mutex covers the desired state and the dataplane connection, so concurrent CLI clients
//! are serialised and a change is validated, forwarded, persisted and committed as one step.
//! - Link up and in sync: the change goes to the dataplane first; only on its `Ok` is it
//!   persisted and committed. The dataplane's error is returned as is and nothing changes.
//! - Link down or out of sync: the change is persisted and committed, and answered with
//!   `Ok { generation: 0 }`; the next (re)sync pushes it.
//! - The dataplane accepted but the disk write failed: the daemon answers `Internal`, keeps the
//!   old state and re-syncs the dataplane to it at once.
//! - The link broke during a forwarded change (including a timeout): the outcome on the
//!   dataplane is unknown, so the daemon answers `Unavailable`, keeps the old state, and the
//!   reconnect's full sync makes the dataplane agree with it again.
//!
//! # Limitations (chosen, not fixed)
//! - Every change rewrites the whole state file; with a million routes each CLI change costs a
//!   serialisation and an fsync of the whole document. A journal would avoid that.
//! - The dataplane's death is noticed by a periodic `Status` request
//!   ([`DaemonConfig::heartbeat_interval`]) or by the next forwarded request.
//! - A CLI client that sends a huge length header makes its connection thread allocate that
//!   many bytes (at most [`crate::proto::MAX_BODY`]) before the body arrives.

use crate::client::Client;
use crate::config::{apply_changes, Config, ConfigError};
use crate::proto::{
    self, ErrorCode, FrameError, Request, Response, Role, Status, KIND_REQUEST, KIND_RESPONSE,
};
use crate::socket;
use nix::unistd::Gid;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Default path of the dataplane's control socket.
pub const DEFAULT_VROUTER_SOCKET: &str = "/run/vrouter/vrouter.sock";
/// Default path of the daemon's CLI socket.
pub const DEFAULT_LISTEN: &str = "/run/vrouter/control.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vrouter";
/// Name of the persisted state in the state directory.
pub const STATE_FILE: &str = "state.toml";
/// Name of the file a new state is written to before it replaces [`STATE_FILE`].
pub const STATE_TMP_FILE: &str = "state.toml.tmp";
/// How the daemon names itself in hello and status responses.
pub const SERVER_NAME: &str = "vrouter-control";

/// First lines of the persisted state.
const STATE_HEADER: &str =
    "# The desired state accepted by vrouter-control, rewritten on every change.\n\
# It takes precedence over --config at startup. Change it with vrouterctl, not by hand.\n";

/// How long an accept loop sleeps when no client is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Longest sleep of the link thread between checks.
const LINK_TICK: Duration = Duration::from_millis(100);
/// How long shutdown waits for client threads to finish.
const CLIENT_DRAIN: Duration = Duration::from_secs(5);

/// Everything the daemon needs to run.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The dataplane's control socket.
    pub vrouter_socket: PathBuf,
    /// The CLI socket this daemon listens on.
    pub listen: PathBuf,
    /// Where `state.toml` lives.
    pub state_dir: PathBuf,
    /// The config file used when no state was persisted yet.
    pub config_file: Option<PathBuf>,
    /// Group allowed on the CLI socket (mode 0660) besides root and the daemon's user.
    pub socket_group: Option<String>,
    /// Pause between connection attempts while the dataplane is absent.
    pub reconnect_interval: Duration,
    /// Pause between sync attempts while the dataplane rejects the desired state.
    pub resync_interval: Duration,
    /// Pause between liveness checks of an idle dataplane connection.
    pub heartbeat_interval: Duration,
    /// Timeout of `Sync` and `Apply` requests to the dataplane (a million routes take a while).
    pub sync_timeout: Duration,
    /// Timeout of the hello and of queries to the dataplane.
    pub request_timeout: Duration,
    /// A CLI connection idle this long is closed.
    pub client_idle_timeout: Duration,
    /// CLI connections served at once; more are refused.
    pub max_clients: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            vrouter_socket: PathBuf::from(DEFAULT_VROUTER_SOCKET),
            listen: PathBuf::from(DEFAULT_LISTEN),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            config_file: None,
            socket_group: None,
            reconnect_interval: Duration::from_millis(500),
            resync_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            client_idle_timeout: Duration::from_secs(300),
            max_clients: 64,
        }
    }
}

impl DaemonConfig {
    /// Path of the persisted state.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The persisted state does not parse.
    #[error("state file {}: {error}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        error: ConfigError,
    },
    /// The `--config` file does not parse.
    #[error("config file {}: {error}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        error: ConfigError,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The CLI socket could not be set up.
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The reason.
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

/// Where the desired state at startup came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateSource {
    /// The persisted state file.
    StateFile(PathBuf),
    /// The `--config` file.
    ConfigFile(PathBuf),
    /// Nothing: the empty state.
    Empty,
}

/// Loads the desired state by the precedence rule of the module docs.
pub fn load_desired(config: &DaemonConfig) -> Result<(Config, StateSource), DaemonError> {
    let state_path = config.state_file();
    match fs::read_to_string(&state_path) {
        Ok(text) => {
            let desired = Config::parse(&text).map_err(|error| DaemonError::State {
                path: state_path.clone(),
                error,
            })?;
            if let Some(file) = &config.config_file {
                info!(
                    state = %state_path.display(),
                    config = %file.display(),
                    "the persisted state takes precedence over --config; \
                     use `vrouterctl apply -f` to apply the file again"
                );
            }
            return Ok((desired, StateSource::StateFile(state_path)));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DaemonError::Read {
                path: state_path,
                source,
            })
        }
    }
    match &config.config_file {
        Some(file) => {
            let text = fs::read_to_string(file).map_err(|source| DaemonError::Read {
                path: file.clone(),
                source,
            })?;
            let desired = Config::parse(&text).map_err(|error| DaemonError::Config {
                path: file.clone(),
                error,
            })?;
            Ok((desired, StateSource::ConfigFile(file.clone())))
        }
        None => Ok((Config::default(), StateSource::Empty)),
    }
}

/// Writes `config` as the persisted state of `state_dir`, atomically: temporary file, fsync,
/// rename, fsync of the directory. An error means the previous state file is unchanged.
pub fn persist_state(state_dir: &Path, config: &Config) -> io::Result<()> {
    if !state_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(state_dir)?;
    }
    let body = toml::to_string(config)
        .map_err(|e| io::Error::other(format!("cannot render the state as TOML: {e}")))?;
    let tmp = state_dir.join(STATE_TMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(STATE_HEADER.as_bytes())?;
    file.write_all(body.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, state_dir.join(STATE_FILE))?;
    // The rename is the commit point: the file now holds the new state. A failed directory
    // flush only weakens durability across a power loss, so it is reported, not returned
    // (returning it would make the caller keep the old state in memory while the file has
    // the new one).
    if let Err(e) = File::open(state_dir).and_then(|dir| dir.sync_all()) {
        warn!(dir = %state_dir.display(), error = %e, "cannot flush the state directory");
    }
    Ok(())
}

/// What was last logged about the dataplane connection (to log once per change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkReport {
    Nothing,
    Up,
    Down,
}

/// Everything behind the one mutex.
struct Shared {
    desired: Config,
    link: Option<Client>,
    in_sync: bool,
    last_error: Option<String>,
    generation: Option<u64>,
    /// When the next sync attempt may be made (while connected and not in sync).
    next_sync: Instant,
    /// When the connection was last known alive.
    last_heard: Instant,
    reported: LinkReport,
}

/// CLI connections being served.
struct Clients {
    next_id: u64,
    streams: HashMap<u64, UnixStream>,
}

/// The daemon's shared core; the socket threads and in-process callers use the same
/// [`Daemon::handle`].
pub struct Daemon {
    config: DaemonConfig,
    peer_group: Option<Gid>,
    state: Mutex<Shared>,
    shutdown: AtomicBool,
    clients: Mutex<Clients>,
    clients_done: Condvar,
}

/// A running daemon: its threads and its socket. Dropping it shuts it down.
pub struct DaemonHandle {
    daemon: Arc<Daemon>,
    listener_thread: Option<JoinHandle<()>>,
    link_thread: Option<JoinHandle<()>>,
    /// Device and inode of the socket we bound, to remove only our own socket.
    socket_identity: Option<(u64, u64)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Daemon {
    /// Loads the desired state, binds the CLI socket and starts the dataplane link and the
    /// CLI server threads.
    pub fn start(config: DaemonConfig) -> Result<DaemonHandle, DaemonError> {
        let (desired, source) = load_desired(&config)?;
        match &source {
            StateSource::StateFile(p) | StateSource::ConfigFile(p) => info!(
                from = %p.display(),
                ports = desired.ports.len(),
                routes = desired.routes.len(),
                neighbors = desired.neighbors.len(),
                vxlans = desired.vxlans.len(),
                "desired state loaded"
            ),
            StateSource::Empty => info!("no state file and no --config: starting empty"),
        }
        let tmp = config.state_dir.join(STATE_TMP_FILE);
        if fs::remove_file(&tmp).is_ok() {
            debug!(path = %tmp.display(), "removed an unfinished state write");
        }
        let peer_group = config
            .socket_group
            .as_deref()
            .map(socket::group_id)
            .transpose()
            .map_err(|source| DaemonError::Listen {
                path: config.listen.clone(),
                source,
            })?;
        let listener = socket::bind_listener(&config.listen, config.socket_group.as_deref())
            .map_err(|source| DaemonError::Listen {
                path: config.listen.clone(),
                source,
            })?;
        let socket_identity = fs::metadata(&config.listen)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        info!(
            listen = %config.listen.display(),
            vrouter = %config.vrouter_socket.display(),
            "vrouter-control listening"
        );
        let now = Instant::now();
        let daemon = Arc::new(Daemon {
            config,
            peer_group,
            state: Mutex::new(Shared {
                desired,
                link: None,
                in_sync: false,
                last_error: None,
                generation: None,
                next_sync: now,
                last_heard: now,
                reported: LinkReport::Nothing,
            }),
            shutdown: AtomicBool::new(false),
            clients: Mutex::new(Clients {
                next_id: 0,
                streams: HashMap::new(),
            }),
            clients_done: Condvar::new(),
        });
        let mut handle = DaemonHandle {
            daemon: daemon.clone(),
            listener_thread: None,
            link_thread: None,
            socket_identity,
        };
        let link_daemon = daemon.clone();
        handle.link_thread = Some(
            thread::Builder::new()
                .name("dataplane-link".into())
                .spawn(move || link_daemon.run_link())
                .map_err(DaemonError::Thread)?,
        );
        let listen_daemon = daemon;
        handle.listener_thread = Some(
            thread::Builder::new()
                .name("cli-accept".into())
                .spawn(move || listen_daemon.run_listener(listener))
                .map_err(DaemonError::Thread)?,
        );
        Ok(handle)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.state)
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// The daemon's status.
    pub fn status(&self) -> Status {
        let s = self.shared();
        Status {
            server: SERVER_NAME.into(),
            peer_connected: s.link.is_some(),
            in_sync: s.in_sync,
            last_error: s.last_error.clone(),
            generation: s.generation,
        }
    }

    /// The desired state.
    pub fn desired(&self) -> Config {
        self.shared().desired.clone()
    }

    /// The configuration the daemon runs with.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// Answers one request of an open session (the hello is the socket layer's business).
    pub fn handle(&self, request: Request) -> Response {
        match request {
            Request::Hello { .. } => Response::error(
                ErrorCode::Protocol,
                "session already open: hello sent twice",
            ),
            Request::Apply { changes } => {
                let mut s = self.shared();
                let next = match apply_changes(&s.desired, &changes) {
                    Ok(next) => next,
                    Err(e) => return e.into(),
                };
                self.commit(&mut s, &Request::Apply { changes }, next)
            }
            Request::Sync { config } => {
                if let Err(e) = config.validate().and_then(|()| config.check_tables()) {
                    return e.into();
                }
                let mut s = self.shared();
                let request = Request::Sync {
                    config: config.clone(),
                };
                self.commit(&mut s, &request, config)
            }
            Request::ShowConfig => Response::Config {
                config: self.desired(),
            },
            Request::Status => Response::Status {
                status: self.status(),
            },
            Request::Ports
            | Request::Routes { .. }
            | Request::Neighbors
            | Request::Stats
            | Request::Drops
            | Request::Vxlans
            | Request::Connections { .. }
            | Request::FlushConnections
            | Request::Flows { .. } => self.forward_query(&request),
        }
    }

    /// Forwards a validated change (when the dataplane is in sync), persists and commits it.
    fn commit(&self, s: &mut Shared, request: &Request, next: Config) -> Response {
        if s.in_sync {
            if let Some(link) = s.link.as_mut() {
                let result = link
                    .set_timeout(self.config.sync_timeout)
                    .and_then(|()| link.request(request));
                return match result {
                    Ok(Response::Ok { generation }) => {
                        s.generation = Some(generation);
                        s.last_heard = Instant::now();
                        if let Err(e) = persist_state(&self.config.state_dir, &next) {
                            error!(error = %e, "cannot persist the state; undoing the change on the vrouter");
                            let message = format!(
                                "cannot persist the state in {}: {e}; the change was not kept and the vrouter is being re-synchronised",
                                self.config.state_dir.display()
                            );
                            s.in_sync = false;
                            s.last_error = Some(message.clone());
                            s.next_sync = Instant::now();
                            return Response::error(ErrorCode::Internal, message);
                        }
                        s.desired = next;
                        Response::Ok { generation }
                    }
                    Ok(Response::Error { code, message }) => {
                        s.last_heard = Instant::now();
                        info!(%message, "the vrouter refused a change");
                        Response::Error { code, message }
                    }
                    Ok(other) => {
                        let message = format!(
                            "unexpected {} answer from the vrouter to a change",
                            crate::client::response_name(&other)
                        );
                        self.drop_link(s, &message);
                        Response::error(
                            ErrorCode::Internal,
                            format!("{message}; nothing changed, re-synchronising"),
                        )
                    }
                    Err(e) => {
                        self.drop_link(s, &e.to_string());
                        Response::error(
                            ErrorCode::Unavailable,
                            format!("lost the vrouter connection ({e}); nothing changed"),
                        )
                    }
                };
            }
        }
        if let Err(e) = persist_state(&self.config.state_dir, &next) {
            error!(error = %e, "cannot persist the state");
            return Response::error(
                ErrorCode::Internal,
                format!(
                    "cannot persist the state in {}: {e}; nothing changed",
                    self.config.state_dir.display()
                ),
            );
        }
        s.desired = next;
        if s.link.is_some() {
            // Connected but out of sync: the new state may be what the dataplane needed.
            s.next_sync = Instant::now();
        }
        Response::Ok { generation: 0 }
    }

    fn forward_query(&self, request: &Request) -> Response {
        let mut s = self.shared();
        let Some(link) = s.link.as_mut() else {
            return Response::error(ErrorCode::Unavailable, "vrouter not connected");
        };
        let result = link
            .set_timeout(self.config.request_timeout)
            .and_then(|()| link.request(request));
        match result {
            Ok(response) => {
                s.last_heard = Instant::now();
                response
            }
            Err(e) => {
                self.drop_link(&mut s, &e.to_string());
                Response::error(
                    ErrorCode::Unavailable,
                    format!("lost the vrouter connection: {e}"),
                )
            }
        }
    }

    fn drop_link(&self, s: &mut Shared, reason: &str) {
        if s.link.take().is_some() {
            warn!(%reason, "dropped the vrouter connection; reconnecting");
        }
        s.in_sync = false;
        s.reported = LinkReport::Down;
    }

    /// Pushes the whole desired state. Called with the lock held and a link present.
    fn sync(&self, s: &mut Shared) {
        let Some(link) = s.link.as_mut() else {
            return;
        };
        let request = Request::Sync {
            config: s.desired.clone(),
        };
        let started = Instant::now();
        let result = link
            .set_timeout(self.config.sync_timeout)
            .and_then(|()| link.request(&request));
        match result {
            Ok(Response::Ok { generation }) => {
                info!(
                    generation,
                    ports = s.desired.ports.len(),
                    routes = s.desired.routes.len(),
                    neighbors = s.desired.neighbors.len(),
                    vxlans = s.desired.vxlans.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "desired state synchronised to the vrouter"
                );
                s.in_sync = true;
                s.generation = Some(generation);
                s.last_error = None;
                s.last_heard = Instant::now();
            }
            Ok(Response::Error { message, .. }) => {
                if s.last_error.as_deref() != Some(message.as_str()) {
                    warn!(
                        %message,
                        retry_secs = self.config.resync_interval.as_secs_f64(),
                        "the vrouter rejected the desired state; retrying"
                    );
                } else {
                    debug!(%message, "the vrouter still rejects the desired state");
                }
                s.in_sync = false;
                s.last_error = Some(message);
                s.next_sync = Instant::now() + self.config.resync_interval;
                s.last_heard = Instant::now();
            }
            Ok(other) => {
                let message = format!(
                    "unexpected {} answer from the vrouter to a sync",
                    crate::client::response_name(&other)
                );
                s.last_error = Some(message.clone());
                self.drop_link(s, &message);
            }
            Err(e) => {
                s.last_error = Some(format!("sync failed: {e}"));
                self.drop_link(s, &e.to_string());
            }
        }
    }

    /// Checks an idle connection with a cheap request; drops it if the dataplane is gone.
    fn heartbeat(&self, s: &mut Shared) {
        let Some(link) = s.link.as_mut() else {
            return;
        };
        let result = link
            .set_timeout(self.config.request_timeout)
            .and_then(|()| link.request(&Request::Status));
        match result {
            Ok(Response::Status { status }) => {
                if s.in_sync && status.generation.is_some() {
                    s.generation = status.generation;
                }
                s.last_heard = Instant::now();
            }
            Ok(_) => s.last_heard = Instant::now(),
            Err(e) => self.drop_link(s, &e.to_string()),
        }
    }

    /// The dataplane link thread.
    fn run_link(&self) {
        let mut next_connect = Instant::now();
        let tick = LINK_TICK
            .min(self.config.reconnect_interval)
            .max(Duration::from_millis(1));
        while !self.stopping() {
            let now = Instant::now();
            let connected = self.shared().link.is_some();
            if !connected && now >= next_connect {
                next_connect = now + self.config.reconnect_interval;
                self.connect();
            } else if connected {
                let mut s = self.shared();
                if !s.in_sync && now >= s.next_sync {
                    self.sync(&mut s);
                } else if now.duration_since(s.last_heard) >= self.config.heartbeat_interval {
                    self.heartbeat(&mut s);
                }
            }
            thread::park_timeout(tick);
        }
        let mut s = self.shared();
        s.link = None;
        s.in_sync = false;
    }

    /// One connection attempt; on success, the initial sync.
    fn connect(&self) {
        let path = &self.config.vrouter_socket;
        // Connect and hello outside the lock: the CLI keeps being served meanwhile.
        let result = Client::connect_with_timeout(path, Role::Daemon, self.config.request_timeout);
        let mut s = self.shared();
        match result {
            Ok(client) => {
                if self.stopping() {
                    return;
                }
                info!(
                    path = %path.display(),
                    server = client.server(),
                    version = client.version(),
                    "connected to the vrouter"
                );
                s.reported = LinkReport::Up;
                s.link = Some(client);
                s.in_sync = false;
                s.last_heard = Instant::now();
                self.sync(&mut s);
            }
            Err(e) => {
                if s.reported != LinkReport::Down {
                    warn!(
                        path = %path.display(),
                        error = %e,
                        retry_ms = self.config.reconnect_interval.as_millis() as u64,
                        "vrouter not reachable; retrying (serving the CLI meanwhile)"
                    );
                    s.reported = LinkReport::Down;
                }
                s.last_error = Some(format!("vrouter not reachable: {e}"));
            }
        }
    }

    /// The CLI accept loop.
    fn run_listener(self: Arc<Self>, listener: UnixListener) {
        if let Err(e) = listener.set_nonblocking(true) {
            error!(error = %e, "cannot poll the CLI socket; not serving the CLI");
            return;
        }
        let mut last_error: Option<io::ErrorKind> = None;
        while !self.stopping() {
            match listener.accept() {
                Ok((stream, _)) => {
                    last_error = None;
                    self.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. out of file descriptors: back off, log once per kind.
                    if last_error != Some(e.kind()) {
                        warn!(error = %e, "accept failed on the CLI socket");
                        last_error = Some(e.kind());
                    }
                    thread::sleep(ACCEPT_POLL);
                }
            }
        }
    }

    /// Starts serving an accepted CLI connection, or refuses it when too many are served.
    fn admit(self: &Arc<Self>, mut stream: UnixStream) {
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| {
                let idle = (!self.config.client_idle_timeout.is_zero())
                    .then_some(self.config.client_idle_timeout);
                stream.set_read_timeout(idle)
            })
            .and_then(|()| stream.set_write_timeout(Some(self.config.request_timeout)))
            .and_then(|()| stream.try_clone());
        let clone = match setup {
            Ok(clone) => clone,
            Err(e) => {
                warn!(error = %e, "cannot set up a CLI connection");
                return;
            }
        };
        let id = {
            let mut clients = lock(&self.clients);
            if clients.streams.len() >= self.config.max_clients {
                drop(clients);
                warn!(
                    limit = self.config.max_clients,
                    "too many CLI connections; refusing one"
                );
                let _ = proto::write_frame(
                    &mut stream,
                    KIND_RESPONSE,
                    0,
                    &Response::error(
                        ErrorCode::Unavailable,
                        format!(
                            "too many connections (limit {}); try again",
                            self.config.max_clients
                        ),
                    ),
                );
                return;
            }
            let id = clients.next_id;
            clients.next_id += 1;
            clients.streams.insert(id, clone);
            id
        };
        let daemon = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("cli-{id}"))
            .spawn(move || {
                daemon.serve_client(stream);
                daemon.forget_client(id);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a CLI connection thread");
            self.forget_client(id);
        }
    }

    fn forget_client(&self, id: u64) {
        let mut clients = lock(&self.clients);
        clients.streams.remove(&id);
        if clients.streams.is_empty() {
            self.clients_done.notify_all();
        }
    }

    /// Serves one CLI connection: peer check, hello, then requests until the client leaves.
    fn serve_client(&self, mut stream: UnixStream) {
        let peer = match socket::check_peer(stream.as_fd(), self.peer_group) {
            Ok(peer) => peer,
            Err(e) => {
                warn!(error = %e, "refused a CLI connection");
                let _ = proto::write_frame(
                    &mut stream,
                    KIND_RESPONSE,
                    0,
                    &Response::error(ErrorCode::Denied, e.to_string()),
                );
                return;
            }
        };
        debug!(uid = peer.uid, pid = peer.pid, "CLI connected");
        let mut session = false;
        loop {
            let (header, body) = match proto::read_frame(&mut stream) {
                Ok(frame) => frame,
                Err(FrameError::Closed) => return,
                Err(FrameError::Io(e)) => {
                    debug!(error = %e, uid = peer.uid, "CLI connection ended");
                    return;
                }
                Err(e) => {
                    // The stream cannot be resynchronised: say why and close.
                    warn!(error = %e, uid = peer.uid, pid = peer.pid, "bad frame from a CLI client; closing");
                    let code = match e {
                        FrameError::BadVersion(_) => ErrorCode::Protocol,
                        _ => ErrorCode::BadMessage,
                    };
                    let _ = proto::write_frame(
                        &mut stream,
                        KIND_RESPONSE,
                        0,
                        &Response::error(code, e.to_string()),
                    );
                    return;
                }
            };
            let reply = |stream: &mut UnixStream, response: &Response| {
                proto::write_frame(stream, KIND_RESPONSE, header.id, response)
            };
            if header.kind != KIND_REQUEST {
                let response = Response::error(
                    ErrorCode::BadMessage,
                    format!("expected a request frame, got kind {}", header.kind),
                );
                if reply(&mut stream, &response).is_err() {
                    return;
                }
                continue;
            }
            let request = match proto::decode_body::<Request>(&body) {
                Ok(request) => request,
                Err(e) => {
                    debug!(error = %e, uid = peer.uid, "undecodable CLI request");
                    if reply(
                        &mut stream,
                        &Response::error(ErrorCode::BadMessage, e.to_string()),
                    )
                    .is_err()
                    {
                        return;
                    }
                    continue;
                }
            };
            if !session {
                let Request::Hello {
                    min_version,
                    max_version,
                    ..
                } = request
                else {
                    let _ = reply(
                        &mut stream,
                        &Response::error(ErrorCode::Protocol, "the first request must be hello"),
                    );
                    return;
                };
                match proto::negotiate(min_version, max_version) {
                    Ok(version) => {
                        session = true;
                        let hello = Response::Hello {
                            version,
                            server: SERVER_NAME.into(),
                        };
                        if reply(&mut stream, &hello).is_err() {
                            return;
                        }
                    }
                    Err(message) => {
                        let _ = reply(&mut stream, &Response::error(ErrorCode::Protocol, message));
                        return;
                    }
                }
                continue;
            }
            let response = self.handle(request);
            if let Err(e) = reply(&mut stream, &response) {
                debug!(error = %e, "cannot answer a CLI client");
                return;
            }
        }
    }
}

impl DaemonHandle {
    /// The daemon's core (status, desired state, in-process requests).
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The CLI socket path.
    pub fn listen_path(&self) -> &Path {
        &self.daemon.config.listen
    }

    /// Stops serving, closes the dataplane connection and removes the CLI socket.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.daemon.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(thread) = self.listener_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.link_thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        // Wake the client threads blocked in reads, then wait a little for them.
        let clients = lock(&self.daemon.clients);
        for stream in clients.streams.values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + CLIENT_DRAIN;
        let mut clients = clients;
        while !clients.streams.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    count = clients.streams.len(),
                    "CLI connections still busy at shutdown"
                );
                break;
            }
            clients = self
                .daemon
                .clients_done
                .wait_timeout(clients, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        drop(clients);
        self.daemon.shared().link = None;
        let path = &self.daemon.config.listen;
        let ours = fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
            .is_some_and(|identity| Some(identity) == self.socket_identity);
        if ours {
            if let Err(e) = fs::remove_file(path) {
                warn!(path = %path.display(), error = %e, "cannot remove the CLI socket");
            }
        }
        info!("vrouter-control stopped");
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
