//! The control thread's view of the dataplane: the applied desired state, the ports (XDP
//! attachment and sockets spread over the workers), the table store, and the answers to every
//! control request.
//!
//! A `Sync` or `Apply` is one transaction: new interfaces are opened first (XDP attached,
//! sockets bound, but not yet in the XSK map, so no traffic reaches them), then the planned
//! table ops are applied and published; if that fails the new interfaces are closed again and
//! nothing changed. Only then are sockets registered in the XSK map (traffic starts) and
//! removed ports closed. A `Sync` identical to the applied state plans no op at all, so a
//! daemon reconnecting to a running dataplane does not disturb traffic.
//!
//! Learned neighbors arrive from the workers as events and are applied as `LearnNeighbor`
//! batches (refreshes of an unchanged MAC do not bump the generation); learned entries not
//! confirmed within the neighbor timeout are aged out.
//!
//! VXLAN tunnels (`[[vxlan]]`) are ports of the tables only: no interface, no XDP program,
//! no socket (their frames leave and arrive through the uplink's). Each is resolved under
//! its name `vxlan<VNI>` with its current id (or a new one no port uses), the configured MAC
//! or the uplink's, and the configured MTU or the uplink's minus 50.

use crate::iface::InterfaceInfo;
use crate::publish::{Publication, TableStore};
use crate::worker::{
    self, BoundQueue, Command, IdleMode, WorkerConfig, WorkerHandle, WorkerSnapshot,
};
use crate::xdp::{XdpAttachment, XdpMode};
use crate::xsk::XskConfig;
use control::config::{merge_changes, Cidr, Config, ResolvedPort};
use control::proto::{
    ConnectionEntry, ConntrackReport, DropEntry, ErrorCode, FlowEntry, NeighborEntry, PortStatus,
    RemoteEntry, Request, Response, RouteEntry, StatsReport, Status, VxlanEntry,
};
use crossbeam::channel::Receiver;
use pipelines::tables::{NeighborKind, NextHop, Port, TableOp};
use pipelines::{Counters, DropReason, Event, PipelineConfig, PortId, Stage, VrfId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the dataplane.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// CPUs for the workers (one worker per CPU).
    pub cores: Vec<usize>,
    /// Idle mode of the workers.
    pub idle: IdleMode,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// UMEM frames per worker.
    pub frames: u32,
    /// Pipeline tunables.
    pub pipeline: PipelineConfig,
    /// Learned neighbors not confirmed for this long are removed.
    pub neighbor_timeout: Duration,
    /// Busy polling of the ports' queues, microseconds per poll (`None`: off).
    pub busy_poll: Option<u32>,
}

struct PortRuntime {
    id: PortId,
    info: InterfaceInfo,
    xdp: XdpAttachment,
    /// Sockets bound but not yet in the XSK map (their fds are held until then).
    unregistered: Vec<BoundQueue>,
    /// Every socket of the port runs zero-copy.
    zero_copy: bool,
}

/// The dataplane.
pub struct Dataplane {
    config: DataplaneConfig,
    store: TableStore,
    workers: Vec<WorkerHandle>,
    events: Receiver<Event>,
    applied: Config,
    ports: BTreeMap<String, PortRuntime>,
    started: Instant,
    synced: bool,
    /// Why the last rejected transaction was rejected.
    last_error: Option<String>,
    pending_learn: HashMap<(PortId, std::net::IpAddr), pipelines::wire::EthernetAddress>,
    last_aging: Instant,
}

impl Dataplane {
    /// Starts the workers with empty tables.
    pub fn start(config: DataplaneConfig, stop: Arc<AtomicBool>) -> std::io::Result<Dataplane> {
        let workers_count = config.cores.len().max(1);
        let publication = Publication::new(workers_count);
        let store = TableStore::new(publication.clone());
        let (events_tx, events_rx) = crossbeam::channel::bounded(4096);
        let mut workers = Vec::new();
        for index in 0..workers_count {
            let worker_config = WorkerConfig {
                index,
                cpu: config.cores.get(index).copied(),
                idle: config.idle,
                frames: config.frames,
                busy_poll: config.busy_poll,
                xsk: XskConfig::default(),
                pipeline: PipelineConfig {
                    hash_seed: config.pipeline.hash_seed ^ index as u64,
                    ..config.pipeline.clone()
                },
            };
            workers.push(worker::spawn(
                worker_config,
                publication.clone(),
                store.active().clone(),
                events_tx.clone(),
                stop.clone(),
            )?);
        }
        Ok(Dataplane {
            config,
            store,
            workers,
            events: events_rx,
            applied: Config::default(),
            ports: BTreeMap::new(),
            started: Instant::now(),
            synced: false,
            last_error: None,
            pending_learn: HashMap::new(),
            last_aging: Instant::now(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Answers one request (hello handled by the server).
    pub fn handle(&mut self, request: Request, daemon_connected: bool) -> Response {
        match request {
            Request::Hello { .. } => Response::error(ErrorCode::Protocol, "hello already done"),
            Request::Sync { config } => {
                let response = self.reconcile(config);
                if matches!(response, Response::Ok { .. }) {
                    self.synced = true;
                }
                self.note_outcome(&response);
                response
            }
            Request::Apply { changes } => {
                let response = match merge_changes(&self.applied, &changes) {
                    Ok(next) => self.reconcile(next),
                    Err(e) => Response::error(ErrorCode::Rejected, e.to_string()),
                };
                self.note_outcome(&response);
                response
            }
            Request::ShowConfig => Response::Config {
                config: self.applied.clone(),
            },
            Request::Ports => Response::Ports {
                ports: self.port_status(),
            },
            Request::Routes { vrf } => Response::Routes {
                routes: self.routes(vrf),
            },
            Request::Neighbors => Response::Neighbors {
                neighbors: self.neighbors(),
            },
            Request::Stats => Response::Stats {
                stats: Box::new(self.stats()),
            },
            Request::Drops => Response::Drops {
                drops: self.drops(),
            },
            Request::Vxlans => Response::Vxlans {
                vxlans: self.vxlans(),
            },
            Request::Flows { limit } => Response::Flows {
                flows: self.flows(limit),
            },
            Request::Connections { limit } => Response::Connections {
                conntrack: Box::new(self.connections(limit)),
            },
            Request::FlushConnections => Response::Flushed {
                connections: self.flush_connections(),
            },
            Request::Status => Response::Status {
                status: Status {
                    server: format!("vrouter {}", env!("CARGO_PKG_VERSION")),
                    peer_connected: daemon_connected,
                    in_sync: self.synced,
                    last_error: self.last_error.clone(),
                    generation: Some(self.store.active().generation()),
                },
            },
        }
    }

    fn note_outcome(&mut self, response: &Response) {
        match response {
            Response::Ok { .. } => self.last_error = None,
            Response::Error { message, .. } => self.last_error = Some(message.clone()),
            _ => {}
        }
    }

    /// Makes the dataplane match `next` (see the module docs).
    fn reconcile(&mut self, next: Config) -> Response {
        // Item checks only: applying the planned ops to the standby tables is the complete,
        // all-or-nothing check (building a second copy of a million routes just to validate
        // would double the cost of a large sync).
        if let Err(e) = next.validate() {
            return Response::error(ErrorCode::Rejected, e.to_string());
        }
        let nat = !next.snats.is_empty() || !next.services.is_empty();
        let had_nat = !self.applied.snats.is_empty() || !self.applied.services.is_empty();
        if nat && !had_nat && self.workers.len() > 1 {
            // Connection tables are per worker: a reply that arrives on another worker's queue
            // is not translated back (no handoff yet). Said once, when NAT appears.
            tracing::warn!(
                workers = self.workers.len(),
                "NAT configured with several workers: both directions of a connection must \
                 arrive on the same worker's queues, or replies are not translated back"
            );
        }
        // Open new interfaces (not yet receiving traffic).
        let mut opened: Vec<String> = Vec::new();
        for port in &next.ports {
            if self.ports.contains_key(&port.name) {
                continue;
            }
            match self.open_port(&port.name) {
                Ok(runtime) => {
                    self.ports.insert(port.name.clone(), runtime);
                    opened.push(port.name.clone());
                }
                Err(message) => {
                    self.close_ports(&opened);
                    return Response::error(ErrorCode::Rejected, message);
                }
            }
        }
        let mut resolved = HashMap::new();
        for port in &next.ports {
            let Some(runtime) = self.ports.get(&port.name) else {
                continue;
            };
            let (id, interface_mac, interface_mtu) =
                (runtime.id, runtime.info.mac, runtime.info.mtu);
            let mtu = port.mtu.unwrap_or(interface_mtu);
            if mtu > interface_mtu {
                self.close_ports(&opened);
                return Response::error(
                    ErrorCode::Rejected,
                    format!(
                        "port {}: mtu {mtu} exceeds the interface MTU {interface_mtu}",
                        port.name
                    ),
                );
            }
            resolved.insert(
                port.name.clone(),
                ResolvedPort {
                    id,
                    mac: port.mac.unwrap_or(interface_mac),
                    mtu,
                },
            );
        }
        if let Err(message) = self.resolve_tunnels(&next, &mut resolved) {
            self.close_ports(&opened);
            return Response::error(ErrorCode::Rejected, message);
        }
        let ops = control::config::plan(&self.applied, &next, self.store.active(), &resolved);
        let generation = match self.store.apply(&ops) {
            Ok(generation) => generation,
            Err(e) => {
                self.close_ports(&opened);
                return Response::error(ErrorCode::Rejected, describe_batch_error(&ops, &e));
            }
        };
        // Traffic starts on new ports only now that the tables know them.
        for name in &opened {
            if let Err(message) = self.start_traffic(name) {
                tracing::error!("{message}");
            }
        }
        let removed: Vec<String> = self
            .ports
            .keys()
            .filter(|name| next.port(name).is_none())
            .cloned()
            .collect();
        self.close_ports(&removed);
        self.applied = next;
        tracing::info!(generation, ops = ops.len(), "configuration applied");
        Response::Ok { generation }
    }

    /// Adds the tunnels of `next` to `resolved` (see the module docs). A tunnel whose uplink
    /// is not resolved is left out; validation has refused such a config already.
    fn resolve_tunnels(
        &self,
        next: &Config,
        resolved: &mut HashMap<String, ResolvedPort>,
    ) -> Result<(), String> {
        let tables = self.store.active();
        // Ids no port of this reconcile, of the tables or with sockets holds: a new tunnel never
        // takes an id whose port is only being removed in this same transaction.
        let mut taken: HashSet<PortId> = resolved
            .values()
            .map(|p| p.id)
            .chain(tables.ports().map(|p| p.id))
            .chain(self.ports.values().map(|p| p.id))
            .collect();
        for vxlan in &next.vxlans {
            let Some(uplink) = resolved.get(&vxlan.dev).copied() else {
                continue;
            };
            let name = vxlan.name();
            let current = tables
                .port_by_name(&name)
                .filter(|p| p.vxlan().is_some())
                .map(|p| p.id);
            let id = current
                .or_else(|| {
                    (0..pipelines::tables::MAX_PORTS)
                        .map(PortId)
                        .find(|id| !taken.contains(id))
                })
                .ok_or_else(|| format!("vxlan {}: too many ports", vxlan.vni))?;
            taken.insert(id);
            resolved.insert(name, vxlan.resolve(id, &uplink));
        }
        Ok(())
    }

    fn open_port(&mut self, name: &str) -> Result<PortRuntime, String> {
        let info = InterfaceInfo::read(name).map_err(|e| e.to_string())?;
        let workers = self.workers.len() as u32;
        if info.rx_queues < workers {
            return Err(format!(
                "port {name} has {} RX queue(s) but the vrouter runs {workers} workers: give the interface at least {workers} queues or run fewer workers",
                info.rx_queues
            ));
        }
        // Tunnel ports have ids too, and no runtime.
        let used: Vec<u16> = self
            .ports
            .values()
            .map(|p| p.id.0)
            .chain(self.store.active().ports().map(|p| p.id.0))
            .collect();
        let id = (0..pipelines::tables::MAX_PORTS)
            .find(|i| !used.contains(i))
            .map(PortId)
            .ok_or_else(|| "too many ports".to_string())?;
        let mut xdp = XdpAttachment::attach(name, self.config.xdp_mode)
            .map_err(|e| format!("port {name}: cannot attach XDP program: {e}"))?;
        if self.config.busy_poll.is_some() {
            defer_to_busy_poll(name);
        }
        // Queue q belongs to worker q % workers.
        let mut fds = Vec::new();
        for (index, worker) in self.workers.iter().enumerate() {
            let queues: Vec<u32> = (0..info.rx_queues)
                .filter(|q| (*q as usize) % self.workers.len() == index)
                .collect();
            let (reply_tx, reply_rx) = crossbeam::channel::bounded(1);
            let answer = worker
                .commands
                .send(Command::AddQueues {
                    port: id,
                    ifname: name.to_string(),
                    queues,
                    reply: reply_tx,
                })
                .map_err(|_| "worker stopped".to_string())
                .and_then(|()| {
                    reply_rx
                        .recv_timeout(Duration::from_secs(5))
                        .map_err(|_| "worker did not answer".to_string())
                })
                .and_then(|r| r);
            match answer {
                Ok(mut worker_fds) => fds.append(&mut worker_fds),
                Err(message) => {
                    self.remove_from_workers(id);
                    return Err(format!(
                        "port {name}: cannot bind AF_XDP sockets: {message}"
                    ));
                }
            }
        }
        for address in &info.host_addresses {
            if let Err(e) = xdp.add_host_addr(*address) {
                tracing::warn!("port {name}: host address {address} not passed to the kernel: {e}");
            }
        }
        tracing::info!(
            port = name,
            id = id.0,
            queues = info.rx_queues,
            mode = ?xdp.attached_mode(),
            "port opened"
        );
        let zero_copy = !fds.is_empty() && fds.iter().all(|b| b.zero_copy);
        Ok(PortRuntime {
            id,
            info,
            xdp,
            unregistered: fds,
            zero_copy,
        })
    }

    /// Puts the port's sockets in its XSK map: from now on its traffic reaches the workers.
    fn start_traffic(&mut self, name: &str) -> Result<(), String> {
        let Some(runtime) = self.ports.get_mut(name) else {
            return Ok(());
        };
        for BoundQueue { queue, fd, .. } in std::mem::take(&mut runtime.unregistered) {
            runtime
                .xdp
                .register_socket(queue, fd.as_fd())
                .map_err(|e| format!("port {name} queue {queue}: cannot register socket: {e}"))?;
        }
        Ok(())
    }

    /// Stops traffic to ports and releases them: XSK map entries first (traffic falls back to
    /// the kernel), then sockets (frames reclaimed), then the XDP program (detached on drop).
    fn close_ports(&mut self, names: &[String]) {
        for name in names {
            let Some(mut runtime) = self.ports.remove(name) else {
                continue;
            };
            for queue in 0..runtime.info.rx_queues {
                let _ = runtime.xdp.unregister_socket(queue);
            }
            self.remove_from_workers(runtime.id);
            tracing::info!(port = name.as_str(), "port closed");
        }
    }

    fn remove_from_workers(&self, id: PortId) {
        for worker in &self.workers {
            let (reply_tx, reply_rx) = crossbeam::channel::bounded(1);
            if worker
                .commands
                .send(Command::RemovePort {
                    port: id,
                    reply: reply_tx,
                })
                .is_ok()
            {
                let _ = reply_rx.recv_timeout(Duration::from_secs(5));
            }
        }
    }

    /// Applies learned neighbors reported by the workers and ages out old ones. Called by the
    /// control loop often (every wake-up and at least every 100 ms).
    pub fn service(&mut self) {
        let now_ns = self.now_ns();
        let timeout_ns = self.config.neighbor_timeout.as_nanos() as u64;
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::NeighborLearned { port, ip, mac } => {
                    self.pending_learn.insert((port, ip), mac);
                }
                Event::AclDenied {
                    target,
                    direction,
                    rule,
                    action,
                    protocol,
                    src,
                    src_port,
                    dst,
                    dst_port,
                } => {
                    // Sampled by the workers (10/s each): the log of denied packets.
                    let tables = self.store.active();
                    let set = match target {
                        pipelines::tables::AclTarget::Port(port) => tables
                            .port(port)
                            .map_or("?", |p| p.name.as_str())
                            .to_string(),
                        pipelines::tables::AclTarget::Vrf(vrf) => format!("vrf {}", vrf.0),
                    };
                    let rule =
                        rule.map_or("default deny".to_string(), |r| format!("rule {}", r + 1));
                    tracing::info!(
                        set,
                        direction = ?direction,
                        %rule,
                        action = ?action,
                        protocol,
                        %src,
                        src_port,
                        %dst,
                        dst_port,
                        "acl denied a packet"
                    );
                }
            }
        }
        if !self.pending_learn.is_empty() {
            let tables = self.store.active();
            let ops: Vec<TableOp> = self
                .pending_learn
                .drain()
                .filter(|((port, ip), mac)| {
                    // Skip refreshes of entries confirmed recently: they change nothing.
                    match tables.neighbors().get(*port, *ip) {
                        Some(n) if n.kind == NeighborKind::Static => false,
                        Some(n) => {
                            n.mac != *mac || now_ns.saturating_sub(n.confirmed_ns) > timeout_ns / 4
                        }
                        None => tables.port(*port).is_some(),
                    }
                })
                .map(|((port, ip), mac)| TableOp::LearnNeighbor {
                    port,
                    ip,
                    mac,
                    now_ns,
                })
                .collect();
            if !ops.is_empty() {
                if let Err(e) = self.store.apply(&ops) {
                    tracing::debug!("learned neighbors not applied: {e}");
                }
            }
        }
        if self.last_aging.elapsed() >= Duration::from_secs(1) {
            self.last_aging = Instant::now();
            let removed = self.store.expire_neighbors(now_ns, timeout_ns);
            if removed > 0 {
                tracing::debug!(removed, "learned neighbors aged out");
            }
        }
    }

    fn snapshots(&self) -> Vec<WorkerSnapshot> {
        self.workers
            .iter()
            .map(|w| w.snapshot.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }

    fn counters(&self) -> Counters {
        let mut total = Counters::new();
        for snapshot in self.snapshots() {
            total.merge(&snapshot.counters);
        }
        total
    }

    fn port_name(&self, id: PortId) -> String {
        self.store
            .active()
            .port(id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    /// Interface ports by name, then tunnel ports by VNI.
    fn port_status(&self) -> Vec<PortStatus> {
        let counters = self.counters();
        let tables = self.store.active();
        let mut tunnels: Vec<&Port> = tables.ports().filter(|p| p.vxlan().is_some()).collect();
        tunnels.sort_by_key(|p| p.vxlan().map(|v| v.vni));
        let tunnel_status = tunnels.into_iter().filter_map(|port| {
            let params = port.vxlan()?;
            let c = counters
                .ports
                .get(port.id.0 as usize)
                .copied()
                .unwrap_or_default();
            Some(PortStatus {
                name: port.name.clone(),
                id: port.id.0,
                ifindex: 0,
                mac: port.mac,
                mtu: port.mtu,
                vrf: port.vrf.0,
                addresses: addresses(port),
                queues: 0,
                kind: "vxlan".into(),
                vni: Some(params.vni),
                xdp_mode: "none".into(),
                zero_copy: false,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                rx_dropped: c.rx_dropped,
            })
        });
        self.ports
            .iter()
            .filter_map(|(name, runtime)| {
                let port = tables.port(runtime.id)?;
                let c = counters
                    .ports
                    .get(runtime.id.0 as usize)
                    .copied()
                    .unwrap_or_default();
                Some(PortStatus {
                    name: name.clone(),
                    id: runtime.id.0,
                    ifindex: runtime.info.ifindex,
                    mac: port.mac,
                    mtu: port.mtu,
                    vrf: port.vrf.0,
                    addresses: addresses(port),
                    queues: runtime.info.rx_queues,
                    kind: "ethernet".into(),
                    vni: None,
                    xdp_mode: match runtime.xdp.attached_mode() {
                        XdpMode::Generic => "generic".into(),
                        _ => "native".into(),
                    },
                    zero_copy: runtime.zero_copy,
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    rx_dropped: c.rx_dropped,
                })
            })
            .chain(tunnel_status)
            .collect()
    }

    fn routes(&self, vrf: Option<u32>) -> Vec<RouteEntry> {
        let tables = self.store.active();
        let vrfs: Vec<VrfId> = match vrf {
            Some(v) => vec![VrfId(v)],
            None => tables.vrf_ids().collect(),
        };
        let mut out = Vec::new();
        for vrf in vrfs {
            for (prefix, next_hop) in tables.routes(vrf) {
                let mut entry = RouteEntry {
                    vrf: vrf.0,
                    prefix: prefix.to_string(),
                    kind: String::new(),
                    gateways: Vec::new(),
                    devs: Vec::new(),
                    vni: None,
                    remote: None,
                    mac: None,
                };
                let describe = |nh: &NextHop, entry: &mut RouteEntry| match nh {
                    NextHop::Receive => entry.kind = "local".into(),
                    NextHop::Blackhole => entry.kind = "blackhole".into(),
                    NextHop::Unreachable => entry.kind = "unreachable".into(),
                    NextHop::Broadcast => entry.kind = "broadcast".into(),
                    NextHop::Connected { port } => {
                        if entry.kind.is_empty() {
                            entry.kind = "connected".into();
                        }
                        entry.devs.push(self.port_name(*port));
                    }
                    NextHop::Gateway { port, gateway } => {
                        if entry.kind.is_empty() {
                            entry.kind = "via".into();
                        }
                        entry.gateways.push(gateway.to_string());
                        entry.devs.push(self.port_name(*port));
                    }
                    NextHop::Vxlan {
                        tunnel,
                        remote,
                        mac,
                    } => {
                        entry.kind = "vxlan".into();
                        entry.vni = tables
                            .port(*tunnel)
                            .and_then(|p| p.vxlan())
                            .map(|params| params.vni);
                        entry.remote = Some(*remote);
                        entry.mac = Some(*mac);
                        entry.devs.push(self.port_name(*tunnel));
                    }
                    NextHop::Ecmp { .. } => {}
                };
                match &next_hop {
                    NextHop::Ecmp { members } => {
                        entry.kind = "multipath".into();
                        for member in members.iter() {
                            if let Some(nh) = tables.next_hop(*member) {
                                describe(nh, &mut entry);
                            }
                        }
                    }
                    nh => describe(nh, &mut entry),
                }
                out.push(entry);
            }
        }
        out
    }

    fn neighbors(&self) -> Vec<NeighborEntry> {
        let now_ns = self.now_ns();
        let tables = self.store.active();
        let mut out: Vec<NeighborEntry> = tables
            .neighbors()
            .iter()
            .map(|((port, ip), n)| NeighborEntry {
                dev: self.port_name(*port),
                ip: *ip,
                mac: n.mac,
                kind: n.kind,
                age_secs: (n.kind == NeighborKind::Learned)
                    .then(|| now_ns.saturating_sub(n.confirmed_ns) / 1_000_000_000),
            })
            .collect();
        out.sort_by(|a, b| (&a.dev, a.ip).cmp(&(&b.dev, b.ip)));
        out
    }

    /// Tunnels by VNI with their counters; per tunnel, the remote VTEPs that routes point at
    /// or that traffic was exchanged with, by address.
    fn vxlans(&self) -> Vec<VxlanEntry> {
        let counters = self.counters();
        let tables = self.store.active();
        // Routes per (tunnel, remote): a vxlan next hop is never an ECMP member, so its
        // reference count is its number of routes (one next hop per (tunnel, remote, MAC)).
        let mut routes: BTreeMap<(PortId, Ipv4Addr), u64> = BTreeMap::new();
        for (id, next_hop) in tables.next_hops().iter() {
            if let NextHop::Vxlan { tunnel, remote, .. } = next_hop {
                *routes.entry((*tunnel, *remote)).or_default() +=
                    u64::from(tables.next_hops().references(id));
            }
        }
        let mut out: Vec<VxlanEntry> = tables
            .ports()
            .filter_map(|port| {
                let params = port.vxlan()?;
                let c = counters
                    .ports
                    .get(port.id.0 as usize)
                    .copied()
                    .unwrap_or_default();
                let blank = |remote| RemoteEntry {
                    remote,
                    routes: 0,
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                };
                let mut remotes: BTreeMap<Ipv4Addr, RemoteEntry> = BTreeMap::new();
                let ours = (port.id, Ipv4Addr::UNSPECIFIED)..=(port.id, Ipv4Addr::BROADCAST);
                for (&(_, remote), &count) in routes.range(ours) {
                    remotes
                        .entry(remote)
                        .or_insert_with(|| blank(remote))
                        .routes = count;
                }
                for r in counters.remotes.iter().filter(|r| r.tunnel == port.id) {
                    let entry = remotes.entry(r.remote).or_insert_with(|| blank(r.remote));
                    entry.rx_packets += r.rx_packets;
                    entry.rx_bytes += r.rx_bytes;
                    entry.tx_packets += r.tx_packets;
                    entry.tx_bytes += r.tx_bytes;
                }
                Some(VxlanEntry {
                    vni: params.vni,
                    name: port.name.clone(),
                    id: port.id.0,
                    vrf: port.vrf.0,
                    local: params.local,
                    dev: self.port_name(params.uplink),
                    mac: port.mac,
                    mtu: port.mtu,
                    ttl: params.ttl,
                    df: params.df,
                    udp_checksum: params.udp_checksum,
                    addresses: addresses(port),
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    remotes: remotes.into_values().collect(),
                })
            })
            .collect();
        out.sort_by_key(|v| v.vni);
        out
    }

    fn stats(&self) -> StatsReport {
        let snapshots = self.snapshots();
        let mut counters = Counters::new();
        for s in &snapshots {
            counters.merge(&s.counters);
        }
        StatsReport {
            workers: self.workers.len(),
            generation: self.store.active().generation(),
            stages: Stage::ALL
                .iter()
                .map(|stage| (stage.name().to_string(), *counters.stage(*stage)))
                .collect(),
            port_names: self
                .store
                .active()
                .ports()
                .map(|p| (p.id.0, p.name.clone()))
                .collect(),
            tx_dropped: snapshots.iter().map(|s| s.tx_dropped).sum(),
            wakeups: snapshots.iter().map(|s| s.wakeups).sum(),
            tx_kick_nanos: snapshots.iter().map(|s| s.tx_kick_nanos).sum(),
            rx_poll_nanos: snapshots.iter().map(|s| s.rx_poll_nanos).sum(),
            rx_ring_full: snapshots.iter().map(|s| s.rx_ring_full).sum(),
            fill_ring_empty: snapshots.iter().map(|s| s.fill_ring_empty).sum(),
            counters,
        }
    }

    fn drops(&self) -> Vec<DropEntry> {
        let snapshots = self.snapshots();
        let mut counters = Counters::new();
        for s in &snapshots {
            counters.merge(&s.counters);
        }
        let mut out: Vec<DropEntry> = DropReason::ALL
            .iter()
            .map(|r| DropEntry {
                reason: r.name().into(),
                description: r.description().into(),
                count: counters.drops_for(*r),
            })
            .collect();
        out.push(DropEntry {
            reason: "xsk-kernel-rx-dropped".into(),
            description: "frames the kernel dropped before the dataplane saw them (RX ring full, no fill-ring frame, frame too long)".into(),
            count: snapshots.iter().map(|s| s.kernel_rx_dropped).sum(),
        });
        out
    }

    fn flows(&self, limit: usize) -> Vec<FlowEntry> {
        let mut out = Vec::new();
        for (index, worker) in self.workers.iter().enumerate() {
            let (reply_tx, reply_rx) = crossbeam::channel::bounded(1);
            if worker
                .commands
                .send(Command::Flows { reply: reply_tx })
                .is_err()
            {
                continue;
            }
            let Ok(records) = reply_rx.recv_timeout(Duration::from_secs(2)) else {
                continue;
            };
            for record in records {
                if out.len() >= limit {
                    return out;
                }
                out.push(FlowEntry {
                    worker: index,
                    out_dev: self.port_name(record.action.port()),
                    record,
                });
            }
        }
        out
    }

    /// Every worker's connection table: counters and capacity summed, connections (at most
    /// `limit` in all) tagged with their worker.
    fn connections(&self, limit: usize) -> ConntrackReport {
        let mut report = ConntrackReport::default();
        for (index, worker) in self.workers.iter().enumerate() {
            let (reply_tx, reply_rx) = crossbeam::channel::bounded(1);
            let wanted = limit.saturating_sub(report.connections.len());
            let command = Command::Connections {
                limit: wanted,
                reply: reply_tx,
            };
            if worker.commands.send(command).is_err() {
                continue;
            }
            let Ok(answer) = reply_rx.recv_timeout(Duration::from_secs(2)) else {
                continue;
            };
            report.counters.merge(&answer.counters);
            report.capacity += answer.capacity as u64;
            report.memory_bytes += answer.memory_bytes as u64;
            report
                .connections
                .extend(
                    answer
                        .connections
                        .into_iter()
                        .map(|connection| ConnectionEntry {
                            worker: index,
                            connection,
                        }),
                );
        }
        report
    }

    /// Flushes every worker's connection table; how many connections were forgotten.
    fn flush_connections(&self) -> u64 {
        let mut flushed = 0;
        for worker in &self.workers {
            let (reply_tx, reply_rx) = crossbeam::channel::bounded(1);
            if worker
                .commands
                .send(Command::FlushConnections { reply: reply_tx })
                .is_err()
            {
                continue;
            }
            if let Ok(n) = reply_rx.recv_timeout(Duration::from_secs(2)) {
                flushed += n as u64;
            }
        }
        flushed
    }

    /// Stops the workers and releases every port (XDP programs detach).
    pub fn shutdown(mut self) {
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in &names {
            if let Some(runtime) = self.ports.get_mut(name) {
                for queue in 0..runtime.info.rx_queues {
                    let _ = runtime.xdp.unregister_socket(queue);
                }
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
        self.ports.clear();
    }
}

/// Has the kernel keep a port's receive processing for our busy-polling worker: with
/// `napi_defer_hard_irqs` and `gro_flush_timeout` non-zero, a poll that ends leaves the
/// queue's NAPI context scheduled under a timer instead of handing it back to softirq context
/// (where veth would run it on the sender's CPU). The timer is short (20 µs): when the worker
/// is busy elsewhere (a TX kick of 32 frames takes ~50 µs in copy mode), the timer's softirq
/// polls on the worker's CPU; at 200 µs, veth's 256-frame receive ring overflowed at bursts
/// of 150k pps (measured: 134 of 450k frames lost at the sender, none at 20 or 50 µs).
/// Values already set are kept; failures are logged (busy polling then still works, with
/// the kernel also polling in softirq).
fn defer_to_busy_poll(ifname: &str) {
    for (knob, value) in [
        ("napi_defer_hard_irqs", "2"),
        ("gro_flush_timeout", "20000"),
    ] {
        let path = format!("/sys/class/net/{ifname}/{knob}");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim().parse::<u64>().is_ok_and(|v| v > 0) {
            continue;
        }
        match std::fs::write(&path, value) {
            Ok(()) => tracing::info!(port = ifname, knob, value, "set for busy polling"),
            Err(e) => tracing::warn!(port = ifname, knob, "cannot set for busy polling: {e}"),
        }
    }
}

/// A port's addresses as the protocol writes them.
fn addresses(port: &Port) -> Vec<Cidr> {
    port.addresses
        .iter()
        .map(|a| Cidr {
            addr: a.addr,
            len: a.prefix_len,
        })
        .collect()
}

/// Names the op a batch error is about.
fn describe_batch_error(ops: &[TableOp], error: &pipelines::tables::BatchError) -> String {
    match ops.get(error.index) {
        Some(op) => format!("{} (while applying {})", error.error, describe_op(op)),
        None => error.to_string(),
    }
}

fn describe_op(op: &TableOp) -> String {
    match op {
        TableOp::AddPort { name, .. } => format!("port {name}"),
        TableOp::AddVxlan { params, .. } => format!("vxlan {}", params.vni),
        TableOp::AddAddress { address, .. } => format!("address {address}"),
        TableOp::AddRoute { prefix, vrf, .. } => format!("route {prefix} in VRF {vrf}"),
        TableOp::DelRoute { prefix, vrf } => format!("deletion of route {prefix} in VRF {vrf}"),
        TableOp::AddNeighbor { ip, .. } => format!("neighbor {ip}"),
        other => format!("{other:?}"),
    }
}
