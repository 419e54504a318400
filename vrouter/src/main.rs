//! `vrouter`: the node dataplane process. Thin: parses flags, starts the dataplane and its
//! control socket, stops cleanly on SIGTERM/SIGINT (workers stop, sockets close, XDP programs
//! detach, the socket file is removed).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vrouter::dataplane::{Dataplane, DataplaneConfig};
use vrouter::worker::IdleMode;
use vrouter::xdp::XdpMode;

#[derive(Parser, Debug)]
#[command(
    name = "vrouter",
    version,
    about = "Userspace vRouter dataplane over AF_XDP"
)]
struct Args {
    /// Control socket (the control daemon connects here).
    #[arg(long, default_value = "/run/vrouter/vrouter.sock")]
    socket: PathBuf,
    /// Group allowed to use the control socket besides root (mode 0660 instead of 0600).
    #[arg(long)]
    socket_group: Option<String>,
    /// CPUs for the worker threads, one worker per CPU (e.g. "1" or "0,1").
    #[arg(long, default_value = "0", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Worker idle mode.
    #[arg(long, value_enum, default_value_t = IdleMode::Adaptive)]
    idle: IdleMode,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    /// UMEM frames per worker (2 KiB each).
    #[arg(long, default_value_t = 32768)]
    frames: u32,
    /// Flow cache entries per worker.
    #[arg(long, default_value_t = 1 << 16)]
    flows: usize,
    /// Tracked connections (NAT) per worker; about 160 bytes each, allocated at start.
    #[arg(long, default_value_t = 65_536)]
    ct_capacity: usize,
    /// A connection-tracking timeout, NAME=SECS (repeatable). Names: tcp-syn-sent,
    /// tcp-syn-recv, tcp-established, tcp-fin-wait, tcp-close-wait, tcp-last-ack,
    /// tcp-time-wait, tcp-close, udp (unreplied), udp-stream (replied), icmp, generic.
    /// Defaults: Kubernetes' (kube-proxy) values.
    #[arg(long = "ct-timeout", value_name = "NAME=SECS")]
    ct_timeouts: Vec<String>,
    /// Seconds before an unconfirmed learned neighbor is removed.
    #[arg(long, default_value_t = 300)]
    neighbor_timeout: u64,
    /// Busy-poll the ports' receive queues for this many microseconds per poll (0: off). The
    /// kernel's receive work for a port (its XDP program and, in copy mode, the copy into our
    /// memory) then runs in the worker's thread on the worker's CPU instead of wherever the
    /// kernel schedules it; the ports' `napi_defer_hard_irqs` and `gro_flush_timeout` are set
    /// so the kernel leaves that work to the worker. For dedicated cores (`--idle busy`).
    #[arg(long, default_value_t = 0, value_name = "USECS")]
    busy_poll: u32,
    /// Log filter (error, warn, info, debug, trace or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vrouter: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The connection table settings from `--ct-capacity` and `--ct-timeout`.
fn conntrack_config(args: &Args) -> Result<pipelines::conntrack::ConntrackConfig, String> {
    let defaults = pipelines::PipelineConfig::default().conntrack;
    if args.ct_capacity == 0 || args.ct_capacity > 1 << 24 {
        return Err(format!(
            "--ct-capacity {}: expected 1 to {}",
            args.ct_capacity,
            1 << 24
        ));
    }
    let mut timeouts = defaults.timeouts;
    for setting in &args.ct_timeouts {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--ct-timeout {setting}: expected NAME=SECS"))?;
        let secs: u32 = value
            .parse()
            .ok()
            .filter(|s| (1..=u32::MAX / 1000).contains(s))
            .ok_or_else(|| format!("--ct-timeout {setting}: SECS must be 1-{}", u32::MAX / 1000))?;
        let slot = match name {
            "tcp-syn-sent" => &mut timeouts.tcp_syn_sent_ms,
            "tcp-syn-recv" => &mut timeouts.tcp_syn_recv_ms,
            "tcp-established" => &mut timeouts.tcp_established_ms,
            "tcp-fin-wait" => &mut timeouts.tcp_fin_wait_ms,
            "tcp-close-wait" => &mut timeouts.tcp_close_wait_ms,
            "tcp-last-ack" => &mut timeouts.tcp_last_ack_ms,
            "tcp-time-wait" => &mut timeouts.tcp_time_wait_ms,
            "tcp-close" => &mut timeouts.tcp_close_ms,
            "udp" => &mut timeouts.udp_unreplied_ms,
            "udp-stream" => &mut timeouts.udp_replied_ms,
            "icmp" => &mut timeouts.icmp_ms,
            "generic" => &mut timeouts.generic_ms,
            other => return Err(format!("--ct-timeout: unknown timeout '{other}'")),
        };
        *slot = secs * 1000;
    }
    Ok(pipelines::conntrack::ConntrackConfig {
        capacity: args.ct_capacity,
        timeouts,
        ..defaults
    })
}

fn run(args: Args) -> Result<(), String> {
    // Block the stop signals in every thread; a dedicated thread waits for them.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    let group = match &args.socket_group {
        Some(name) => {
            Some(control::socket::group_id(name).map_err(|e| format!("group {name}: {e}"))?)
        }
        None => None,
    };
    let listener = control::socket::bind_listener(&args.socket, args.socket_group.as_deref())
        .map_err(|e| format!("control socket {}: {e}", args.socket.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let config = DataplaneConfig {
        cores: args.cores.clone(),
        idle: args.idle,
        xdp_mode: match args.xdp_mode {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        },
        frames: args.frames,
        pipeline: pipelines::PipelineConfig {
            flow_capacity: args.flows,
            conntrack: conntrack_config(&args)?,
            ..Default::default()
        },
        neighbor_timeout: Duration::from_secs(args.neighbor_timeout),
        busy_poll: (args.busy_poll > 0).then_some(args.busy_poll),
    };
    let mut dataplane =
        Dataplane::start(config, stop.clone()).map_err(|e| format!("cannot start workers: {e}"))?;
    let poll = mio::Poll::new().map_err(|e| format!("poll: {e}"))?;
    let waker = Arc::new(vrouter::server::waker(&poll).map_err(|e| format!("waker: {e}"))?);
    {
        let stop = stop.clone();
        let waker = waker.clone();
        std::thread::Builder::new()
            .name("vrouter-signals".into())
            .spawn(move || {
                if let Ok(signal) = signals.wait() {
                    tracing::info!(?signal, "stopping");
                }
                stop.store(true, Ordering::Relaxed);
                let _ = waker.wake();
            })
            .map_err(|e| format!("signal thread: {e}"))?;
    }
    tracing::info!(
        socket = %args.socket.display(),
        workers = args.cores.len(),
        "vrouter running"
    );
    let result = vrouter::server::run(listener, group, &mut dataplane, poll, stop.clone());
    stop.store(true, Ordering::Relaxed);
    dataplane.shutdown();
    let _ = std::fs::remove_file(&args.socket);
    result.map_err(|e| format!("control loop: {e}"))
}
