//! A worker: one thread pinned to one core, owning one UMEM with its frame pool, the AF_XDP
//! sockets of the (port, queue) pairs given to it, and its own pipeline (flow cache,
//! counters). The loop is DPDK l3fwd's: RX burst per socket, pipeline on the batch, TX bursts
//! buffered per egress port, then completions, fill-ring refill and TX kicks.
//!
//! Frames are never leaked: every frame is in exactly one of {pool, a fill ring, an RX ring or
//! the batch being processed, a TX ring, a completion ring}. What a TX ring cannot take goes
//! back to the pool and is counted (`tx-ring-full`).
//!
//! Idle modes: `busy` spins; `adaptive` spins while traffic flows and, after
//! [`ADAPTIVE_SPIN`] without any, sleeps in `poll(2)` on its sockets for at most
//! [`ADAPTIVE_SLEEP_MS`], so a node without dedicated cores is not burnt.
//!
//! Limitation, chosen: a worker transmits only on ports where it owns at least one queue (no
//! cross-worker handoff). The dataplane therefore requires every port to have at least as many
//! RX queues as there are workers, and refuses a port otherwise.

use crate::publish::Publication;
use crate::xsk::{BindMode, FramePool, Umem, UmemConfig, XdpDesc, XskConfig, XskSocket};
use crossbeam::channel::{Receiver, Sender, TrySendError};
use pipelines::flow::FlowRecord;
use pipelines::{
    Counters, DropReason, Event, Output, Packet, Pipeline, PipelineConfig, PortId, Tables, Verdict,
};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames per RX burst (the pipeline's batch).
pub const BATCH: usize = 64;
/// Spin this long without traffic before sleeping (adaptive mode).
pub const ADAPTIVE_SPIN: Duration = Duration::from_micros(200);
/// Longest sleep in adaptive mode (bounds command and publication latency).
pub const ADAPTIVE_SLEEP_MS: u16 = 10;
/// Most TX kicks per socket per loop iteration (each sends up to 32 frames in copy mode).
const MAX_KICKS: usize = 16;
/// Frames kept out of fill rings for packets the router emits.
const EMIT_RESERVE: usize = 512;

/// Idle behaviour.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum IdleMode {
    /// Spin forever (dedicated core).
    Busy,
    /// Spin while busy, sleep in poll(2) when idle.
    Adaptive,
}

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker number.
    pub index: usize,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Idle mode.
    pub idle: IdleMode,
    /// UMEM frames.
    pub frames: u32,
    /// Busy polling of the sockets' queues, microseconds per poll (`None`: off): each loop
    /// iteration drives every socket's receive processing in this thread
    /// ([`XskSocket::busy_poll`]).
    pub busy_poll: Option<u32>,
    /// Socket ring sizes and bind mode.
    pub xsk: XskConfig,
    /// Pipeline tunables.
    pub pipeline: PipelineConfig,
}

/// Requests from the control thread.
#[derive(Debug)]
pub enum Command {
    /// Bind sockets on these queues of a port; reply with, per socket, its queue, a duplicate
    /// of its fd (for the XSK map) and whether it runs zero-copy; or an error (then nothing
    /// was bound).
    AddQueues {
        /// Port id in the tables.
        port: PortId,
        /// Interface.
        ifname: String,
        /// Queues to bind.
        queues: Vec<u32>,
        /// Reply.
        reply: Sender<Result<Vec<BoundQueue>, String>>,
    },
    /// Close the sockets of a port (after it was removed from the XSK map).
    RemovePort {
        /// Port.
        port: PortId,
        /// Reply when done.
        reply: Sender<()>,
    },
    /// Report live flows.
    Flows {
        /// Reply.
        reply: Sender<Vec<FlowRecord>>,
    },
    /// Report tracked connections (at most `limit`) and the connection table's figures.
    Connections {
        /// Most connections.
        limit: usize,
        /// Reply.
        reply: Sender<ConnectionsReport>,
    },
    /// Forget every tracked connection; replies how many.
    FlushConnections {
        /// Reply.
        reply: Sender<usize>,
    },
}

/// A worker's connection table, for `conntrack list|stats`.
#[derive(Debug)]
pub struct ConnectionsReport {
    /// Connections (up to the requested limit).
    pub connections: Vec<pipelines::conntrack::Connection>,
    /// Counters.
    pub counters: pipelines::conntrack::ConntrackCounters,
    /// Capacity.
    pub capacity: usize,
    /// Memory.
    pub memory_bytes: usize,
}

/// A socket a worker bound for a port.
#[derive(Debug)]
pub struct BoundQueue {
    /// RX queue.
    pub queue: u32,
    /// Duplicate of the socket's fd, for the XSK map.
    pub fd: OwnedFd,
    /// The kernel runs this socket in zero-copy mode.
    pub zero_copy: bool,
}

/// What a worker publishes for readers (about every 100 ms).
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    /// Pipeline counters (flow cache included).
    pub counters: Counters,
    /// Frames the TX rings refused.
    pub tx_dropped: u64,
    /// Wakeup syscalls (TX kicks).
    pub wakeups: u64,
    /// Nanoseconds spent in TX kicks (in copy mode the kernel transmits inside them).
    pub tx_kick_nanos: u64,
    /// Nanoseconds spent in busy polls (the kernel's receive work, with `--busy-poll`).
    pub rx_poll_nanos: u64,
    /// Packets held for neighbor resolution.
    pub held: usize,
    /// Frames free in the pool.
    pub pool_free: usize,
    /// Frames the kernel dropped for the sockets: `rx_dropped` (no fill-ring frame, frame too
    /// long) + `rx_ring_full`. Fill-ring-empty events are not added: the kernel counts such a
    /// drop in `rx_dropped` too.
    pub kernel_rx_dropped: u64,
    /// Frames the kernel dropped because an RX ring was full (the worker did not keep up).
    pub rx_ring_full: u64,
    /// Times the kernel found a fill ring empty (frames were not given back in time).
    pub fill_ring_empty: u64,
}

/// The handle the control thread keeps.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Commands.
    pub commands: Sender<Command>,
    /// Latest snapshot.
    pub snapshot: Arc<Mutex<WorkerSnapshot>>,
    /// The thread.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

struct Socket {
    port: PortId,
    sock: XskSocket,
    tx: Vec<XdpDesc>,
}

/// Starts a worker thread.
pub fn spawn(
    config: WorkerConfig,
    publication: Arc<Publication>,
    initial: Arc<Tables>,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<WorkerHandle> {
    let (commands_tx, commands_rx) = crossbeam::channel::unbounded();
    let snapshot = Arc::new(Mutex::new(WorkerSnapshot::default()));
    let shared_snapshot = snapshot.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vrouter-worker-{}", config.index))
        .spawn(move || {
            if let Some(cpu) = config.cpu {
                pin_to(cpu, config.index);
            }
            let umem = match Umem::new(UmemConfig {
                frame_count: config.frames,
                frame_size: 2048,
                headroom: 0,
            }) {
                Ok(umem) => umem,
                Err(e) => {
                    tracing::error!(worker = config.index, "cannot create UMEM: {e}");
                    return;
                }
            };
            let mut worker = Worker {
                pool: FramePool::new(&umem),
                umem,
                sockets: Vec::new(),
                tx_socket: Vec::new(),
                pipeline: Pipeline::new(config.pipeline.clone()),
                tables: initial,
                seen: 0,
                out: Output::default(),
                events,
                commands: commands_rx,
                snapshot: shared_snapshot,
                publication,
                stop,
                tx_dropped: 0,
                wakeups: 0,
                tx_kick_nanos: 0,
                rx_poll_nanos: 0,
                started: Instant::now(),
                batch_addrs: Vec::with_capacity(BATCH),
                config,
            };
            worker.run();
        })?;
    Ok(WorkerHandle {
        commands: commands_tx,
        snapshot,
        thread: Some(thread),
    })
}

fn pin_to(cpu: usize, index: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err()
        || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
    {
        tracing::warn!(
            worker = index,
            cpu,
            "cannot pin worker to CPU; running unpinned"
        );
    }
}

struct Worker {
    config: WorkerConfig,
    umem: Umem,
    pool: FramePool,
    sockets: Vec<Socket>,
    /// Socket index used to transmit on each port (indexed by port id).
    tx_socket: Vec<Option<usize>>,
    pipeline: Pipeline,
    tables: Arc<Tables>,
    seen: u64,
    out: Output,
    events: Sender<Event>,
    commands: Receiver<Command>,
    snapshot: Arc<Mutex<WorkerSnapshot>>,
    publication: Arc<Publication>,
    stop: Arc<AtomicBool>,
    tx_dropped: u64,
    wakeups: u64,
    /// Time in TX kicks and in busy polls (two clock reads per syscall of a microsecond or
    /// more: what the kernel's copy-mode work costs the worker).
    tx_kick_nanos: u64,
    rx_poll_nanos: u64,
    started: Instant,
    /// Frame addresses of the batch being processed (kept to reuse its allocation).
    batch_addrs: Vec<u64>,
}

impl Worker {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn run(&mut self) {
        let mut descs = [XdpDesc::default(); BATCH];
        let mut last_work = Instant::now();
        let mut last_housekeeping = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            self.publication
                .refresh(self.config.index, &mut self.seen, &mut self.tables);
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
            let mut work = 0;
            for index in 0..self.sockets.len() {
                if self.config.busy_poll.is_some() {
                    // Failures here only mean the kernel did no receive work this time.
                    let start = Instant::now();
                    let _ = self.sockets[index].sock.busy_poll();
                    self.rx_poll_nanos += start.elapsed().as_nanos() as u64;
                }
                let received = self.sockets[index].sock.rx_burst(&mut descs);
                if received > 0 {
                    self.process(index, &descs[..received]);
                    work += received;
                }
            }
            self.service_rings();
            let now = Instant::now();
            if work > 0 {
                last_work = now;
            }
            if now.duration_since(last_housekeeping) >= Duration::from_millis(100) {
                last_housekeeping = now;
                self.housekeeping();
            }
            if work == 0 {
                match self.config.idle {
                    IdleMode::Busy => std::hint::spin_loop(),
                    IdleMode::Adaptive => {
                        if now.duration_since(last_work) >= ADAPTIVE_SPIN {
                            self.sleep();
                        } else {
                            // Spinning on a shared core: let whatever else is runnable there
                            // (another node's worker, the kernel's threads) run now rather
                            // than at the end of our time slice, milliseconds later, which
                            // is what their packets would wait.
                            std::thread::yield_now();
                        }
                    }
                }
            }
        }
        for socket in std::mem::take(&mut self.sockets) {
            let _ = socket.sock.close(&mut self.pool);
        }
    }

    /// Runs one RX burst of socket `index` through the pipeline and stages the TX.
    fn process(&mut self, index: usize, descs: &[XdpDesc]) {
        let in_port = self.sockets[index].port;
        let mut addrs = std::mem::take(&mut self.batch_addrs);
        addrs.clear();
        addrs.extend(descs.iter().map(|d| d.addr));
        let frame_size = self.umem.frame_size() as u64;
        let now_ns = self.now_ns();
        let mut verdicts = [Verdict::Consumed; BATCH];
        let mut layout = [(0usize, 0usize); BATCH];
        {
            let mut frames = Vec::with_capacity(descs.len());
            if let Err(e) = self.umem.frames_mut(&addrs, &mut frames) {
                tracing::error!(worker = self.config.index, "bad RX batch: {e}");
                self.pool.free_descs(descs);
                self.batch_addrs = addrs;
                return;
            }
            let mut packets: Vec<Packet<'_>> = frames
                .into_iter()
                .zip(descs)
                .map(|(buf, desc)| Packet {
                    buf,
                    offset: (desc.addr % frame_size) as usize,
                    len: desc.len as usize,
                    in_port,
                })
                .collect();
            self.pipeline.process(
                &self.tables,
                &mut packets,
                &mut verdicts[..descs.len()],
                &mut self.out,
                now_ns,
            );
            for (slot, packet) in layout.iter_mut().zip(&packets) {
                *slot = (packet.offset, packet.len);
            }
        }
        for (i, desc) in descs.iter().enumerate() {
            match verdicts[i] {
                Verdict::Transmit(port) => {
                    let base = desc.addr - desc.addr % frame_size;
                    let (offset, len) = layout[i];
                    let out = XdpDesc {
                        addr: base + offset as u64,
                        len: len as u32,
                        options: 0,
                    };
                    match self.tx_index(port) {
                        Some(tx) => self.sockets[tx].tx.push(out),
                        None => {
                            self.pool.free(desc.addr);
                            self.pipeline.count_drop(DropReason::PortDown);
                        }
                    }
                }
                Verdict::ToHost => {
                    // Host traffic leaves in the XDP program (XDP_PASS), so the pipeline does
                    // not send packets here; if it ever does, the drop is counted, not silent.
                    self.pool.free(desc.addr);
                    self.pipeline.count_drop(DropReason::HostPathUnavailable);
                }
                Verdict::Consumed | Verdict::Drop(_) => self.pool.free(desc.addr),
            }
        }
        self.batch_addrs = addrs;
        self.stage_emitted();
    }

    /// Copies the frames the pipeline built into UMEM frames and stages them.
    fn stage_emitted(&mut self) {
        let rx_offset = self.umem.rx_offset() as u64;
        let capacity = self.umem.rx_frame_capacity() as usize;
        let emitted = std::mem::take(&mut self.out.emitted);
        for emitted in &emitted {
            let Some(tx) = self.tx_index(emitted.port) else {
                self.pipeline.count_drop(DropReason::PortDown);
                continue;
            };
            if emitted.frame.len() > capacity {
                self.pipeline.count_drop(DropReason::FrameTooLong);
                continue;
            }
            let Some(addr) = self.pool.alloc() else {
                self.pipeline.count_drop(DropReason::NoFreeFrame);
                continue;
            };
            let Some(frame) = self.umem.frame_mut(addr + rx_offset, emitted.frame.len()) else {
                self.pool.free(addr);
                continue;
            };
            frame.copy_from_slice(&emitted.frame);
            self.sockets[tx].tx.push(XdpDesc {
                addr: addr + rx_offset,
                len: emitted.frame.len() as u32,
                options: 0,
            });
        }
        self.out.emitted = emitted;
        for event in self.out.events.drain(..) {
            if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
                // The control thread is behind; learning resumes with the next ARP/ND.
            }
        }
        self.out.clear();
    }

    #[inline]
    fn tx_index(&self, port: PortId) -> Option<usize> {
        self.tx_socket.get(port.0 as usize).copied().flatten()
    }

    /// TX bursts, kicks, completions and fill refill. Bookkeeping, not traffic: it does not
    /// count as work for the adaptive idle decision (only received frames do).
    fn service_rings(&mut self) {
        let sockets = self.sockets.len().max(1);
        let share = (self.pool.total() as usize / sockets).saturating_sub(EMIT_RESERVE / sockets);
        for socket in &mut self.sockets {
            if !socket.tx.is_empty() {
                let accepted = socket.sock.tx_burst(&socket.tx);
                for desc in &socket.tx[accepted..] {
                    self.pool.free(desc.addr);
                    self.tx_dropped += 1;
                    self.pipeline.count_drop(DropReason::TxRingFull);
                }
                socket.tx.clear();
            }
            // Copy mode sends at most 32 frames per kick: kick until the ring is drained, so
            // the TX ring never fills up behind a 64-frame RX burst. Bounded, in case the
            // device stops taking frames.
            for _ in 0..MAX_KICKS {
                if socket.sock.tx_pending() == 0 || !socket.sock.tx_needs_wakeup() {
                    break;
                }
                self.wakeups += 1;
                let start = Instant::now();
                let kicked = socket.sock.kick_tx();
                self.tx_kick_nanos += start.elapsed().as_nanos() as u64;
                if kicked.is_err() {
                    break;
                }
            }
            self.pool.reclaim_completions(&mut socket.sock);
            let free = socket.sock.fill_free() as usize;
            if free >= BATCH {
                let in_ring = socket.sock.frames_in_kernel() as usize;
                let allowed = share.saturating_sub(in_ring).min(free);
                let available = self.pool.len().saturating_sub(EMIT_RESERVE);
                self.pool.refill(&mut socket.sock, allowed.min(available));
            }
        }
    }

    fn sleep(&mut self) {
        if self.sockets.is_empty() {
            std::thread::sleep(Duration::from_millis(ADAPTIVE_SLEEP_MS as u64));
            return;
        }
        let mut fds: Vec<nix::poll::PollFd<'_>> = self
            .sockets
            .iter()
            .map(|s| nix::poll::PollFd::new(s.sock.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ADAPTIVE_SLEEP_MS));
    }

    fn housekeeping(&mut self) {
        let now_ns = self.now_ns();
        self.pipeline.tick(&self.tables, &mut self.out, now_ns);
        self.stage_emitted();
        let (mut kernel_rx_dropped, mut rx_ring_full, mut fill_ring_empty) = (0, 0, 0);
        for socket in &self.sockets {
            if let Ok(stats) = socket.sock.statistics() {
                kernel_rx_dropped += stats.rx_dropped + stats.rx_ring_full;
                rx_ring_full += stats.rx_ring_full;
                fill_ring_empty += stats.rx_fill_ring_empty_descs;
            }
        }
        let snapshot = WorkerSnapshot {
            counters: self.pipeline.counters(),
            tx_dropped: self.tx_dropped,
            wakeups: self.wakeups,
            tx_kick_nanos: self.tx_kick_nanos,
            rx_poll_nanos: self.rx_poll_nanos,
            held: self.pipeline.held_packets(),
            pool_free: self.pool.len(),
            kernel_rx_dropped,
            rx_ring_full,
            fill_ring_empty,
        };
        if let Ok(mut slot) = self.snapshot.lock() {
            *slot = snapshot;
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::AddQueues {
                port,
                ifname,
                queues,
                reply,
            } => {
                let result = self.add_queues(port, &ifname, &queues);
                let _ = reply.send(result);
            }
            Command::RemovePort { port, reply } => {
                let mut index = 0;
                while index < self.sockets.len() {
                    if self.sockets[index].port == port {
                        let socket = self.sockets.remove(index);
                        self.pool.free_descs(&socket.tx);
                        let report = socket.sock.close(&mut self.pool);
                        if report.lost > 0 {
                            tracing::warn!(
                                worker = self.config.index,
                                lost = report.lost,
                                "frames held by the kernel at socket close"
                            );
                        }
                    } else {
                        index += 1;
                    }
                }
                self.rebuild_tx_index();
                let _ = reply.send(());
            }
            Command::Flows { reply } => {
                let _ = reply.send(self.pipeline.flows(&self.tables));
            }
            Command::Connections { limit, reply } => {
                let table = self.pipeline.conntrack();
                let connections = if limit == 0 {
                    Vec::new()
                } else {
                    let mut all = self.pipeline.connections();
                    all.truncate(limit);
                    all
                };
                let _ = reply.send(ConnectionsReport {
                    connections,
                    counters: table.counters(),
                    capacity: table.capacity(),
                    memory_bytes: table.memory_bytes(),
                });
            }
            Command::FlushConnections { reply } => {
                let _ = reply.send(self.pipeline.flush_connections());
            }
        }
    }

    fn add_queues(
        &mut self,
        port: PortId,
        ifname: &str,
        queues: &[u32],
    ) -> Result<Vec<BoundQueue>, String> {
        let mut created = Vec::new();
        for &queue in queues {
            let config = XskConfig {
                bind_mode: BindMode::Auto,
                ..self.config.xsk
            };
            let socket = XskSocket::new(&self.umem, ifname, queue, &config).and_then(|sock| {
                if let Some(usecs) = self.config.busy_poll {
                    sock.enable_busy_poll(usecs, BATCH as u16)
                        .map_err(|source| crate::xsk::XskError::Sys {
                            op: "busy poll socket options",
                            source,
                        })?;
                }
                Ok(sock)
            });
            match socket {
                Ok(sock) => created.push((queue, sock)),
                Err(e) => {
                    for (_, sock) in created {
                        let _ = sock.close(&mut self.pool);
                    }
                    return Err(format!("{ifname} queue {queue}: {e}"));
                }
            }
        }
        let mut fds = Vec::new();
        for (queue, mut sock) in created {
            let fd = sock
                .fd()
                .try_clone_to_owned()
                .map_err(|e| format!("{ifname} queue {queue}: dup: {e}"))?;
            let available = self.pool.len().saturating_sub(EMIT_RESERVE);
            self.pool.refill(&mut sock, available.min(2048));
            fds.push(BoundQueue {
                queue,
                fd,
                zero_copy: sock.is_zero_copy(),
            });
            self.sockets.push(Socket {
                port,
                sock,
                tx: Vec::with_capacity(BATCH * 2),
            });
        }
        self.rebuild_tx_index();
        Ok(fds)
    }

    fn rebuild_tx_index(&mut self) {
        self.tx_socket.clear();
        for (index, socket) in self.sockets.iter().enumerate() {
            let slot = socket.port.0 as usize;
            if self.tx_socket.len() <= slot {
                self.tx_socket.resize(slot + 1, None);
            }
            if self.tx_socket[slot].is_none() {
                self.tx_socket[slot] = Some(index);
            }
        }
    }
}
