//! `vrouter-control`: the control daemon. Owns the desired state, persists it, serves
//! `vrouterctl` and keeps the `vrouter` dataplane in sync. The logic lives in
//! [`control::daemon`]; this wrapper parses flags, sets up logging and waits for a signal.

use clap::Parser;
use control::daemon::{
    Daemon, DaemonConfig, DEFAULT_LISTEN, DEFAULT_STATE_DIR, DEFAULT_VROUTER_SOCKET,
};
use nix::sys::signal::{SigSet, Signal};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// The vRouter control daemon: owns the desired state and keeps the dataplane in sync.
#[derive(Debug, Parser)]
#[command(name = "vrouter-control", version)]
struct Args {
    /// The dataplane's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_VROUTER_SOCKET)]
    vrouter_socket: PathBuf,
    /// The socket vrouterctl connects to.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_LISTEN)]
    listen: PathBuf,
    /// Directory of the persisted state (state.toml), which takes precedence over --config.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Desired state used when no state was persisted yet.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Group allowed to use the CLI socket (mode 0660) besides root and the daemon's user.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Log filter: error, warn, info, debug, trace or a tracing directive (default: RUST_LOG,
    /// else info).
    #[arg(long, value_name = "LEVEL", value_parser = parse_filter)]
    log_level: Option<String>,
}

fn parse_filter(s: &str) -> Result<String, String> {
    EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match &args.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Block the termination signals before any thread starts, so every thread inherits the
    // mask and the main thread receives them with sigwait.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("vrouter-control: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }

    let config = DaemonConfig {
        vrouter_socket: args.vrouter_socket,
        listen: args.listen,
        state_dir: args.state_dir,
        config_file: args.config,
        socket_group: args.socket_group,
        ..DaemonConfig::default()
    };
    let handle = match Daemon::start(config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("vrouter-control: {e}");
            return ExitCode::FAILURE;
        }
    };
    match signals.wait() {
        Ok(signal) => tracing::info!(signal = %signal, "stopping"),
        Err(e) => tracing::error!(error = %e, "waiting for signals failed; stopping"),
    }
    handle.shutdown();
    ExitCode::SUCCESS
}
