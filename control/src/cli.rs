//! The operator CLI `vrouterctl`: iproute2-style keyword parsing into the protocol's
//! [`Request`]/[`Change`] enums, one request to `vrouter-control`, and rendering of the answer
//! as aligned tables (or JSON with `-j`).
//!
//! ```text
//! vrouterctl [--socket PATH] [-j] [--timeout SECS] OBJECT VERB [ARGS]
//! ```
//! The layers are plain functions so each is tested without a socket:
//! - [`parse_args`]: words after the global flags -> [`Command`] (no I/O);
//! - [`build_request`]: [`Command`] -> [`Request`] (reads the file of `apply -f`/`batch -f`,
//!   which is parsed and validated locally, so a bad file is refused with its line number
//!   even when no daemon runs);
//! - [`render`]: [`Command`] + [`Response`] -> text or JSON;
//! - [`run`]: the above plus the [`Client`], mapped to an exit code ([`exit`]).
//!
//! Design decisions:
//! - Objects and verbs may be abbreviated to any prefix, resolved in a fixed order as `ip`
//!   does (`r` is `route`, `s` is `stats`, `d` is `delete`); argument keywords (`via`, `dev`,
//!   `vrf`, ...) must be spelled out, so a value can never be mistaken for a keyword.
//! - Only syntax and the checks that need no state are made here (prefix lengths, host bits,
//!   address families, VRF and MTU ranges, and [`Config::validate`] on a new port); whatever
//!   needs the desired state is the daemon's to refuse.
//! - `-j` prints the response's payload (the response object without its `type` tag) after
//!   the same local filtering as the table (`port list IFNAME`, `neigh list dev`, `drops`
//!   without `all`). Errors are always text on stderr.
//! - `route add ... vxlan VNI` without `vrf` sends no VRF ([`RouteChange::vrf`] is `None`):
//!   the daemon puts the route in the VNI's VRF, which only it knows.
//! - `vxlan add` replaces the whole tunnel (like a `[[vxlan]]` table): options not given
//!   return to their defaults.
//! - Not fixed: the protocol has no "VRF not given" for `port add`, so adding an address to
//!   a port outside VRF 0 needs its `vrf ID` repeated.

use crate::client::{error_code_name, response_name, Client, ClientError, DEFAULT_TIMEOUT};
use crate::config::{
    Cidr, Config, ConfigError, NeighborConfig, PathConfig, PortConfig, VxlanConfig,
    DEFAULT_VXLAN_TTL,
};
use crate::nat::{ServiceConfig, ServiceRef};
use crate::proto::{
    Change, DropEntry, ErrorCode, FlowEntry, NeighborEntry, PortChange, PortStatus, Request,
    Response, Role, RouteChange, RouteEntry, StatsReport, Status, VxlanEntry,
};
use clap::Parser;
use pipelines::tables::{DfPolicy, L4Protocol, MAX_MTU, MAX_VNI, MIN_MTU};
use pipelines::wire::EthernetAddress;
use pipelines::{IpPrefix, VrfId};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Socket of `vrouter-control` when neither `--socket` nor [`SOCKET_ENV`] is given.
pub const DEFAULT_SOCKET: &str = "/run/vrouter/control.sock";
/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "VROUTER_CONTROL_SOCKET";
/// Flows asked for by `flow list` without `limit`.
pub const DEFAULT_FLOW_LIMIT: usize = 1000;
/// Timeout of `apply` and `batch` without `--timeout` (a full sync can carry a million routes).
pub const BULK_TIMEOUT: Duration = Duration::from_secs(600);

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Usage error, bad file, request rejected, protocol error, timeout.
    pub const FAILED: u8 = 1;
    /// `vrouter-control` (or the dataplane behind it) cannot be reached.
    pub const UNREACHABLE: u8 = 2;
}

/// Global flags (parsed with clap; the rest is keyword-parsed by [`parse_args`]).
#[derive(Clone, Debug, Parser)]
#[command(
    name = "vrouterctl",
    version,
    about = "Operator CLI of the vRouter: configures and inspects the node dataplane through vrouter-control.",
    override_usage = "vrouterctl [--socket PATH] [-j] [--timeout SECS] OBJECT VERB [ARGS]",
    after_help = COMMANDS_HELP,
    disable_help_subcommand = true
)]
pub struct Options {
    /// Socket of vrouter-control [env: VROUTER_CONTROL_SOCKET] [default: /run/vrouter/control.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the answer as JSON (pretty) for scripts.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// Seconds to wait for an answer (0: forever) [default: 30; apply and batch: 600]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// OBJECT VERB [ARGS]: see the commands below.
    #[arg(
        value_name = "OBJECT VERB [ARGS]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl Options {
    /// The socket to use: `--socket`, else [`SOCKET_ENV`], else [`DEFAULT_SOCKET`].
    pub fn socket_path(&self) -> PathBuf {
        socket_path(self.socket.as_deref(), std::env::var_os(SOCKET_ENV))
    }
}

/// Resolves the socket path from the flag and the environment (an empty variable is unset).
pub fn socket_path(flag: Option<&Path>, env: Option<OsString>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    match env {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

const COMMANDS_HELP: &str = "\
Commands:
  port add IFNAME [vrf ID] [addr A.B.C.D/LEN]... [mtu N] [mac MAC]
  port del IFNAME
  port list [IFNAME]
  route add PREFIX via GATEWAY [dev IFNAME] [vrf ID]
  route add PREFIX dev IFNAME [vrf ID]
  route add PREFIX blackhole|unreachable [vrf ID]
  route add PREFIX nexthop via GATEWAY [dev IFNAME] nexthop ... [vrf ID]
  route add PREFIX vxlan VNI remote VTEP_IP [mac MAC] [vrf ID]
  route del PREFIX [vrf ID]
  route list [vrf ID]
  neigh add IP lladdr MAC dev IFNAME
  neigh del IP dev IFNAME
  neigh list [dev IFNAME]
  vxlan add VNI [vrf ID] local VTEP_IP dev UPLINK [mac MAC] [mtu N] [ttl N|inherit]
            [df set|unset|inherit] [udpcsum|noudpcsum] [addr A.B.C.D/32]...
  vxlan del VNI
  vxlan list [VNI]
  nat snat add src PREFIX out IFNAME [to IP] [ports LO-HI]
  nat snat del src PREFIX out IFNAME
  nat snat list
  service add VIP:PORT/tcp|udp [backend IP:PORT[@WEIGHT]]... [affinity client-ip [timeout SECS]] [vrf ID]
  service add node-port PORT/tcp|udp [backend ...]... [affinity ...] [vrf ID]
  service del VIP:PORT/PROTO|node-port PORT/PROTO [vrf ID]
  service backend add|del VIP:PORT/PROTO|node-port PORT/PROTO IP:PORT[@WEIGHT] [vrf ID]
  service list
  conntrack list [src PREFIX] [dst PREFIX] [proto tcp|udp|icmp] [limit N]
  conntrack flush
  conntrack stats
  acl add IFNAME in|out [priority N] [src PREFIX] [dst PREFIX] [proto P] [sport PORTS] [dport PORTS]
          [icmp-type T [code C]] allow|deny|reject
  acl del IFNAME in|out [rule N]
  acl list [IFNAME]
  flow list [limit N]
  stats
  drops [all]
  status
  apply -f FILE           (TOML desired state, one transaction; - is stdin)
  batch -f FILE           (one change command per line, one transaction; - is stdin)
  show config
  help [OBJECT]

Exit codes: 0 done, 1 usage error or request refused, 2 vrouter-control unreachable.
See docs/cli-reference.md.";

/// Usage lines by object, for `help OBJECT` and after a usage error.
const USAGE: &[(&str, &str)] = &[
    (
        "port",
        "port add IFNAME [vrf ID] [addr A.B.C.D/LEN]... [mtu N] [mac MAC]",
    ),
    ("port", "port del IFNAME"),
    ("port", "port list [IFNAME]"),
    (
        "route",
        "route add PREFIX via GATEWAY [dev IFNAME] [vrf ID]",
    ),
    ("route", "route add PREFIX dev IFNAME [vrf ID]"),
    ("route", "route add PREFIX blackhole|unreachable [vrf ID]"),
    (
        "route",
        "route add PREFIX nexthop via GATEWAY [dev IFNAME] nexthop ... [vrf ID]",
    ),
    (
        "route",
        "route add PREFIX vxlan VNI remote VTEP_IP [mac MAC] [vrf ID]",
    ),
    ("route", "route del PREFIX [vrf ID]"),
    ("route", "route list [vrf ID]"),
    ("neigh", "neigh add IP lladdr MAC dev IFNAME"),
    ("neigh", "neigh del IP dev IFNAME"),
    ("neigh", "neigh list [dev IFNAME]"),
    (
        "vxlan",
        "vxlan add VNI [vrf ID] local VTEP_IP dev UPLINK [mac MAC] [mtu N] [ttl N|inherit] [df set|unset|inherit] [udpcsum|noudpcsum] [addr A.B.C.D/32]...",
    ),
    ("vxlan", "vxlan del VNI"),
    ("vxlan", "vxlan list [VNI]"),
    (
        "nat",
        "nat snat add src PREFIX out IFNAME [to IP] [ports LO-HI]",
    ),
    ("nat", "nat snat del src PREFIX out IFNAME"),
    ("nat", "nat snat list"),
    (
        "service",
        "service add VIP:PORT/tcp|udp [backend IP:PORT[@WEIGHT]]... [affinity client-ip [timeout SECS]] [vrf ID]",
    ),
    (
        "service",
        "service add node-port PORT/tcp|udp [backend IP:PORT[@WEIGHT]]... [affinity client-ip [timeout SECS]] [vrf ID]",
    ),
    (
        "service",
        "service del VIP:PORT/PROTO|node-port PORT/PROTO [vrf ID]",
    ),
    (
        "service",
        "service backend add|del VIP:PORT/PROTO|node-port PORT/PROTO IP:PORT[@WEIGHT] [vrf ID]",
    ),
    ("service", "service list"),
    (
        "conntrack",
        "conntrack list [src PREFIX] [dst PREFIX] [proto tcp|udp|icmp] [limit N]",
    ),
    ("conntrack", "conntrack flush"),
    ("conntrack", "conntrack stats"),
    (
        "acl",
        "acl add IFNAME in|out [priority N] [src PREFIX] [dst PREFIX] [proto P] [sport PORTS] [dport PORTS] [icmp-type T [code C]] allow|deny|reject",
    ),
    ("acl", "acl del IFNAME in|out [rule N]"),
    ("acl", "acl list [IFNAME]"),
    ("flow", "flow list [limit N]"),
    ("stats", "stats"),
    ("drops", "drops [all]"),
    ("status", "status"),
    ("apply", "apply -f FILE"),
    ("batch", "batch -f FILE"),
    ("show", "show config"),
    ("help", "help [OBJECT]"),
];

/// Usage of one object (every object when `None`), one command per line.
pub fn usage(object: Option<&str>) -> String {
    let mut text = String::from("Usage: vrouterctl [--socket PATH] [-j] [--timeout SECS] ");
    let lines: Vec<&str> = USAGE
        .iter()
        .filter(|(o, _)| object.is_none_or(|want| want == *o))
        .map(|(_, line)| *line)
        .collect();
    if lines.len() == 1 {
        text.push_str(lines[0]);
        text.push('\n');
        return text;
    }
    text.push_str("OBJECT VERB [ARGS]\n");
    for line in lines {
        let _ = writeln!(text, "       vrouterctl {line}");
    }
    text
}

/// A command line that is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    /// What was wrong.
    pub message: String,
    /// The object whose usage to show, if known.
    pub object: Option<&'static str>,
}

impl UsageError {
    fn new(object: Option<&'static str>, message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            object,
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `port|route|neigh|vxlan add|del ...`: changes applied as one transaction.
    Change(Vec<Change>),
    /// `apply -f FILE`: the file's desired state replaces the current one (`-` is stdin).
    ApplyFile(PathBuf),
    /// `batch -f FILE`: change commands, one per line, as one transaction.
    Batch(PathBuf),
    /// `show config`.
    ShowConfig,
    /// `port list [IFNAME]`.
    PortList {
        /// Only this port.
        name: Option<String>,
    },
    /// `route list [vrf ID]`.
    RouteList {
        /// Only this VRF.
        vrf: Option<u32>,
    },
    /// `neigh list [dev IFNAME]`.
    NeighList {
        /// Only this port.
        dev: Option<String>,
    },
    /// `vxlan list [VNI]`.
    VxlanList {
        /// Only this VNI.
        vni: Option<u32>,
    },
    /// `nat snat list`.
    SnatList,
    /// `service list`.
    ServiceList,
    /// `conntrack list [...]`.
    ConntrackList(ConntrackFilter),
    /// `conntrack flush`.
    ConntrackFlush,
    /// `conntrack stats`.
    ConntrackStats,
    /// `acl list [IFNAME | vrf N]`.
    AclList {
        /// Only the set(s) of this port or VRF.
        target: Option<crate::acl::AclAttachment>,
    },
    /// `flow list [limit N]`.
    FlowList {
        /// At most this many flows.
        limit: usize,
    },
    /// `stats`.
    Stats,
    /// `drops [all]`.
    Drops {
        /// Show zero counters too.
        all: bool,
    },
    /// `status`.
    Status,
    /// `help [OBJECT]`.
    Help {
        /// The object, if one was named.
        object: Option<&'static str>,
    },
}

impl Command {
    /// The request for commands that need no file, `None` for `apply`, `batch` and `help`.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Command::Change(changes) => Request::Apply {
                changes: changes.clone(),
            },
            Command::ShowConfig => Request::ShowConfig,
            Command::PortList { .. } => Request::Ports,
            Command::RouteList { vrf } => Request::Routes { vrf: *vrf },
            Command::NeighList { .. } => Request::Neighbors,
            Command::VxlanList { .. } => Request::Vxlans,
            Command::FlowList { limit } => Request::Flows { limit: *limit },
            Command::SnatList | Command::ServiceList | Command::AclList { .. } => {
                Request::ShowConfig
            }
            Command::ConntrackList(filter) => Request::Connections {
                limit: filter.limit,
            },
            Command::ConntrackFlush => Request::FlushConnections,
            Command::ConntrackStats => Request::Connections { limit: 0 },
            Command::Stats => Request::Stats,
            Command::Drops { .. } => Request::Drops,
            Command::Status => Request::Status,
            Command::ApplyFile(_) | Command::Batch(_) | Command::Help { .. } => return None,
        })
    }

    /// True for `apply` and `batch` (long default timeout).
    pub fn is_bulk(&self) -> bool {
        matches!(self, Command::ApplyFile(_) | Command::Batch(_))
    }
}

/// Objects in prefix-resolution order (`s` is `stats`, `st` too, `statu` is `status`).
const OBJECTS: &[(&str, &str)] = &[
    ("port", "port"),
    ("route", "route"),
    ("neighbor", "neigh"),
    ("neighbour", "neigh"),
    ("vxlan", "vxlan"),
    ("flow", "flow"),
    ("stats", "stats"),
    ("statistics", "stats"),
    ("status", "status"),
    ("drops", "drops"),
    ("dropstats", "drops"),
    ("apply", "apply"),
    ("show", "show"),
    ("batch", "batch"),
    ("help", "help"),
    ("nat", "nat"),
    ("service", "service"),
    ("svc", "service"),
    ("conntrack", "conntrack"),
    ("ct", "conntrack"),
    ("acl", "acl"),
];

const OBJECT_LIST: &str =
    "port, route, neigh, vxlan, nat, service, conntrack, acl, flow, stats, drops, \
     status, apply, batch, show, help";

/// Resolves `word` against `table` (keyword, value): an exact match, else the first keyword
/// in table order that `word` is a prefix of.
fn resolve<T: Copy>(word: &str, table: &[(&str, T)]) -> Option<T> {
    if word.is_empty() {
        return None;
    }
    table
        .iter()
        .find(|(k, _)| *k == word)
        .or_else(|| table.iter().find(|(k, _)| k.starts_with(word)))
        .map(|(_, v)| *v)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Add,
    Delete,
    List,
}

const CHANGE_VERBS: &[(&str, Verb)] = &[
    ("add", Verb::Add),
    ("replace", Verb::Add),
    ("change", Verb::Add),
    ("delete", Verb::Delete),
    ("remove", Verb::Delete),
    ("list", Verb::List),
    ("show", Verb::List),
    ("ls", Verb::List),
    ("lst", Verb::List),
];

const SHOW_VERBS: &[(&str, Verb)] = &[
    ("list", Verb::List),
    ("show", Verb::List),
    ("ls", Verb::List),
    ("lst", Verb::List),
];

/// The words of one command, consumed left to right.
struct Words<'a> {
    object: &'static str,
    words: &'a [String],
    position: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let word = self.words.get(self.position)?;
        self.position += 1;
        Some(word.as_str())
    }

    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.position).map(String::as_str)
    }

    fn error(&self, message: impl Into<String>) -> UsageError {
        UsageError::new(Some(self.object), message)
    }

    /// The value after `keyword`.
    fn value(&mut self, keyword: &str, what: &str) -> Result<&'a str, UsageError> {
        self.next()
            .ok_or_else(|| self.error(format!("{keyword} needs a value ({what})")))
    }

    /// A required positional argument.
    fn required(&mut self, command: &str, what: &str) -> Result<&'a str, UsageError> {
        self.next()
            .ok_or_else(|| self.error(format!("{command} needs {what}")))
    }

    /// Fails if words are left.
    fn finish(&self, command: &str) -> Result<(), UsageError> {
        match self.peek() {
            None => Ok(()),
            Some(word) => Err(self.error(format!("unexpected '{word}' after {command}"))),
        }
    }

    fn verb(&mut self, table: &[(&str, Verb)], default: Option<Verb>) -> Result<Verb, UsageError> {
        match self.peek() {
            None => default.ok_or_else(|| {
                self.error(format!(
                    "{} needs a verb: {}",
                    self.object,
                    verb_names(table)
                ))
            }),
            Some(word) => match resolve(word, table) {
                Some(verb) => {
                    self.position += 1;
                    Ok(verb)
                }
                None => Err(self.error(format!(
                    "unknown verb '{word}' for {}; expected one of {}",
                    self.object,
                    verb_names(table)
                ))),
            },
        }
    }
}

fn verb_names(table: &[(&str, Verb)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in table {
        if !["replace", "change", "remove", "show", "ls", "lst"].contains(name) {
            names.push(name);
        }
    }
    names.join(", ")
}

/// Sets an option once.
fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    keyword: &str,
    words: &Words<'_>,
) -> Result<(), UsageError> {
    if slot.is_some() {
        return Err(words.error(format!("{keyword} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses the words after the global flags into a command.
pub fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    let Some(first) = args.first() else {
        return Err(UsageError::new(
            None,
            format!("missing object; expected one of {OBJECT_LIST}"),
        ));
    };
    if first.starts_with('-') && first.len() > 1 {
        return Err(UsageError::new(
            None,
            format!("unknown option '{first}' (options go before OBJECT: --socket PATH, -j, --timeout SECS)"),
        ));
    }
    let Some(object) = resolve(first, OBJECTS) else {
        return Err(UsageError::new(
            None,
            format!("unknown object '{first}'; expected one of {OBJECT_LIST}"),
        ));
    };
    let mut words = Words {
        object,
        words: &args[1..],
        position: 0,
    };
    if object != "help" && matches!(words.peek(), Some("help" | "-h" | "--help")) {
        return Ok(Command::Help {
            object: Some(object),
        });
    }
    match object {
        "port" => parse_port(&mut words),
        "route" => parse_route(&mut words),
        "neigh" => parse_neigh(&mut words),
        "vxlan" => parse_vxlan(&mut words),
        "nat" => parse_nat(&mut words),
        "service" => parse_service(&mut words),
        "conntrack" => parse_conntrack(&mut words),
        "acl" => parse_acl(&mut words),
        "flow" => {
            words.verb(SHOW_VERBS, Some(Verb::List))?;
            let mut limit = None;
            while let Some(word) = words.next() {
                match word {
                    "limit" => {
                        let n = parse_limit(&mut words, "a number of flows")?;
                        set_once(&mut limit, n, "limit", &words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                            "unexpected '{other}' in flow list; expected limit N"
                        )))
                    }
                }
            }
            Ok(Command::FlowList {
                limit: limit.unwrap_or(DEFAULT_FLOW_LIMIT),
            })
        }
        "stats" => {
            words.verb(SHOW_VERBS, Some(Verb::List))?;
            words.finish("stats")?;
            Ok(Command::Stats)
        }
        "status" => {
            words.verb(SHOW_VERBS, Some(Verb::List))?;
            words.finish("status")?;
            Ok(Command::Status)
        }
        "drops" => {
            if words.peek().is_some_and(|w| w != "all") {
                words.verb(SHOW_VERBS, None)?;
            }
            let all = words.peek() == Some("all");
            if all {
                words.next();
            }
            words.finish("drops")?;
            Ok(Command::Drops { all })
        }
        "apply" => Ok(Command::ApplyFile(parse_file_flag(&mut words, "apply")?)),
        "batch" => Ok(Command::Batch(parse_file_flag(&mut words, "batch")?)),
        "show" => {
            let what = words.required("show", "what to show: config")?;
            if resolve(what, &[("config", ())]).is_none() {
                return Err(words.error(format!(
                    "unknown 'show {what}'; expected show config (see also port list, route list, ...)"
                )));
            }
            words.finish("show config")?;
            Ok(Command::ShowConfig)
        }
        _ => {
            // help [OBJECT]
            let topic = match words.next() {
                None => None,
                Some(word) => Some(resolve(word, OBJECTS).ok_or_else(|| {
                    words.error(format!(
                        "unknown object '{word}'; expected one of {OBJECT_LIST}"
                    ))
                })?),
            };
            words.finish("help")?;
            Ok(Command::Help { object: topic })
        }
    }
}

fn parse_file_flag(words: &mut Words<'_>, command: &str) -> Result<PathBuf, UsageError> {
    match words.next() {
        Some("-f" | "--file" | "file") => {}
        Some(other) => {
            return Err(words.error(format!("unexpected '{other}'; use {command} -f FILE")))
        }
        None => return Err(words.error(format!("{command} needs -f FILE"))),
    }
    let path = words.value("-f", "a file, or - for stdin")?;
    words.finish(&format!("{command} -f FILE"))?;
    Ok(PathBuf::from(path))
}

/// Interface names as the kernel takes them (the same rule as the config file).
fn parse_ifname(words: &Words<'_>, name: &str) -> Result<String, UsageError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(words.error(format!(
            "bad interface name '{name}': 1-15 characters without '/' or spaces"
        )));
    }
    Ok(name.to_string())
}

fn parse_vrf(words: &Words<'_>, value: &str) -> Result<u32, UsageError> {
    match value.parse::<u32>() {
        Ok(vrf) if vrf <= VrfId::MAX => Ok(vrf),
        Ok(vrf) => Err(words.error(format!("bad vrf {vrf}: VRF id exceeds {}", VrfId::MAX))),
        Err(_) => Err(words.error(format!(
            "bad vrf '{value}': expected a number 0-{}",
            VrfId::MAX
        ))),
    }
}

fn parse_ip(words: &Words<'_>, what: &str, value: &str) -> Result<IpAddr, UsageError> {
    value
        .parse()
        .map_err(|_| words.error(format!("bad {what} '{value}': not an IPv4 or IPv6 address")))
}

fn parse_ipv4(words: &Words<'_>, what: &str, value: &str) -> Result<Ipv4Addr, UsageError> {
    value
        .parse()
        .map_err(|_| words.error(format!("bad {what} '{value}': not an IPv4 address")))
}

fn parse_vni(words: &Words<'_>, value: &str) -> Result<u32, UsageError> {
    match value.parse::<u32>() {
        Ok(vni) if vni <= MAX_VNI => Ok(vni),
        Ok(vni) => Err(words.error(format!("bad vni {vni}: VNI exceeds {MAX_VNI}"))),
        Err(_) => Err(words.error(format!("bad vni '{value}': expected a number 0-{MAX_VNI}"))),
    }
}

fn parse_mac(words: &Words<'_>, what: &str, value: &str) -> Result<EthernetAddress, UsageError> {
    value
        .parse()
        .map_err(|e| words.error(format!("bad {what} '{value}': {e}")))
}

/// A route prefix; `default` is `0.0.0.0/0` (or `::/0` when `ipv6`).
fn parse_prefix(words: &Words<'_>, value: &str, ipv6: bool) -> Result<IpPrefix, UsageError> {
    if value == "default" {
        let text = if ipv6 { "::/0" } else { "0.0.0.0/0" };
        return text
            .parse()
            .map_err(|e| words.error(format!("bad prefix {value}: {e}")));
    }
    value.parse::<IpPrefix>().map_err(|e| {
        let reason = match e {
            pipelines::lpm::LpmError::BadPrefixLength { max, .. } => {
                format!("prefix length exceeds {max}")
            }
            other => other.to_string(),
        };
        words.error(format!("bad prefix {value}: {reason}"))
    })
}

fn parse_port(words: &mut Words<'_>) -> Result<Command, UsageError> {
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            let mut name = words.next();
            if name == Some("dev") {
                name = Some(words.value("dev", "an interface name")?);
            }
            let name = name.map(|n| parse_ifname(words, n)).transpose()?;
            words.finish("port list [IFNAME]")?;
            Ok(Command::PortList { name })
        }
        Verb::Delete => {
            let name = words.required("port del", "an interface name")?;
            let name = parse_ifname(words, name)?;
            words.finish("port del IFNAME")?;
            Ok(Command::Change(vec![Change::DelPort { name }]))
        }
        Verb::Add => {
            let name = words.required("port add", "an interface name")?;
            let name = parse_ifname(words, name)?;
            let mut vrf = None;
            let mut mtu = None;
            let mut mac = None;
            let mut addresses: Vec<Cidr> = Vec::new();
            while let Some(word) = words.next() {
                match word {
                    "vrf" => {
                        let value = words.value("vrf", "a VRF id")?;
                        let id = parse_vrf(words, value)?;
                        set_once(&mut vrf, id, "vrf", words)?;
                    }
                    "addr" | "address" => {
                        let value = words.value(word, "ADDRESS/LEN")?;
                        let cidr: Cidr = value
                            .parse()
                            .map_err(|e| words.error(format!("bad address {value}: {e}")))?;
                        if addresses.iter().any(|a| a.addr == cidr.addr) {
                            return Err(words.error(format!("address {} given twice", cidr.addr)));
                        }
                        addresses.push(cidr);
                    }
                    "mtu" => {
                        let value = words.value("mtu", "a number of bytes")?;
                        let n = value
                            .parse::<u16>()
                            .ok()
                            .filter(|n| (MIN_MTU..=MAX_MTU).contains(n))
                            .ok_or_else(|| {
                                words.error(format!(
                                    "bad mtu '{value}': expected a number {MIN_MTU}-{MAX_MTU}"
                                ))
                            })?;
                        set_once(&mut mtu, n, "mtu", words)?;
                    }
                    "mac" | "lladdr" => {
                        let value = words.value(word, "a MAC address")?;
                        let m = parse_mac(words, "mac", value)?;
                        set_once(&mut mac, m, "mac", words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                            "unexpected '{other}' in port add; expected vrf, addr, mtu or mac"
                        )))
                    }
                }
            }
            let port = PortConfig {
                name,
                vrf: vrf.unwrap_or(0),
                addresses,
                mtu,
                mac,
            };
            // The same item checks the daemon runs on a config file.
            let single = Config {
                ports: vec![port.clone()],
                ..Config::default()
            };
            single
                .validate()
                .map_err(|e| words.error(config_error_text(&e)))?;
            Ok(Command::Change(vec![Change::AddPort(PortChange {
                vrf,
                ..PortChange::from(port)
            })]))
        }
    }
}

/// A config error without its `Invalid` line (a command line has no line).
fn config_error_text(error: &ConfigError) -> String {
    match error {
        ConfigError::Invalid { what, message, .. } => format!("{what}: {message}"),
        other => other.to_string(),
    }
}

fn parse_route(words: &mut Words<'_>) -> Result<Command, UsageError> {
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            let mut vrf = None;
            while let Some(word) = words.next() {
                match word {
                    "vrf" | "table" => {
                        let value = words.value(word, "a VRF id")?;
                        let id = parse_vrf(words, value)?;
                        set_once(&mut vrf, id, "vrf", words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                            "unexpected '{other}' in route list; expected vrf ID"
                        )))
                    }
                }
            }
            Ok(Command::RouteList { vrf })
        }
        Verb::Delete => {
            let text = words.required("route del", "a prefix")?;
            let mut vrf = None;
            while let Some(word) = words.next() {
                match word {
                    "vrf" | "table" => {
                        let value = words.value(word, "a VRF id")?;
                        let id = parse_vrf(words, value)?;
                        set_once(&mut vrf, id, "vrf", words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                        "unexpected '{other}' in route del; routes are deleted by PREFIX [vrf ID]"
                    )))
                    }
                }
            }
            let prefix = parse_prefix(words, text, false)?;
            Ok(Command::Change(vec![Change::DelRoute {
                vrf: vrf.unwrap_or(0),
                prefix,
            }]))
        }
        Verb::Add => parse_route_add(words),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DropKind {
    Blackhole,
    Unreachable,
}

fn parse_route_add(words: &mut Words<'_>) -> Result<Command, UsageError> {
    let mut kind: Option<DropKind> = None;
    let drop_kind = |word: &str| match word {
        "blackhole" => Some(DropKind::Blackhole),
        "unreachable" => Some(DropKind::Unreachable),
        _ => None,
    };
    // `ip route add blackhole PREFIX` puts the type first.
    if let Some(k) = words.peek().and_then(drop_kind) {
        words.next();
        kind = Some(k);
    }
    let text = words.required("route add", "a prefix")?;
    let mut vrf = None;
    let mut via = None;
    let mut dev = None;
    let mut nexthops: Vec<PathConfig> = Vec::new();
    let mut vxlan = None;
    let mut remote = None;
    let mut mac = None;
    while let Some(word) = words.next() {
        if let Some(k) = drop_kind(word) {
            if kind.is_some() {
                return Err(words.error("give blackhole or unreachable once"));
            }
            kind = Some(k);
            continue;
        }
        match word {
            "via" => {
                let value = words.value("via", "a gateway address")?;
                let gateway = parse_ip(words, "gateway", value)?;
                match nexthops.last_mut() {
                    Some(path) => set_once(&mut path.via, gateway, "via in one nexthop", words)?,
                    None => set_once(&mut via, gateway, "via", words)?,
                }
            }
            "dev" | "oif" => {
                let value = words.value(word, "an interface name")?;
                let name = parse_ifname(words, value)?;
                match nexthops.last_mut() {
                    Some(path) => set_once(&mut path.dev, name, "dev in one nexthop", words)?,
                    None => set_once(&mut dev, name, "dev", words)?,
                }
            }
            "vrf" | "table" => {
                let value = words.value(word, "a VRF id")?;
                let id = parse_vrf(words, value)?;
                set_once(&mut vrf, id, "vrf", words)?;
            }
            "nexthop" | "nh" => {
                if via.is_some() || dev.is_some() {
                    return Err(words.error(
                        "give either via/dev or nexthop paths, not both (put via and dev after each nexthop)",
                    ));
                }
                if let Some(index) = nexthops.iter().position(|p| p.via.is_none() && p.dev.is_none()) {
                    return Err(words.error(format!("nexthop {} needs via or dev", index + 1)));
                }
                nexthops.push(PathConfig { via: None, dev: None });
            }
            "vxlan" => {
                let value = words.value("vxlan", "a VNI")?;
                let vni = parse_vni(words, value)?;
                set_once(&mut vxlan, vni, "vxlan", words)?;
            }
            "remote" => {
                let value = words.value("remote", "the remote VTEP's IPv4 address")?;
                let address = parse_ipv4(words, "remote", value)?;
                set_once(&mut remote, address, "remote", words)?;
            }
            "mac" | "lladdr" => {
                let value = words.value(word, "the inner destination MAC")?;
                let m = parse_mac(words, "mac", value)?;
                if !m.is_unicast() || m.0 == [0; 6] {
                    return Err(words.error(format!("bad mac '{value}': not unicast")));
                }
                set_once(&mut mac, m, "mac", words)?;
            }
            other => {
                return Err(words.error(format!(
                    "unexpected '{other}' in route add; expected via, dev, vrf, nexthop, vxlan, blackhole or unreachable"
                )))
            }
        }
    }
    if let Some(index) = nexthops
        .iter()
        .position(|p| p.via.is_none() && p.dev.is_none())
    {
        return Err(words.error(format!("nexthop {} needs via or dev", index + 1)));
    }
    let gateways: Vec<IpAddr> = via
        .iter()
        .copied()
        .chain(nexthops.iter().filter_map(|p| p.via))
        .collect();
    let ipv6 = gateways.first().is_some_and(IpAddr::is_ipv6);
    let prefix = parse_prefix(words, text, ipv6)?;
    for gateway in &gateways {
        if gateway.is_ipv6() != matches!(prefix, IpPrefix::V6(_)) {
            return Err(words.error(format!(
                "bad gateway {gateway}: not of the family of {prefix}"
            )));
        }
    }
    match vxlan {
        Some(vni) if remote.is_none() => {
            return Err(words.error(format!("route add {text} vxlan {vni} needs remote VTEP_IP")))
        }
        None if remote.is_some() || mac.is_some() => {
            return Err(words.error("remote and mac are for vxlan routes: give vxlan VNI"))
        }
        _ => {}
    }
    let given = [
        via.is_some() || dev.is_some(),
        kind.is_some(),
        !nexthops.is_empty(),
        vxlan.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(words.error(format!(
                "route add {text} needs via GATEWAY, dev IFNAME, blackhole, unreachable, nexthop or vxlan VNI"
            )))
        }
        1 => {}
        _ => {
            return Err(words.error(
                "give exactly one of via/dev, blackhole, unreachable, nexthop or vxlan",
            ))
        }
    }
    Ok(Command::Change(vec![Change::AddRoute(RouteChange {
        prefix,
        vrf,
        via,
        dev,
        blackhole: kind == Some(DropKind::Blackhole),
        unreachable: kind == Some(DropKind::Unreachable),
        nexthops,
        vxlan,
        remote,
        mac,
    })]))
}

fn parse_neigh(words: &mut Words<'_>) -> Result<Command, UsageError> {
    let verb = words.verb(CHANGE_VERBS, Some(Verb::List))?;
    if verb == Verb::List {
        let mut dev = None;
        while let Some(word) = words.next() {
            match word {
                "dev" => {
                    let value = words.value("dev", "an interface name")?;
                    let name = parse_ifname(words, value)?;
                    set_once(&mut dev, name, "dev", words)?;
                }
                other => {
                    return Err(words.error(format!(
                        "unexpected '{other}' in neigh list; expected dev IFNAME"
                    )))
                }
            }
        }
        return Ok(Command::NeighList { dev });
    }
    let command = if verb == Verb::Add {
        "neigh add"
    } else {
        "neigh del"
    };
    let text = words.required(command, "an IP address")?;
    let ip = parse_ip(words, "address", text)?;
    let mut mac = None;
    let mut dev = None;
    while let Some(word) = words.next() {
        match word {
            "lladdr" | "mac" if verb == Verb::Add => {
                let value = words.value(word, "a MAC address")?;
                let m = parse_mac(words, "lladdr", value)?;
                set_once(&mut mac, m, "lladdr", words)?;
            }
            "dev" => {
                let value = words.value("dev", "an interface name")?;
                let name = parse_ifname(words, value)?;
                set_once(&mut dev, name, "dev", words)?;
            }
            other => {
                let expected = if verb == Verb::Add {
                    "lladdr MAC dev IFNAME"
                } else {
                    "dev IFNAME"
                };
                return Err(words.error(format!(
                    "unexpected '{other}' in {command}; expected {expected}"
                )));
            }
        }
    }
    let dev = dev.ok_or_else(|| words.error(format!("{command} {ip} needs dev IFNAME")))?;
    if verb == Verb::Delete {
        return Ok(Command::Change(vec![Change::DelNeighbor { dev, ip }]));
    }
    let mac = mac.ok_or_else(|| words.error(format!("neigh add {ip} needs lladdr MAC")))?;
    Ok(Command::Change(vec![Change::AddNeighbor(NeighborConfig {
        ip,
        mac,
        dev,
    })]))
}

fn parse_vxlan(words: &mut Words<'_>) -> Result<Command, UsageError> {
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            let vni = words.next().map(|v| parse_vni(words, v)).transpose()?;
            words.finish("vxlan list [VNI]")?;
            Ok(Command::VxlanList { vni })
        }
        Verb::Delete => {
            let value = words.required("vxlan del", "a VNI")?;
            let vni = parse_vni(words, value)?;
            words.finish("vxlan del VNI")?;
            Ok(Command::Change(vec![Change::DelVxlan { vni }]))
        }
        Verb::Add => parse_vxlan_add(words),
    }
}

fn parse_vxlan_add(words: &mut Words<'_>) -> Result<Command, UsageError> {
    let value = words.required("vxlan add", "a VNI")?;
    let vni = parse_vni(words, value)?;
    let mut vrf = None;
    let mut local = None;
    let mut dev = None;
    let mut mac = None;
    let mut mtu = None;
    let mut ttl = None;
    let mut df = None;
    let mut udp_checksum = None;
    let mut addresses: Vec<Cidr> = Vec::new();
    while let Some(word) = words.next() {
        match word {
            "vrf" | "table" => {
                let value = words.value(word, "a VRF id")?;
                let id = parse_vrf(words, value)?;
                set_once(&mut vrf, id, "vrf", words)?;
            }
            "local" => {
                let value = words.value("local", "the local VTEP's IPv4 address")?;
                let address = parse_ipv4(words, "local", value)?;
                set_once(&mut local, address, "local", words)?;
            }
            "dev" => {
                let value = words.value("dev", "the uplink's interface name")?;
                let name = parse_ifname(words, value)?;
                set_once(&mut dev, name, "dev", words)?;
            }
            "mac" | "lladdr" => {
                let value = words.value(word, "a MAC address")?;
                let m = parse_mac(words, "mac", value)?;
                set_once(&mut mac, m, "mac", words)?;
            }
            "mtu" => {
                let value = words.value("mtu", "a number of bytes")?;
                let n = value
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (MIN_MTU..=MAX_MTU).contains(n))
                    .ok_or_else(|| {
                        words.error(format!(
                            "bad mtu '{value}': expected a number {MIN_MTU}-{MAX_MTU}"
                        ))
                    })?;
                set_once(&mut mtu, n, "mtu", words)?;
            }
            "ttl" => {
                let value = words.value("ttl", "1-255 or inherit")?;
                // 0 is how the config file says "inherit"; on the command line `ttl 0`
                // would read as Linux's "default TTL", so only the keyword is taken.
                let n = match value {
                    "inherit" => 0,
                    _ => value.parse::<u8>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        words.error(format!("bad ttl '{value}': expected 1-255 or inherit"))
                    })?,
                };
                set_once(&mut ttl, n, "ttl", words)?;
            }
            "df" => {
                let value = words.value("df", "set, unset or inherit")?;
                let policy = match value {
                    "set" => DfPolicy::Set,
                    "unset" => DfPolicy::Unset,
                    "inherit" => DfPolicy::Inherit,
                    _ => {
                        return Err(words.error(format!(
                            "bad df '{value}': expected set, unset or inherit"
                        )))
                    }
                };
                set_once(&mut df, policy, "df", words)?;
            }
            "udpcsum" | "noudpcsum" => {
                set_once(&mut udp_checksum, word == "udpcsum", "udpcsum/noudpcsum", words)?;
            }
            "addr" | "address" => {
                let value = words.value(word, "ADDRESS/32 or ADDRESS/128")?;
                let cidr: Cidr = value
                    .parse()
                    .map_err(|e| words.error(format!("bad address {value}: {e}")))?;
                if addresses.iter().any(|a| a.addr == cidr.addr) {
                    return Err(words.error(format!("address {} given twice", cidr.addr)));
                }
                addresses.push(cidr);
            }
            other => {
                return Err(words.error(format!(
                    "unexpected '{other}' in vxlan add; expected vrf, local, dev, mac, mtu, ttl, df, udpcsum, noudpcsum or addr"
                )))
            }
        }
    }
    let local = local.ok_or_else(|| words.error(format!("vxlan add {vni} needs local VTEP_IP")))?;
    let dev = dev.ok_or_else(|| words.error(format!("vxlan add {vni} needs dev UPLINK")))?;
    if let Some(m) = mac.filter(|m| !m.is_unicast() || m.0 == [0; 6]) {
        return Err(words.error(format!("bad mac '{m}': not unicast")));
    }
    if let Some(a) = addresses
        .iter()
        .find(|a| a.len != if a.addr.is_ipv4() { 32 } else { 128 })
    {
        return Err(words.error(format!(
            "bad address {a}: a tunnel takes host addresses only (/32, /128)"
        )));
    }
    Ok(Command::Change(vec![Change::AddVxlan(VxlanConfig {
        mac,
        mtu,
        ttl: ttl.unwrap_or(DEFAULT_VXLAN_TTL),
        df: df.unwrap_or_default(),
        udp_checksum: udp_checksum.unwrap_or(false),
        addresses,
        ..VxlanConfig::new(vni, vrf.unwrap_or(0), local, dev)
    })]))
}

/// Parses a batch file: one change command per line (`port`, `route`, `neigh`, `vxlan` with
/// `add` or `del`), `#` comments and blank lines ignored. Errors name the line.
pub fn parse_batch(text: &str) -> Result<Vec<Change>, UsageError> {
    let mut changes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            continue;
        }
        let line_error = |message: String, object| {
            UsageError::new(object, format!("line {}: {message}", index + 1))
        };
        match parse_args(&words) {
            Ok(Command::Change(more)) => changes.extend(more),
            Ok(_) => {
                return Err(line_error(
                    format!(
                    "'{}' is not a change; a batch holds port, route, neigh and vxlan add/del commands",
                    words.join(" ")
                ),
                    None,
                ))
            }
            Err(e) => return Err(line_error(e.message, e.object)),
        }
    }
    Ok(changes)
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line.
    #[error("{0}")]
    Usage(#[from] UsageError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A config or batch file was refused locally.
    #[error("{}: {message}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What was wrong, with the line.
        message: String,
    },
    /// No answer.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The server refused the request.
    #[error("{message} ({})", error_code_name(*code))]
    Server {
        /// Class.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// The server answered with the wrong kind of response.
    #[error("protocol error: expected a {expected} response, got {got}")]
    UnexpectedResponse {
        /// What the request asks for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// A filter named something that is not there.
    #[error("{0}")]
    NotFound(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) if e.is_connect_failure() => exit::UNREACHABLE,
            CliError::Server {
                code: ErrorCode::Unavailable,
                ..
            } => exit::UNREACHABLE,
            _ => exit::FAILED,
        }
    }
}

fn read_input(path: &Path) -> Result<String, CliError> {
    let mut text = String::new();
    let result = if path == Path::new("-") {
        io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    result.map_err(|source| CliError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text)
}

/// The request of a command, reading and checking the file of `apply -f`/`batch -f`.
/// `None` for `help`.
pub fn build_request(command: &Command) -> Result<Option<Request>, CliError> {
    match command {
        Command::ApplyFile(path) => {
            let text = read_input(path)?;
            let config = Config::parse(&text).map_err(|e| CliError::BadFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok(Some(Request::Sync { config }))
        }
        Command::Batch(path) => {
            let text = read_input(path)?;
            let changes = parse_batch(&text).map_err(|e| CliError::BadFile {
                path: path.clone(),
                message: e.message,
            })?;
            Ok(Some(Request::Apply { changes }))
        }
        other => Ok(other.request()),
    }
}

/// What a command prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// For stdout.
    pub stdout: String,
    /// A remark for stderr (the command still succeeded).
    pub note: Option<String>,
}

fn unexpected(expected: &'static str, got: &Response) -> CliError {
    CliError::UnexpectedResponse {
        expected,
        got: response_name(got),
    }
}

/// One-entry JSON object `{key: value}`, serialised in the value's field order.
struct Payload<'a, T>(&'static str, &'a T);

impl<T: serde::Serialize> serde::Serialize for Payload<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

/// The response without its `type` tag (`{"ports": [...]}`, `{"generation": 5}`),
/// pretty-printed, fields in declaration order.
fn payload_json(response: &Response) -> String {
    let text = match response {
        Response::Hello { version, server } => {
            #[derive(serde::Serialize)]
            struct Hello<'a> {
                version: u32,
                server: &'a str,
            }
            serde_json::to_string_pretty(&Hello {
                version: *version,
                server,
            })
        }
        Response::Ok { generation } => {
            serde_json::to_string_pretty(&Payload("generation", generation))
        }
        Response::Error { code, message } => {
            #[derive(serde::Serialize)]
            struct Error<'a> {
                code: ErrorCode,
                message: &'a str,
            }
            serde_json::to_string_pretty(&Error {
                code: *code,
                message,
            })
        }
        Response::Config { config } => serde_json::to_string_pretty(&Payload("config", config)),
        Response::Ports { ports } => serde_json::to_string_pretty(&Payload("ports", ports)),
        Response::Routes { routes } => serde_json::to_string_pretty(&Payload("routes", routes)),
        Response::Neighbors { neighbors } => {
            serde_json::to_string_pretty(&Payload("neighbors", neighbors))
        }
        Response::Stats { stats } => serde_json::to_string_pretty(&Payload("stats", stats)),
        Response::Drops { drops } => serde_json::to_string_pretty(&Payload("drops", drops)),
        Response::Vxlans { vxlans } => serde_json::to_string_pretty(&Payload("vxlans", vxlans)),
        Response::Flows { flows } => serde_json::to_string_pretty(&Payload("flows", flows)),
        Response::Connections { conntrack } => {
            serde_json::to_string_pretty(&Payload("connections", &conntrack.connections))
        }
        Response::Flushed { connections } => {
            serde_json::to_string_pretty(&Payload("flushed", connections))
        }
        Response::Status { status } => serde_json::to_string_pretty(&Payload("status", status)),
    };
    let mut text = text.unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"));
    text.push('\n');
    text
}

/// Renders the answer to a command: a table (or TOML, or nothing for changes) or, with
/// `json`, the payload. An `Error` response becomes [`CliError::Server`].
pub fn render(command: &Command, response: Response, json: bool) -> Result<Rendered, CliError> {
    if let Response::Error { code, message } = response {
        return Err(CliError::Server { code, message });
    }
    let mut rendered = Rendered::default();
    let response = match (command, response) {
        (
            Command::Change(_) | Command::ApplyFile(_) | Command::Batch(_),
            Response::Ok { generation },
        ) => {
            if generation == 0 {
                rendered.note = Some(
                    "note: saved in the desired state; no dataplane has applied it yet (generation 0)"
                        .into(),
                );
            }
            Response::Ok { generation }
        }
        (Command::ShowConfig, Response::Config { config }) => {
            if !json {
                rendered.stdout = config
                    .to_toml()
                    .map_err(|e| CliError::Output(io::Error::other(e.to_string())))?;
                return Ok(rendered);
            }
            Response::Config { config }
        }
        (Command::PortList { name }, Response::Ports { mut ports }) => {
            if let Some(name) = name {
                ports.retain(|p| &p.name == name);
                if ports.is_empty() {
                    return Err(CliError::NotFound(format!("port {name} does not exist")));
                }
            }
            if !json {
                rendered.stdout = render_ports(&ports);
            }
            Response::Ports { ports }
        }
        (Command::RouteList { .. }, Response::Routes { routes }) => {
            if !json {
                rendered.stdout = render_routes(&routes);
            }
            Response::Routes { routes }
        }
        (Command::NeighList { dev }, Response::Neighbors { mut neighbors }) => {
            if let Some(dev) = dev {
                neighbors.retain(|n| &n.dev == dev);
            }
            if !json {
                rendered.stdout = render_neighbors(&neighbors);
            }
            Response::Neighbors { neighbors }
        }
        (Command::VxlanList { vni }, Response::Vxlans { mut vxlans }) => {
            if let Some(vni) = vni {
                vxlans.retain(|v| v.vni == *vni);
                if vxlans.is_empty() {
                    return Err(CliError::NotFound(format!("vxlan {vni} does not exist")));
                }
            }
            if !json {
                rendered.stdout = render_vxlans(&vxlans);
            }
            Response::Vxlans { vxlans }
        }
        (Command::SnatList, Response::Config { config }) => {
            if !json {
                rendered.stdout = render_snats(&config.snats);
                return Ok(rendered);
            }
            rendered.stdout = json_payload("snat", &config.snats);
            return Ok(rendered);
        }
        (Command::ServiceList, Response::Config { config }) => {
            if !json {
                rendered.stdout = render_services(&config.services);
                return Ok(rendered);
            }
            rendered.stdout = json_payload("services", &config.services);
            return Ok(rendered);
        }
        (Command::AclList { target }, Response::Config { config }) => {
            let mut acls = config.acls;
            if let Some(target) = target {
                acls.retain(|a| &a.attachment() == target);
            }
            rendered.stdout = if json {
                json_payload("acls", &acls)
            } else {
                render_acls(&acls)
            };
            return Ok(rendered);
        }
        (Command::ConntrackList(filter), Response::Connections { mut conntrack }) => {
            conntrack
                .connections
                .retain(|c| filter.matches(&c.connection));
            if !json {
                rendered.stdout = render_connections(&conntrack.connections);
            }
            Response::Connections { conntrack }
        }
        (Command::ConntrackStats, Response::Connections { conntrack }) => {
            if !json {
                rendered.stdout = render_conntrack_stats(&conntrack);
                return Ok(rendered);
            }
            rendered.stdout = json_payload(
                "conntrack",
                &ConntrackSummary {
                    capacity: conntrack.capacity,
                    memory_bytes: conntrack.memory_bytes,
                    counters: conntrack.counters,
                },
            );
            return Ok(rendered);
        }
        (Command::ConntrackFlush, Response::Flushed { connections }) => {
            if !json {
                rendered.stdout = format!("{connections} connections flushed\n");
            }
            Response::Flushed { connections }
        }
        (Command::FlowList { .. }, Response::Flows { flows }) => {
            if !json {
                rendered.stdout = render_flows(&flows);
            }
            Response::Flows { flows }
        }
        (Command::Stats, Response::Stats { stats }) => {
            if !json {
                rendered.stdout = render_stats(&stats);
            }
            Response::Stats { stats }
        }
        (Command::Drops { all }, Response::Drops { mut drops }) => {
            if !all {
                drops.retain(|d| d.count != 0);
            }
            if !json {
                rendered.stdout = render_drops(&drops, *all);
            }
            Response::Drops { drops }
        }
        (Command::Status, Response::Status { status }) => {
            if !json {
                rendered.stdout = render_status(&status);
            }
            Response::Status { status }
        }
        (command, other) => return Err(unexpected(expected_response(command), &other)),
    };
    if json {
        rendered.stdout = payload_json(&response);
    }
    Ok(rendered)
}

fn expected_response(command: &Command) -> &'static str {
    match command {
        Command::Change(_) | Command::ApplyFile(_) | Command::Batch(_) => "ok",
        Command::ShowConfig => "config",
        Command::PortList { .. } => "ports",
        Command::RouteList { .. } => "routes",
        Command::NeighList { .. } => "neighbors",
        Command::VxlanList { .. } => "vxlans",
        Command::FlowList { .. } => "flows",
        Command::SnatList | Command::ServiceList | Command::AclList { .. } => "config",
        Command::ConntrackList(_) | Command::ConntrackStats => "connections",
        Command::ConntrackFlush => "flushed",
        Command::Stats => "stats",
        Command::Drops { .. } => "drops",
        Command::Status => "status",
        Command::Help { .. } => "no",
    }
}

/// An aligned text table: columns separated by two spaces, numbers right-aligned, no
/// trailing spaces.
struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as (title, right-aligned).
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            header: columns.iter().map(|(t, _)| *t).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width - cell.chars().count();
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

/// `port list`.
pub fn render_ports(ports: &[PortStatus]) -> String {
    let mut table = Table::new(&[
        ("NAME", false),
        ("ID", true),
        ("VRF", true),
        ("KIND", false),
        ("MAC", false),
        ("MTU", true),
        ("QUEUES", true),
        ("XDP", false),
        ("RX-PACKETS", true),
        ("TX-PACKETS", true),
        ("RX-DROPPED", true),
        ("ADDRESSES", false),
    ]);
    for port in ports {
        let addresses: Vec<String> = port.addresses.iter().map(Cidr::to_string).collect();
        let copy = if port.zero_copy { "zc" } else { "copy" };
        // A tunnel has no interface: no queues, no XDP.
        let (kind, queues, xdp) = match port.vni {
            Some(vni) => (format!("vxlan {vni}"), "-".into(), "-".into()),
            None => (
                port.kind.clone(),
                port.queues.to_string(),
                format!("{}/{copy}", port.xdp_mode),
            ),
        };
        table.row(vec![
            port.name.clone(),
            port.id.to_string(),
            port.vrf.to_string(),
            kind,
            port.mac.to_string(),
            port.mtu.to_string(),
            queues,
            xdp,
            port.rx_packets.to_string(),
            port.tx_packets.to_string(),
            port.rx_dropped.to_string(),
            dash_if_empty(addresses.join(",")),
        ]);
    }
    table.render()
}

/// `route list`: one line per route, a continuation line per further ECMP path.
pub fn render_routes(routes: &[RouteEntry]) -> String {
    let mut table = Table::new(&[
        ("VRF", true),
        ("PREFIX", false),
        ("KIND", false),
        ("VIA", false),
        ("DEV", false),
    ]);
    for route in routes {
        if let (Some(vni), Some(remote)) = (route.vni, route.remote) {
            let mac = route.mac.map(|m| format!(" mac {m}")).unwrap_or_default();
            table.row(vec![
                route.vrf.to_string(),
                route.prefix.clone(),
                format!("vxlan {vni}"),
                format!("remote {remote}{mac}"),
                dash_if_empty(route.devs.join(",")),
            ]);
            continue;
        }
        let paths = route.gateways.len().max(route.devs.len()).max(1);
        for i in 0..paths {
            let first = i == 0;
            table.row(vec![
                if first {
                    route.vrf.to_string()
                } else {
                    String::new()
                },
                if first {
                    route.prefix.clone()
                } else {
                    String::new()
                },
                if first {
                    route.kind.clone()
                } else {
                    String::new()
                },
                route.gateways.get(i).cloned().unwrap_or_else(|| "-".into()),
                route.devs.get(i).cloned().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table.render()
}

/// `vxlan list`: the tunnels, then their remote VTEPs (when any).
pub fn render_vxlans(vxlans: &[VxlanEntry]) -> String {
    let mut tunnels = Table::new(&[
        ("VNI", true),
        ("NAME", false),
        ("VRF", true),
        ("LOCAL", false),
        ("DEV", false),
        ("MAC", false),
        ("MTU", true),
        ("TTL", true),
        ("DF", false),
        ("UDPCSUM", false),
        ("RX-PACKETS", true),
        ("RX-BYTES", true),
        ("TX-PACKETS", true),
        ("TX-BYTES", true),
    ]);
    let mut remotes = Table::new(&[
        ("VNI", true),
        ("REMOTE", false),
        ("ROUTES", true),
        ("RX-PACKETS", true),
        ("RX-BYTES", true),
        ("TX-PACKETS", true),
        ("TX-BYTES", true),
    ]);
    for v in vxlans {
        let df = match v.df {
            DfPolicy::Unset => "unset",
            DfPolicy::Set => "set",
            DfPolicy::Inherit => "inherit",
        };
        tunnels.row(vec![
            v.vni.to_string(),
            v.name.clone(),
            v.vrf.to_string(),
            v.local.to_string(),
            v.dev.clone(),
            v.mac.to_string(),
            v.mtu.to_string(),
            if v.ttl == 0 {
                "inherit".into()
            } else {
                v.ttl.to_string()
            },
            df.into(),
            if v.udp_checksum { "yes" } else { "no" }.into(),
            v.rx_packets.to_string(),
            v.rx_bytes.to_string(),
            v.tx_packets.to_string(),
            v.tx_bytes.to_string(),
        ]);
        for r in &v.remotes {
            remotes.row(vec![
                v.vni.to_string(),
                r.remote.to_string(),
                r.routes.to_string(),
                r.rx_packets.to_string(),
                r.rx_bytes.to_string(),
                r.tx_packets.to_string(),
                r.tx_bytes.to_string(),
            ]);
        }
    }
    let mut text = tunnels.render();
    if !remotes.rows.is_empty() {
        text.push('\n');
        text.push_str(&remotes.render());
    }
    text
}

/// Seconds as `45s`, `3m07s`, `2h05m`, `3d04h`.
pub fn format_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Milliseconds as `850ms`, `12.3s`, or [`format_age`] from a minute on.
pub fn format_idle_ms(ms: u64) -> String {
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m => format_age(m / 1000),
    }
}

/// `neigh list`.
pub fn render_neighbors(neighbors: &[NeighborEntry]) -> String {
    let mut table = Table::new(&[
        ("DEV", false),
        ("ADDRESS", false),
        ("LLADDR", false),
        ("KIND", false),
        ("AGE", true),
    ]);
    for n in neighbors {
        let kind = match n.kind {
            pipelines::tables::NeighborKind::Static => "static",
            pipelines::tables::NeighborKind::Learned => "learned",
        };
        table.row(vec![
            n.dev.clone(),
            n.ip.to_string(),
            n.mac.to_string(),
            kind.into(),
            n.age_secs.map_or_else(|| "-".into(), format_age),
        ]);
    }
    table.render()
}

/// IP protocol name for display.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

fn endpoint(addr: IpAddr, port: u16, with_port: bool) -> String {
    match (addr, with_port) {
        (IpAddr::V4(a), true) => format!("{a}:{port}"),
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, false) => a.to_string(),
    }
}

/// `flow list`.
pub fn render_flows(flows: &[FlowEntry]) -> String {
    let mut table = Table::new(&[
        ("VRF", true),
        ("PROTO", false),
        ("SOURCE", true),
        ("", false),
        ("DESTINATION", false),
        ("OUT-DEV", false),
        ("PACKETS", true),
        ("BYTES", true),
        ("IDLE", true),
    ]);
    for flow in flows {
        let key = &flow.record.key;
        let ports = matches!(key.protocol, 6 | 17 | 132);
        table.row(vec![
            key.vrf.to_string(),
            protocol_name(key.protocol),
            endpoint(key.src_addr(), key.src_port, ports),
            "->".into(),
            endpoint(key.dst_addr(), key.dst_port, ports),
            flow.out_dev.clone(),
            flow.record.stats.packets.to_string(),
            flow.record.stats.bytes.to_string(),
            format_idle_ms(flow.record.idle_ticks.into()),
        ]);
    }
    table.render()
}

/// `stats`: totals, per-port traffic, per-stage runtime (VPP's `show runtime`), flow cache.
pub fn render_stats(stats: &StatsReport) -> String {
    let counters = &stats.counters;
    let mut text = format!(
        "workers {}  generation {}  tx-dropped {}  rx-ring-full {}  fill-ring-empty {}  wakeups {}  in-tx-kicks {:.3} s  in-rx-polls {:.3} s\n\n",
        stats.workers,
        stats.generation,
        stats.tx_dropped,
        stats.rx_ring_full,
        stats.fill_ring_empty,
        stats.wakeups,
        stats.tx_kick_nanos as f64 / 1e9,
        stats.rx_poll_nanos as f64 / 1e9
    );
    let mut ports = Table::new(&[
        ("PORT", false),
        ("RX-PACKETS", true),
        ("RX-BYTES", true),
        ("RX-DROPPED", true),
        ("TX-PACKETS", true),
        ("TX-BYTES", true),
    ]);
    let name_of = |id: usize| {
        stats
            .port_names
            .iter()
            .find(|(i, _)| usize::from(*i) == id)
            .map(|(_, n)| n.clone())
    };
    let rows = counters.ports.len().max(
        stats
            .port_names
            .iter()
            .map(|(id, _)| usize::from(*id) + 1)
            .max()
            .unwrap_or(0),
    );
    for id in 0..rows {
        let c = counters.ports.get(id).copied().unwrap_or_default();
        let name = name_of(id);
        let idle = c == pipelines::counters::PortCounters::default();
        if name.is_none() && idle {
            continue;
        }
        ports.row(vec![
            name.unwrap_or_else(|| format!("#{id} (removed)")),
            c.rx_packets.to_string(),
            c.rx_bytes.to_string(),
            c.rx_dropped.to_string(),
            c.tx_packets.to_string(),
            c.tx_bytes.to_string(),
        ]);
    }
    text.push_str(&ports.render());
    text.push('\n');
    let mut stages = Table::new(&[
        ("STAGE", false),
        ("CALLS", true),
        ("PACKETS", true),
        ("VECTORS/CALL", true),
        ("NS/PACKET", true),
    ]);
    for (name, s) in &stats.stages {
        stages.row(vec![
            name.clone(),
            s.calls.to_string(),
            s.packets.to_string(),
            format!("{:.1}", s.packets_per_call()),
            format!("{:.1}", s.ns_per_packet()),
        ]);
    }
    text.push_str(&stages.render());
    let flow = &counters.flow;
    // `misses` already includes the `stale` lookups (a stale entry is a miss).
    let lookups = flow.hits + flow.misses;
    let hit_rate = if lookups == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", flow.hits as f64 * 100.0 / lookups as f64)
    };
    let _ = writeln!(
        text,
        "\nflow cache: hits {}  misses {}  stale {}  hit-rate {hit_rate}  inserts {}  evictions {}",
        flow.hits, flow.misses, flow.stale, flow.inserts, flow.evictions
    );
    let _ = writeln!(
        text,
        "packets: replied {}  emitted {}  icmp-rate-limited {}  checksums-completed {}  dropped {} (see vrouterctl drops)",
        counters.replied,
        counters.emitted,
        counters.icmp_rate_limited,
        counters.checksums_completed,
        counters.total_drops()
    );
    if !counters.acl_hits.is_empty() {
        // Rules are numbered as `acl list` numbers them.
        let _ = writeln!(
            text,
            "\nacl decisions (packets per rule; cached flows are counted once a second):"
        );
        let mut table = Table::new(&[
            ("SET", false),
            ("DIR", false),
            ("RULE", true),
            ("PACKETS", true),
        ]);
        for hit in &counters.acl_hits {
            let port = match hit.target {
                pipelines::tables::AclTarget::Port(port) => stats
                    .port_names
                    .iter()
                    .find(|(id, _)| *id == port.0)
                    .map_or_else(|| port.0.to_string(), |(_, name)| name.clone()),
                pipelines::tables::AclTarget::Vrf(vrf) => format!("vrf {}", vrf.0),
            };
            table.row(vec![
                port,
                crate::acl::direction_name(hit.direction).into(),
                hit.rule
                    .map_or_else(|| "default".into(), |r| (r + 1).to_string()),
                hit.packets.to_string(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

/// `drops`: the entries given (already filtered), with a total.
pub fn render_drops(drops: &[DropEntry], all: bool) -> String {
    if drops.is_empty() && !all {
        return "no drops counted (vrouterctl drops all lists every reason)\n".into();
    }
    let mut table = Table::new(&[("REASON", false), ("PACKETS", true), ("DESCRIPTION", false)]);
    for drop in drops {
        table.row(vec![
            drop.reason.clone(),
            drop.count.to_string(),
            drop.description.clone(),
        ]);
    }
    let total: u64 = drops.iter().map(|d| d.count).sum();
    table.row(vec!["total".into(), total.to_string(), String::new()]);
    table.render()
}

/// `status`.
pub fn render_status(status: &Status) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut text = String::new();
    let _ = writeln!(text, "server          {}", status.server);
    let _ = writeln!(text, "peer connected  {}", yes_no(status.peer_connected));
    let _ = writeln!(text, "in sync         {}", yes_no(status.in_sync));
    let _ = writeln!(
        text,
        "generation      {}",
        status
            .generation
            .map_or_else(|| "-".to_string(), |g| g.to_string())
    );
    let _ = writeln!(
        text,
        "last error      {}",
        status.last_error.as_deref().unwrap_or("-")
    );
    text
}

/// Runs one command line (the words after the program name) and returns the exit code.
/// Used by the `vrouterctl` binary; tests pass their own writers.
pub fn main_with_args<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Options::try_parse_from(args) {
        Ok(options) => run(&options, out, err),
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = err.write_all(text.as_bytes());
                exit::FAILED
            } else {
                let _ = out.write_all(text.as_bytes());
                exit::OK
            }
        }
    }
}

/// Runs a parsed command: builds the request, asks the server, prints the answer.
pub fn run(options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match execute(options, out, err) {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(err, "vrouterctl: {e}");
            if let CliError::Usage(usage_error) = &e {
                match usage_error.object {
                    Some(object) => {
                        let _ = write!(err, "{}", usage(Some(object)));
                    }
                    None => {
                        let _ = writeln!(err, "Try 'vrouterctl help'.");
                    }
                }
            }
            e.exit_code()
        }
    }
}

fn execute(options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    let command = parse_args(&options.args)?;
    if let Command::Help { object } = command {
        let text = match object {
            None => format!(
                "{}\n{COMMANDS_HELP}\n",
                usage(None).lines().next().unwrap_or_default()
            ),
            Some(o) => usage(Some(o)),
        };
        return write_output(out, &text);
    }
    let Some(request) = build_request(&command)? else {
        return Ok(());
    };
    let timeout = match options.timeout {
        Some(secs) => Duration::from_secs(secs),
        None if command.is_bulk() => BULK_TIMEOUT,
        None => DEFAULT_TIMEOUT,
    };
    let socket = options.socket_path();
    let mut client = Client::connect_with_timeout(&socket, Role::Cli, timeout)?;
    let response = client.request(&request)?;
    let rendered = render(&command, response, options.json)?;
    if let Some(note) = &rendered.note {
        let _ = writeln!(err, "vrouterctl: {note}");
    }
    write_output(out, &rendered.stdout)
}

fn write_output(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `vrouterctl route list | head`: the reader went away, which is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Output(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// NAT: `nat snat ...`, `service ...`, `conntrack ...`

/// Most connections `conntrack list` asks for (per request; filters apply to these).
pub const DEFAULT_CONNTRACK_LIMIT: usize = 10_000;

/// Which connections `conntrack list` shows (matched on the original direction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackFilter {
    /// Original source within.
    pub src: Option<IpPrefix>,
    /// Original destination within.
    pub dst: Option<IpPrefix>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// At most this many (asked of the dataplane, before filtering).
    pub limit: usize,
}

impl ConntrackFilter {
    fn matches(&self, c: &pipelines::conntrack::Connection) -> bool {
        let within = |prefix: &Option<IpPrefix>, addr: IpAddr| {
            prefix.is_none_or(|p| match (p, addr) {
                (IpPrefix::V4(p), IpAddr::V4(a)) => p.contains(a),
                (IpPrefix::V6(p), IpAddr::V6(a)) => p.contains(a),
                _ => false,
            })
        };
        within(&self.src, c.original.src_addr())
            && within(&self.dst, c.original.dst_addr())
            && self.protocol.is_none_or(|p| p == c.original.protocol)
    }
}

/// `conntrack stats -j`.
#[derive(serde::Serialize)]
struct ConntrackSummary {
    capacity: u64,
    memory_bytes: u64,
    counters: pipelines::conntrack::ConntrackCounters,
}

fn json_payload<T: serde::Serialize>(key: &'static str, value: &T) -> String {
    let mut text = serde_json::to_string_pretty(&Payload(key, value))
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"));
    text.push('\n');
    text
}

/// A prefix value (`src`, `dst`): a network, host bits zero.
fn parse_network(words: &Words<'_>, value: &str) -> Result<IpPrefix, UsageError> {
    value
        .parse()
        .map_err(|e| words.error(format!("bad prefix {value}: {e}")))
}

/// The value of `limit`: a count above 0.
fn parse_limit(words: &mut Words<'_>, what: &str) -> Result<usize, UsageError> {
    let value = words.value("limit", what)?;
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| words.error(format!("bad limit '{value}': expected a number above 0")))
}

fn parse_nat(words: &mut Words<'_>) -> Result<Command, UsageError> {
    let what = words.required("nat", "snat")?;
    if what != "snat" {
        return Err(words.error(format!("unknown 'nat {what}'; expected nat snat ...")));
    }
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            words.finish("nat snat list")?;
            Ok(Command::SnatList)
        }
        verb => {
            let mut source = None;
            let mut out = None;
            let mut to = None;
            let mut ports = None;
            while let Some(word) = words.next() {
                match word {
                    "src" | "source" => {
                        let value = words.value(word, "a prefix")?;
                        let prefix = parse_network(words, value)?;
                        set_once(&mut source, prefix, "src", words)?;
                    }
                    "out" | "dev" => {
                        let value = words.value(word, "the egress interface")?;
                        let name = parse_ifname(words, value)?;
                        set_once(&mut out, name, "out", words)?;
                    }
                    "to" if verb == Verb::Add => {
                        let value = words.value("to", "an address")?;
                        let address = parse_ip(words, "to", value)?;
                        set_once(&mut to, address, "to", words)?;
                    }
                    "ports" if verb == Verb::Add => {
                        let value = words.value("ports", "LO-HI")?;
                        let range: crate::nat::PortRange = value
                            .parse()
                            .map_err(|e: String| words.error(format!("bad ports: {e}")))?;
                        set_once(&mut ports, range, "ports", words)?;
                    }
                    other => return Err(words.error(format!("unexpected '{other}' in nat snat"))),
                }
            }
            let source = source.ok_or_else(|| words.error("nat snat needs src PREFIX"))?;
            let out = out.ok_or_else(|| words.error("nat snat needs out IFNAME"))?;
            if let Some(to) = to {
                if to.is_ipv6() != matches!(source, IpPrefix::V6(_)) {
                    return Err(words.error(format!(
                        "to {to} is not of the source prefix's address family"
                    )));
                }
            }
            Ok(Command::Change(vec![if verb == Verb::Add {
                Change::AddSnat(crate::nat::SnatConfig {
                    source,
                    out,
                    to,
                    ports,
                })
            } else {
                Change::DelSnat { source, out }
            }]))
        }
    }
}

/// `VIP:PORT/PROTO` or `node-port PORT/PROTO`, then an optional `vrf ID` found later.
fn parse_service_ref(words: &mut Words<'_>, command: &str) -> Result<ServiceRef, UsageError> {
    let first = words.required(command, "VIP:PORT/PROTO or node-port PORT/PROTO")?;
    let (frontend, protocol) = if first == "node-port" || first == "nodeport" {
        let value = words.value("node-port", "PORT/PROTO")?;
        let (port, protocol) = split_protocol(words, value)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| words.error(format!("bad node port '{port}': expected 1-65535")))?;
        ((None, Some(port)), protocol)
    } else {
        let (vip, protocol) = split_protocol(words, first)?;
        let vip = crate::nat::parse_endpoint(vip).map_err(|e| words.error(e))?;
        ((Some(vip), None), protocol)
    };
    Ok(ServiceRef {
        vip: frontend.0,
        node_port: frontend.1,
        protocol,
        vrf: 0,
    })
}

fn split_protocol<'w>(
    words: &Words<'_>,
    value: &'w str,
) -> Result<(&'w str, L4Protocol), UsageError> {
    let (endpoint, protocol) = value
        .rsplit_once('/')
        .ok_or_else(|| words.error(format!("'{value}' needs a protocol: append /tcp or /udp")))?;
    let protocol = match protocol {
        "tcp" => L4Protocol::Tcp,
        "udp" => L4Protocol::Udp,
        other => return Err(words.error(format!("bad protocol '{other}': expected tcp or udp"))),
    };
    Ok((endpoint, protocol))
}

fn parse_backend(words: &Words<'_>, value: &str) -> Result<crate::nat::BackendSpec, UsageError> {
    value
        .parse()
        .map_err(|e: String| words.error(format!("bad backend: {e}")))
}

fn parse_service(words: &mut Words<'_>) -> Result<Command, UsageError> {
    if words.peek() == Some("backend") || words.peek() == Some("backends") {
        words.next();
        let verb = words.verb(CHANGE_VERBS, None)?;
        if verb == Verb::List {
            return Err(words.error("service backend takes add or del (see service list)"));
        }
        let mut service = parse_service_ref(words, "service backend")?;
        let value = words.required("service backend", "a backend IP:PORT[@WEIGHT]")?;
        let backend = parse_backend(words, value)?;
        while let Some(word) = words.next() {
            match word {
                "vrf" | "table" => {
                    let value = words.value(word, "a VRF id")?;
                    service.vrf = parse_vrf(words, value)?;
                }
                other => {
                    return Err(words.error(format!("unexpected '{other}' in service backend")))
                }
            }
        }
        if verb == Verb::Delete && backend.weight != 1 {
            return Err(words.error("service backend del takes IP:PORT without a weight"));
        }
        return Ok(Command::Change(vec![if verb == Verb::Add {
            Change::AddBackend { service, backend }
        } else {
            Change::DelBackend {
                service,
                backend: backend.addr,
            }
        }]));
    }
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            words.finish("service list")?;
            Ok(Command::ServiceList)
        }
        Verb::Delete => {
            let mut service = parse_service_ref(words, "service del")?;
            while let Some(word) = words.next() {
                match word {
                    "vrf" | "table" => {
                        let value = words.value(word, "a VRF id")?;
                        service.vrf = parse_vrf(words, value)?;
                    }
                    other => {
                        return Err(words.error(format!("unexpected '{other}' in service del")))
                    }
                }
            }
            Ok(Command::Change(vec![Change::DelService { service }]))
        }
        Verb::Add => {
            let identity = parse_service_ref(words, "service add")?;
            let mut config = ServiceConfig {
                vip: identity.vip,
                node_port: identity.node_port,
                protocol: identity.protocol,
                backends: Vec::new(),
                affinity: None,
                affinity_timeout: None,
                vrf: 0,
            };
            let mut vrf = None;
            while let Some(word) = words.next() {
                match word {
                    "backend" => {
                        let value = words.value("backend", "IP:PORT[@WEIGHT]")?;
                        config.backends.push(parse_backend(words, value)?);
                    }
                    "affinity" => {
                        let value = words.value("affinity", "client-ip")?;
                        if value != "client-ip" && value != "clientip" {
                            return Err(
                                words.error(format!("bad affinity '{value}': expected client-ip"))
                            );
                        }
                        set_once(
                            &mut config.affinity,
                            crate::nat::Affinity::ClientIp,
                            "affinity",
                            words,
                        )?;
                        if words.peek() == Some("timeout") {
                            words.next();
                            let value = words.value("timeout", "seconds")?;
                            let secs = value.parse::<u32>().ok().ok_or_else(|| {
                                words.error(format!("bad timeout '{value}': expected seconds"))
                            })?;
                            config.affinity_timeout = Some(secs);
                        }
                    }
                    "vrf" | "table" => {
                        let value = words.value(word, "a VRF id")?;
                        let id = parse_vrf(words, value)?;
                        set_once(&mut vrf, id, "vrf", words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                            "unexpected '{other}' in service add; expected backend, affinity or vrf"
                        )))
                    }
                }
            }
            config.vrf = vrf.unwrap_or(0);
            config.validate().map_err(|e| words.error(e))?;
            Ok(Command::Change(vec![Change::AddService(config)]))
        }
    }
}

fn parse_conntrack(words: &mut Words<'_>) -> Result<Command, UsageError> {
    const VERBS: &[(&str, Verb)] = &[
        ("list", Verb::List),
        ("show", Verb::List),
        ("ls", Verb::List),
        ("flush", Verb::Delete),
        ("stats", Verb::Add),
    ];
    match words.verb(VERBS, Some(Verb::List))? {
        Verb::Delete => {
            words.finish("conntrack flush")?;
            Ok(Command::ConntrackFlush)
        }
        Verb::Add => {
            words.finish("conntrack stats")?;
            Ok(Command::ConntrackStats)
        }
        Verb::List => {
            let mut filter = ConntrackFilter {
                src: None,
                dst: None,
                protocol: None,
                limit: DEFAULT_CONNTRACK_LIMIT,
            };
            let mut limit = None;
            while let Some(word) = words.next() {
                match word {
                    "src" | "dst" => {
                        let value = words.value(word, "a prefix")?;
                        let prefix = parse_network(words, value)?;
                        let slot = if word == "src" {
                            &mut filter.src
                        } else {
                            &mut filter.dst
                        };
                        set_once(slot, prefix, word, words)?;
                    }
                    "proto" | "protocol" => {
                        let value = words.value(word, "tcp, udp or icmp")?;
                        let number = match value {
                            "tcp" => 6,
                            "udp" => 17,
                            "icmp" => 1,
                            "icmpv6" | "ipv6-icmp" => 58,
                            _ => {
                                return Err(words.error(format!(
                                    "bad protocol '{value}': expected tcp, udp, icmp or icmpv6"
                                )))
                            }
                        };
                        set_once(&mut filter.protocol, number, "proto", words)?;
                    }
                    "limit" => {
                        let n = parse_limit(words, "a number of connections")?;
                        set_once(&mut limit, n, "limit", words)?;
                    }
                    other => {
                        return Err(words.error(format!(
                        "unexpected '{other}' in conntrack list; expected src, dst, proto or limit"
                    )))
                    }
                }
            }
            filter.limit = limit.unwrap_or(DEFAULT_CONNTRACK_LIMIT);
            Ok(Command::ConntrackList(filter))
        }
    }
}

fn parse_direction(
    words: &mut Words<'_>,
    command: &str,
) -> Result<pipelines::tables::AclDirection, UsageError> {
    match words.required(command, "a direction: in or out")? {
        "in" => Ok(pipelines::tables::AclDirection::In),
        "out" => Ok(pipelines::tables::AclDirection::Out),
        other => Err(words.error(format!("bad direction '{other}': expected in or out"))),
    }
}

/// `IFNAME` or `vrf N`, starting with `value`.
fn parse_acl_target(
    words: &mut Words<'_>,
    value: &str,
) -> Result<crate::acl::AclAttachment, UsageError> {
    if value != "vrf" {
        return Ok(crate::acl::AclAttachment::Port(parse_ifname(words, value)?));
    }
    let id = words.value("vrf", "a VRF id")?;
    id.parse::<u32>()
        .ok()
        .filter(|v| *v <= VrfId::MAX)
        .map(crate::acl::AclAttachment::Vrf)
        .ok_or_else(|| words.error(format!("bad vrf '{id}': expected 0-{}", VrfId::MAX)))
}

fn parse_acl(words: &mut Words<'_>) -> Result<Command, UsageError> {
    use crate::acl::{AclRuleConfig, Ports, Protocol};
    use pipelines::acl::AclAction;
    match words.verb(CHANGE_VERBS, Some(Verb::List))? {
        Verb::List => {
            let target = words
                .next()
                .map(|p| parse_acl_target(words, p))
                .transpose()?;
            words.finish("acl list [IFNAME | vrf N]")?;
            Ok(Command::AclList { target })
        }
        Verb::Delete => {
            let value = words.required("acl del", "an interface name or vrf N")?;
            let target = parse_acl_target(words, value)?;
            let direction = parse_direction(words, "acl del IFNAME")?;
            let change = match words.next() {
                None => Change::DelAcl { target, direction },
                Some("rule") => {
                    let value = words.value("rule", "a rule position (1, 2, ...)")?;
                    let position =
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                words.error(format!("bad rule '{value}': expected 1, 2, ..."))
                            })?;
                    words.finish("acl del IFNAME in|out rule N")?;
                    Change::DelAclRule {
                        target,
                        direction,
                        position,
                    }
                }
                Some(other) => return Err(words.error(format!("unexpected '{other}' in acl del"))),
            };
            Ok(Command::Change(vec![change]))
        }
        Verb::Add => {
            let value = words.required("acl add", "an interface name or vrf N")?;
            let target = parse_acl_target(words, value)?;
            let direction = parse_direction(words, "acl add IFNAME")?;
            let mut rule = AclRuleConfig {
                priority: crate::acl::DEFAULT_PRIORITY,
                src: None,
                dst: None,
                protocol: None,
                src_ports: None,
                dst_ports: None,
                icmp_type: None,
                icmp_code: None,
                action: AclAction::Deny,
            };
            let mut priority = None;
            let mut action = None;
            while let Some(word) = words.next() {
                match word {
                    "priority" | "prio" => {
                        let value = words.value(word, "a number")?;
                        let n = value.parse::<u32>().map_err(|_| {
                            words.error(format!("bad priority '{value}': expected a number"))
                        })?;
                        set_once(&mut priority, n, "priority", words)?;
                    }
                    "src" | "dst" => {
                        let value = words.value(word, "a prefix")?;
                        let prefix = parse_network(words, value)?;
                        let slot = if word == "src" {
                            &mut rule.src
                        } else {
                            &mut rule.dst
                        };
                        set_once(slot, prefix, word, words)?;
                    }
                    "proto" | "protocol" => {
                        let value = words.value(word, "tcp, udp, sctp, icmp, icmpv6 or 0-255")?;
                        let p: Protocol = value.parse().map_err(|e: String| words.error(e))?;
                        set_once(&mut rule.protocol, p, "proto", words)?;
                    }
                    "sport" | "dport" => {
                        let value = words.value(word, "PORT or LO-HI")?;
                        let r = crate::acl::parse_ports(value).map_err(|e| words.error(e))?;
                        let slot = if word == "sport" {
                            &mut rule.src_ports
                        } else {
                            &mut rule.dst_ports
                        };
                        set_once(slot, Ports(r.low, r.high), word, words)?;
                    }
                    "icmp-type" | "type" => {
                        let value = words.value(word, "an ICMP type (0-255)")?;
                        let t = value.parse::<u8>().map_err(|_| {
                            words.error(format!("bad icmp-type '{value}': expected 0-255"))
                        })?;
                        set_once(&mut rule.icmp_type, t, "icmp-type", words)?;
                        if words.peek() == Some("code") {
                            words.next();
                            let value = words.value("code", "an ICMP code (0-255)")?;
                            let c = value.parse::<u8>().map_err(|_| {
                                words.error(format!("bad code '{value}': expected 0-255"))
                            })?;
                            rule.icmp_code = Some(c);
                        }
                    }
                    "allow" | "accept" | "permit" => {
                        set_once(&mut action, AclAction::Allow, "action", words)?
                    }
                    "deny" | "drop" => set_once(&mut action, AclAction::Deny, "action", words)?,
                    "reject" => set_once(&mut action, AclAction::Reject, "action", words)?,
                    other => return Err(words.error(format!("unexpected '{other}' in acl add"))),
                }
            }
            rule.action = action
                .ok_or_else(|| words.error("acl add needs an action: allow, deny or reject"))?;
            rule.priority = priority.unwrap_or(crate::acl::DEFAULT_PRIORITY);
            pipelines::acl::validate_rule(1, &rule.rule())
                .map_err(|e| words.error(e.to_string().replacen("rule 1: ", "", 1)))?;
            Ok(Command::Change(vec![Change::AddAclRule {
                target,
                direction,
                rule,
            }]))
        }
    }
}

/// `acl list`: each set with its rules numbered in their order.
pub fn render_acls(acls: &[crate::acl::AclConfig]) -> String {
    let mut text = String::new();
    for acl in acls {
        let _ = writeln!(
            text,
            "{} {}: {} rule(s); anything no rule allows is denied",
            acl.attachment(),
            crate::acl::direction_name(acl.direction),
            acl.rules.len()
        );
        for (i, rule) in acl.rules.iter().enumerate() {
            let _ = writeln!(text, "  {:>4}  {rule}", i + 1);
        }
    }
    text
}

/// `nat snat list`.
pub fn render_snats(rules: &[crate::nat::SnatConfig]) -> String {
    let mut table = Table::new(&[
        ("SOURCE", false),
        ("OUT", false),
        ("TO", false),
        ("PORTS", false),
    ]);
    for rule in rules {
        table.row(vec![
            rule.source.to_string(),
            rule.out.clone(),
            rule.to.map_or("(port address)".into(), |a| a.to_string()),
            rule.ports
                .unwrap_or(crate::nat::DEFAULT_SNAT_PORTS)
                .to_string(),
        ]);
    }
    table.render()
}

/// `service list`.
pub fn render_services(services: &[ServiceConfig]) -> String {
    let mut table = Table::new(&[
        ("VRF", true),
        ("FRONTEND", false),
        ("PROTO", false),
        ("AFFINITY", false),
        ("BACKENDS", false),
    ]);
    for service in services {
        let frontend = match (service.vip, service.node_port) {
            (Some(vip), _) => vip.to_string(),
            (None, Some(port)) => format!("node-port {port}"),
            (None, None) => "?".into(),
        };
        let affinity = match service.affinity {
            Some(_) => format!(
                "client-ip {}s",
                service
                    .affinity_timeout
                    .unwrap_or(crate::nat::DEFAULT_AFFINITY_SECS)
            ),
            None => "-".into(),
        };
        let backends = if service.backends.is_empty() {
            "(none: refused)".to_string()
        } else {
            service
                .backends
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        table.row(vec![
            service.vrf.to_string(),
            frontend,
            service.protocol.to_string(),
            affinity,
            backends,
        ]);
    }
    table.render()
}

/// `conntrack list`: each connection's original tuple, then the reply tuple as the peer sends
/// it (its source is where the connection really went; its destination is the translated
/// source), state, age, idle, time left, packets and bytes per direction.
pub fn render_connections(connections: &[crate::proto::ConnectionEntry]) -> String {
    let mut table = Table::new(&[
        ("W", true),
        ("PROTO", false),
        ("STATE", false),
        ("ORIGINAL", false),
        ("", false),
        ("", false),
        ("REPLY", false),
        ("", false),
        ("", false),
        ("AGE", true),
        ("IDLE", true),
        ("EXPIRES", true),
        ("PACKETS", true),
        ("BYTES", true),
    ]);
    for entry in connections {
        let c = &entry.connection;
        let ports = matches!(c.original.protocol, 6 | 17);
        let echo = matches!(c.original.protocol, 1 | 58);
        let show = |addr: IpAddr, port: u16| {
            if echo {
                format!("{addr} id {port}")
            } else {
                endpoint(addr, port, ports)
            }
        };
        table.row(vec![
            entry.worker.to_string(),
            protocol_name(c.original.protocol),
            c.state.name().to_string(),
            show(c.original.src_addr(), c.original.src_port),
            "->".into(),
            if echo {
                c.original.dst_addr().to_string()
            } else {
                endpoint(c.original.dst_addr(), c.original.dst_port, ports)
            },
            show(c.reply.src_addr(), c.reply.src_port),
            "->".into(),
            if echo {
                c.reply.dst_addr().to_string()
            } else {
                endpoint(c.reply.dst_addr(), c.reply.dst_port, ports)
            },
            format_idle_ms(c.age_ms.into()),
            format_idle_ms(c.idle_ms.into()),
            format_idle_ms(c.expires_in_ms.into()),
            format!("{}/{}", c.packets[0], c.packets[1]),
            format!("{}/{}", c.bytes[0], c.bytes[1]),
        ]);
    }
    table.render()
}

/// `conntrack stats`.
pub fn render_conntrack_stats(report: &crate::proto::ConntrackReport) -> String {
    let c = &report.counters;
    format!(
        "live {}  capacity {}  memory {}\n\
         created {}  refused-full {}  evicted-embryonic {}  evicted-closing {}  expired {}  \
         removed {}  invalid {}  lookups {}  hits {}\n",
        c.live,
        report.capacity,
        human_bytes(report.memory_bytes),
        c.created,
        c.refused_full,
        c.evicted_embryonic,
        c.evicted_closing,
        c.expired,
        c.removed,
        c.invalid,
        c.lookups,
        c.hits,
    )
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{read_frame, write_frame, KIND_RESPONSE, PROTOCOL_MAX, PROTOCOL_MIN};
    use pipelines::counters::{Counters, StageStats};
    use pipelines::flow::{FlowAction, FlowKey, FlowRecord, FlowStats};
    use pipelines::tables::NeighborKind;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn parse(line: &str) -> Result<Command, UsageError> {
        parse_args(&words(line))
    }

    fn parse_err(line: &str) -> String {
        match parse(line) {
            Ok(command) => panic!("'{line}' parsed as {command:?}"),
            Err(e) => e.message,
        }
    }

    fn one_change(line: &str) -> Change {
        match parse(line) {
            Ok(Command::Change(mut changes)) if changes.len() == 1 => changes.remove(0),
            other => panic!("'{line}': {other:?}"),
        }
    }

    fn route(line: &str) -> RouteChange {
        match one_change(line) {
            Change::AddRoute(route) => route,
            other => panic!("'{line}': {other:?}"),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn mac(text: &str) -> EthernetAddress {
        text.parse().unwrap()
    }

    fn prefix(text: &str) -> IpPrefix {
        text.parse().unwrap()
    }

    // ---- objects and verbs ----

    #[test]
    fn objects_resolve_by_prefix_in_order() {
        assert_eq!(parse("s").unwrap(), Command::Stats);
        assert_eq!(parse("stat").unwrap(), Command::Stats);
        assert_eq!(parse("statu").unwrap(), Command::Status);
        assert_eq!(parse("r").unwrap(), Command::RouteList { vrf: None });
        assert_eq!(parse("rout ls").unwrap(), Command::RouteList { vrf: None });
        assert_eq!(parse("n").unwrap(), Command::NeighList { dev: None });
        assert_eq!(
            parse("neighbour show").unwrap(),
            Command::NeighList { dev: None }
        );
        assert_eq!(parse("p").unwrap(), Command::PortList { name: None });
        assert_eq!(parse("d").unwrap(), Command::Drops { all: false });
        assert_eq!(parse("sh conf").unwrap(), Command::ShowConfig);
    }

    #[test]
    fn unknown_or_missing_objects_list_the_choices() {
        let e = parse("xyz").unwrap_err();
        assert_eq!(
            e.message,
            "unknown object 'xyz'; expected one of port, route, neigh, vxlan, nat, service, conntrack, acl, flow, stats, drops, status, apply, batch, show, help"
        );
        assert_eq!(e.object, None);
        assert!(parse("").unwrap_err().message.starts_with("missing object"));
        assert!(parse_err("--bogus").contains("unknown option '--bogus'"));
        assert!(parse_err("route frobnicate").contains("unknown verb 'frobnicate' for route"));
        assert_eq!(parse("route x").unwrap_err().object, Some("route"));
    }

    #[test]
    fn help_forms() {
        assert_eq!(parse("help").unwrap(), Command::Help { object: None });
        assert_eq!(
            parse("help route").unwrap(),
            Command::Help {
                object: Some("route")
            }
        );
        assert_eq!(
            parse("neigh help").unwrap(),
            Command::Help {
                object: Some("neigh")
            }
        );
        assert!(parse_err("help xyz").contains("unknown object 'xyz'"));
        assert!(parse_err("help route more").contains("unexpected 'more'"));
        assert!(usage(Some("neigh")).contains("neigh add IP lladdr MAC dev IFNAME"));
        assert!(!usage(Some("neigh")).contains("route add"));
        assert!(usage(Some("stats"))
            .starts_with("Usage: vrouterctl [--socket PATH] [-j] [--timeout SECS] stats"));
    }

    // ---- port ----

    #[test]
    fn port_add_with_every_option() {
        let change = one_change(
            "port add veth-pod1 vrf 3 addr 10.0.1.1/24 address fd00:1::1/64 mtu 9000 mac 02:00:00:00:01:01",
        );
        assert_eq!(
            change,
            Change::AddPort(PortChange {
                name: "veth-pod1".into(),
                vrf: Some(3),
                addresses: vec![
                    "10.0.1.1/24".parse().unwrap(),
                    "fd00:1::1/64".parse().unwrap()
                ],
                mtu: Some(9000),
                mac: Some(mac("02:00:00:00:01:01")),
            })
        );
        assert_eq!(
            one_change("port a eth0"),
            Change::AddPort(PortChange {
                name: "eth0".into(),
                vrf: None,
                addresses: vec![],
                mtu: None,
                mac: None,
            })
        );
    }

    #[test]
    fn port_add_errors() {
        assert_eq!(parse_err("port add"), "port add needs an interface name");
        assert!(parse_err("port add averyveryverylongname").contains("bad interface name"));
        assert!(parse_err("port add a/b").contains("bad interface name"));
        assert_eq!(
            parse_err("port add eth0 vrf 5000"),
            "bad vrf 5000: VRF id exceeds 4095"
        );
        assert!(parse_err("port add eth0 vrf red").contains("bad vrf 'red'"));
        assert_eq!(
            parse_err("port add eth0 addr 10.0.0.1/33"),
            "bad address 10.0.0.1/33: prefix length 33 exceeds 32"
        );
        assert!(parse_err("port add eth0 addr 10.0.0.1").contains("needs a /LEN"));
        assert!(
            parse_err("port add eth0 addr 10.0.0.1/24 addr 10.0.0.1/16").contains("given twice")
        );
        assert!(
            parse_err("port add eth0 mtu 10").contains("bad mtu '10': expected a number 68-9000")
        );
        assert!(parse_err("port add eth0 mtu big").contains("bad mtu 'big'"));
        assert!(parse_err("port add eth0 mac zz:00:00:00:00:00").contains("bad mac"));
        assert!(parse_err("port add eth0 mac 01:00:5e:00:00:01").contains("not unicast"));
        assert_eq!(
            parse_err("port add eth0 mtu"),
            "mtu needs a value (a number of bytes)"
        );
        assert_eq!(parse_err("port add eth0 vrf 1 vrf 2"), "vrf given twice");
        assert!(parse_err("port add eth0 colour blue")
            .contains("unexpected 'colour' in port add; expected vrf, addr, mtu or mac"));
    }

    #[test]
    fn port_del_and_list() {
        assert_eq!(
            one_change("port del eth0"),
            Change::DelPort {
                name: "eth0".into()
            }
        );
        assert_eq!(
            one_change("port delete eth0"),
            Change::DelPort {
                name: "eth0".into()
            }
        );
        assert_eq!(parse_err("port del"), "port del needs an interface name");
        assert!(parse_err("port del eth0 eth1").contains("unexpected 'eth1'"));
        assert_eq!(parse("port").unwrap(), Command::PortList { name: None });
        assert_eq!(
            parse("port list").unwrap(),
            Command::PortList { name: None }
        );
        assert_eq!(
            parse("port show eth0").unwrap(),
            Command::PortList {
                name: Some("eth0".into())
            }
        );
        assert_eq!(
            parse("port list dev eth0").unwrap(),
            Command::PortList {
                name: Some("eth0".into())
            }
        );
        assert!(parse_err("port list eth0 eth1").contains("unexpected 'eth1'"));
    }

    // ---- route ----

    #[test]
    fn route_add_forms() {
        let r = route("route add 10.2.0.0/16 via 10.0.1.2");
        assert_eq!(r.prefix, prefix("10.2.0.0/16"));
        assert_eq!(r.via, Some(ip("10.0.1.2")));
        assert_eq!((r.vrf, r.dev.as_deref()), (None, None));

        let r = route("route add 10.2.0.0/16 via 10.0.1.2 dev veth0 vrf 7");
        assert_eq!(r.dev.as_deref(), Some("veth0"));
        assert_eq!(r.vrf, Some(7));

        let r = route("route add 10.3.0.0/16 dev veth0");
        assert_eq!((r.via, r.dev.as_deref()), (None, Some("veth0")));

        let r = route("route add 10.4.0.0/16 blackhole vrf 2");
        assert!(r.blackhole && !r.unreachable && r.vrf == Some(2));
        let r = route("route add unreachable 10.5.0.0/16");
        assert!(r.unreachable && !r.blackhole);

        let r =
            route("route add 10.6.0.0/16 nexthop via 10.0.1.2 dev a nexthop via 10.0.2.2 vrf 1");
        assert_eq!(r.vrf, Some(1));
        assert_eq!(
            r.nexthops,
            vec![
                PathConfig {
                    via: Some(ip("10.0.1.2")),
                    dev: Some("a".into())
                },
                PathConfig {
                    via: Some(ip("10.0.2.2")),
                    dev: None
                },
            ]
        );
        assert_eq!((r.via, r.dev), (None, None));

        let r = route("route add default via 10.0.1.1");
        assert_eq!(r.prefix, prefix("0.0.0.0/0"));
        let r = route("route add default via fd00::1");
        assert_eq!(r.prefix, prefix("::/0"));
        let r = route("route add fd00:9::/48 via fd00::1");
        assert_eq!(r.prefix, prefix("fd00:9::/48"));
        let r = route("route add 192.0.2.7 dev eth0");
        assert_eq!(r.prefix, prefix("192.0.2.7/32"));
        let r = route("route replace 10.2.0.0/16 via 10.0.1.3");
        assert_eq!(r.via, Some(ip("10.0.1.3")));
        let r = route("r a 10.2.0.0/16 via 10.0.1.3");
        assert_eq!(r.via, Some(ip("10.0.1.3")));
    }

    #[test]
    fn route_add_errors() {
        assert_eq!(
            parse_err("route add 10.0.0.0/33 via 10.0.0.1"),
            "bad prefix 10.0.0.0/33: prefix length exceeds 32"
        );
        assert!(parse_err("route add 10.0.0.1/8 via 10.0.0.1").contains("host bits set"));
        assert!(parse_err("route add ten via 10.0.0.1").contains("bad prefix ten"));
        assert_eq!(parse_err("route add"), "route add needs a prefix");
        assert_eq!(
            parse_err("route add 10.0.0.0/8"),
            "route add 10.0.0.0/8 needs via GATEWAY, dev IFNAME, blackhole, unreachable, nexthop or vxlan VNI"
        );
        assert!(parse_err("route add 10.0.0.0/8 via gw").contains("bad gateway 'gw'"));
        assert!(parse_err("route add 10.0.0.0/8 via fd00::1").contains("not of the family"));
        assert!(parse_err("route add 10.0.0.0/8 via 10.0.0.1 blackhole").contains("exactly one"));
        assert!(parse_err("route add 10.0.0.0/8 blackhole unreachable").contains("once"));
        assert!(
            parse_err("route add 10.0.0.0/8 via 10.0.0.1 nexthop via 10.0.0.2")
                .contains("not both")
        );
        assert!(
            parse_err("route add 10.0.0.0/8 nexthop nexthop via 10.0.0.2")
                .contains("nexthop 1 needs via or dev")
        );
        assert!(
            parse_err("route add 10.0.0.0/8 nexthop via 10.0.0.2 nexthop")
                .contains("nexthop 2 needs via or dev")
        );
        assert!(
            parse_err("route add 10.0.0.0/8 nexthop via 10.0.0.2 via 10.0.0.3")
                .contains("via in one nexthop given twice")
        );
        assert_eq!(
            parse_err("route add 10.0.0.0/8 via 1.1.1.1 via 2.2.2.2"),
            "via given twice"
        );
        assert!(parse_err("route add 10.0.0.0/8 via 10.0.0.1 metric 5")
            .contains("unexpected 'metric' in route add"));
        assert!(parse_err("route add 10.0.0.0/8 via 10.0.0.1 vrf 4096").contains("exceeds 4095"));
        assert_eq!(
            parse_err("route add 10.0.0.0/8 via"),
            "via needs a value (a gateway address)"
        );
    }

    #[test]
    fn route_del_and_list() {
        assert_eq!(
            one_change("route del 10.2.0.0/16"),
            Change::DelRoute {
                vrf: 0,
                prefix: prefix("10.2.0.0/16")
            }
        );
        assert_eq!(
            one_change("route del default vrf 4"),
            Change::DelRoute {
                vrf: 4,
                prefix: prefix("0.0.0.0/0")
            }
        );
        assert_eq!(parse_err("route del"), "route del needs a prefix");
        assert!(parse_err("route del 10.2.0.0/16 via 10.0.0.1")
            .contains("routes are deleted by PREFIX [vrf ID]"));
        assert!(parse_err("route del 10.2.0.0/33").contains("prefix length exceeds 32"));
        assert_eq!(
            parse("route list").unwrap(),
            Command::RouteList { vrf: None }
        );
        assert_eq!(
            parse("route show vrf 2").unwrap(),
            Command::RouteList { vrf: Some(2) }
        );
        assert!(parse_err("route list vrf x").contains("bad vrf 'x'"));
        assert!(parse_err("route list 10.0.0.0/8").contains("expected vrf ID"));
    }

    // ---- vxlan ----

    #[test]
    fn vxlan_add_forms() {
        let local: std::net::Ipv4Addr = "192.168.100.1".parse().unwrap();
        assert_eq!(
            one_change("vxlan add 100 vrf 5 local 192.168.100.1 dev eth1"),
            Change::AddVxlan(VxlanConfig::new(100, 5, local, "eth1"))
        );
        assert_eq!(
            one_change("vxlan add 100 local 192.168.100.1 dev eth1"),
            Change::AddVxlan(VxlanConfig::new(100, 0, local, "eth1"))
        );
        let full = one_change(
            "vxlan replace 100 dev eth1 local 192.168.100.1 vrf 5 mac 0e:00:00:00:64:01 mtu 1400 ttl inherit df inherit udpcsum addr 10.245.1.0/32",
        );
        assert_eq!(
            full,
            Change::AddVxlan(VxlanConfig {
                mac: Some(mac("0e:00:00:00:64:01")),
                mtu: Some(1400),
                ttl: 0,
                df: DfPolicy::Inherit,
                udp_checksum: true,
                addresses: vec!["10.245.1.0/32".parse().unwrap()],
                ..VxlanConfig::new(100, 5, local, "eth1")
            })
        );
        let Change::AddVxlan(v) =
            one_change("vxlan add 7 local 192.168.100.1 dev eth1 ttl 32 df set noudpcsum")
        else {
            panic!()
        };
        assert_eq!((v.ttl, v.df, v.udp_checksum), (32, DfPolicy::Set, false));
        assert_eq!(one_change("vxlan del 100"), Change::DelVxlan { vni: 100 });
        assert_eq!(parse("vxlan").unwrap(), Command::VxlanList { vni: None });
        assert_eq!(parse("v show").unwrap(), Command::VxlanList { vni: None });
        assert_eq!(
            parse("vxlan list 100").unwrap(),
            Command::VxlanList { vni: Some(100) }
        );
        assert_eq!(
            parse("vxlan list").unwrap().request(),
            Some(Request::Vxlans)
        );
    }

    #[test]
    fn vxlan_add_errors() {
        assert_eq!(parse_err("vxlan add"), "vxlan add needs a VNI");
        assert_eq!(
            parse_err("vxlan add 16777216 local 10.0.0.1 dev eth1"),
            "bad vni 16777216: VNI exceeds 16777215"
        );
        assert!(parse_err("vxlan add blue local 10.0.0.1 dev eth1").contains("bad vni 'blue'"));
        assert_eq!(
            parse_err("vxlan add 100 dev eth1"),
            "vxlan add 100 needs local VTEP_IP"
        );
        assert_eq!(
            parse_err("vxlan add 100 local 10.0.0.1"),
            "vxlan add 100 needs dev UPLINK"
        );
        assert!(parse_err("vxlan add 100 local fd00::1 dev eth1")
            .contains("bad local 'fd00::1': not an IPv4 address"));
        assert!(parse_err("vxlan add 100 local 10.0.0.1 dev eth1 ttl 0")
            .contains("bad ttl '0': expected 1-255 or inherit"));
        assert!(parse_err("vxlan add 100 local 10.0.0.1 dev eth1 ttl 256").contains("bad ttl"));
        assert!(parse_err("vxlan add 100 local 10.0.0.1 dev eth1 df maybe")
            .contains("bad df 'maybe': expected set, unset or inherit"));
        assert_eq!(
            parse_err("vxlan add 100 local 10.0.0.1 dev eth1 udpcsum noudpcsum"),
            "udpcsum/noudpcsum given twice"
        );
        assert!(
            parse_err("vxlan add 100 local 10.0.0.1 dev eth1 mac 01:00:5e:00:00:01")
                .contains("not unicast")
        );
        assert!(
            parse_err("vxlan add 100 local 10.0.0.1 dev eth1 mtu 9001").contains("bad mtu '9001'")
        );
        assert!(
            parse_err("vxlan add 100 local 10.0.0.1 dev eth1 addr 10.245.0.0/24")
                .contains("host addresses only")
        );
        assert!(
            parse_err("vxlan add 100 local 10.0.0.1 dev eth1 group 239.1.1.1")
                .contains("unexpected 'group' in vxlan add")
        );
        assert_eq!(parse_err("vxlan del"), "vxlan del needs a VNI");
        assert!(parse_err("vxlan del 100 vrf 5").contains("unexpected 'vrf' after vxlan del VNI"));
        assert!(parse_err("vxlan list 1 2").contains("unexpected '2'"));
        assert!(usage(Some("vxlan")).contains("vxlan del VNI"));
    }

    #[test]
    fn route_add_vxlan() {
        let r = route("route add 10.244.2.0/24 vxlan 100 remote 192.168.100.2");
        assert_eq!((r.vxlan, r.vrf, r.mac), (Some(100), None, None));
        assert_eq!(r.remote, Some("192.168.100.2".parse().unwrap()));
        let r = route(
            "route add 10.244.3.0/24 vxlan 100 remote 192.168.100.3 mac 0e:00:00:00:64:03 vrf 5",
        );
        assert_eq!((r.vrf, r.mac), (Some(5), Some(mac("0e:00:00:00:64:03"))));
        let r = route("route add fd00:244:2::/48 vxlan 100 remote 192.168.100.2");
        assert_eq!(r.prefix, prefix("fd00:244:2::/48"));

        assert_eq!(
            parse_err("route add 10.244.2.0/24 vxlan 100"),
            "route add 10.244.2.0/24 vxlan 100 needs remote VTEP_IP"
        );
        assert_eq!(
            parse_err("route add 10.244.2.0/24 remote 192.168.100.2"),
            "remote and mac are for vxlan routes: give vxlan VNI"
        );
        assert!(
            parse_err("route add 10.244.2.0/24 via 10.0.0.1 vxlan 100 remote 192.168.100.2")
                .contains("exactly one")
        );
        assert!(
            parse_err("route add 10.244.2.0/24 vxlan 100 remote fd00::2")
                .contains("bad remote 'fd00::2': not an IPv4 address")
        );
        assert!(
            parse_err("route add 10.244.2.0/24 vxlan x remote 192.168.100.2")
                .contains("bad vni 'x'")
        );
        assert!(parse_err(
            "route add 10.244.2.0/24 vxlan 100 remote 192.168.100.2 mac ff:ff:ff:ff:ff:ff"
        )
        .contains("not unicast"));
        let changes = parse_batch(
            "vxlan add 100 vrf 5 local 192.168.100.1 dev eth1\nroute add 10.244.2.0/24 vxlan 100 remote 192.168.100.2\nvxlan del 100\n",
        )
        .unwrap();
        assert_eq!(changes.len(), 3);
    }

    // ---- neigh ----

    #[test]
    fn neigh_forms_and_errors() {
        let expected = Change::AddNeighbor(NeighborConfig {
            ip: ip("10.0.1.2"),
            mac: mac("02:00:00:00:01:02"),
            dev: "veth0".into(),
        });
        assert_eq!(
            one_change("neigh add 10.0.1.2 lladdr 02:00:00:00:01:02 dev veth0"),
            expected
        );
        assert_eq!(
            one_change("neigh replace 10.0.1.2 dev veth0 lladdr 02:00:00:00:01:02"),
            expected
        );
        assert_eq!(
            one_change("neighbor del fd00::2 dev veth0"),
            Change::DelNeighbor {
                dev: "veth0".into(),
                ip: ip("fd00::2")
            }
        );
        assert_eq!(parse("neigh").unwrap(), Command::NeighList { dev: None });
        assert_eq!(
            parse("neigh list dev veth0").unwrap(),
            Command::NeighList {
                dev: Some("veth0".into())
            }
        );
        assert_eq!(parse_err("neigh add"), "neigh add needs an IP address");
        assert!(parse_err("neigh add 10.0.1 lladdr 02:00:00:00:01:02 dev x")
            .contains("bad address '10.0.1'"));
        assert_eq!(
            parse_err("neigh add 10.0.1.2 lladdr 02:00:00:00:01:02"),
            "neigh add 10.0.1.2 needs dev IFNAME"
        );
        assert_eq!(
            parse_err("neigh add 10.0.1.2 dev x"),
            "neigh add 10.0.1.2 needs lladdr MAC"
        );
        assert!(parse_err("neigh add 10.0.1.2 lladdr 02:00 dev x").contains("bad lladdr '02:00'"));
        assert_eq!(
            parse_err("neigh del 10.0.1.2"),
            "neigh del 10.0.1.2 needs dev IFNAME"
        );
        assert!(
            parse_err("neigh del 10.0.1.2 lladdr 02:00:00:00:01:02 dev x")
                .contains("unexpected 'lladdr' in neigh del; expected dev IFNAME")
        );
        assert!(parse_err("neigh list eth0").contains("expected dev IFNAME"));
    }

    // ---- read-only commands ----

    #[test]
    fn flows_stats_drops_status() {
        assert_eq!(
            parse("flow").unwrap(),
            Command::FlowList {
                limit: DEFAULT_FLOW_LIMIT
            }
        );
        assert_eq!(
            parse("flow list limit 5").unwrap(),
            Command::FlowList { limit: 5 }
        );
        assert!(parse_err("flow list limit 0").contains("bad limit '0'"));
        assert!(parse_err("flow list limit many").contains("bad limit 'many'"));
        assert!(parse_err("flow list 5").contains("expected limit N"));
        assert_eq!(parse("stats").unwrap(), Command::Stats);
        assert_eq!(parse("stats show").unwrap(), Command::Stats);
        assert!(parse_err("stats ports").contains("unknown verb 'ports'"));
        assert!(parse_err("stats show more").contains("unexpected 'more'"));
        assert_eq!(parse("status").unwrap(), Command::Status);
        assert_eq!(parse("drops").unwrap(), Command::Drops { all: false });
        assert_eq!(parse("drops all").unwrap(), Command::Drops { all: true });
        assert_eq!(
            parse("drops show all").unwrap(),
            Command::Drops { all: true }
        );
        assert!(parse_err("drops some").contains("unknown verb 'some'"));
        assert!(parse_err("drops all more").contains("unexpected 'more'"));
    }

    #[test]
    fn apply_batch_show() {
        assert_eq!(
            parse("apply -f /etc/vrouter/node.toml").unwrap(),
            Command::ApplyFile("/etc/vrouter/node.toml".into())
        );
        assert_eq!(
            parse("apply --file -").unwrap(),
            Command::ApplyFile("-".into())
        );
        assert_eq!(
            parse("batch -f routes.txt").unwrap(),
            Command::Batch("routes.txt".into())
        );
        assert_eq!(parse_err("apply"), "apply needs -f FILE");
        assert!(parse_err("apply node.toml").contains("use apply -f FILE"));
        assert_eq!(
            parse_err("apply -f"),
            "-f needs a value (a file, or - for stdin)"
        );
        assert!(parse_err("apply -f a b").contains("unexpected 'b'"));
        assert_eq!(parse("show config").unwrap(), Command::ShowConfig);
        assert_eq!(parse_err("show"), "show needs what to show: config");
        assert!(parse_err("show routes").contains("unknown 'show routes'"));
    }

    #[test]
    fn commands_map_to_requests() {
        assert_eq!(
            parse("route list vrf 3").unwrap().request(),
            Some(Request::Routes { vrf: Some(3) })
        );
        assert_eq!(
            parse("port show eth0").unwrap().request(),
            Some(Request::Ports)
        );
        assert_eq!(parse("neigh").unwrap().request(), Some(Request::Neighbors));
        assert_eq!(
            parse("flow list limit 9").unwrap().request(),
            Some(Request::Flows { limit: 9 })
        );
        assert_eq!(parse("stats").unwrap().request(), Some(Request::Stats));
        assert_eq!(parse("drops all").unwrap().request(), Some(Request::Drops));
        assert_eq!(parse("status").unwrap().request(), Some(Request::Status));
        assert_eq!(
            parse("show config").unwrap().request(),
            Some(Request::ShowConfig)
        );
        assert_eq!(
            parse("port del eth0").unwrap().request(),
            Some(Request::Apply {
                changes: vec![Change::DelPort {
                    name: "eth0".into()
                }]
            })
        );
        assert_eq!(parse("apply -f x").unwrap().request(), None);
        assert_eq!(parse("help").unwrap().request(), None);
    }

    // ---- files ----

    fn temp_path(tag: &str, ext: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "vrouterctl-test-{tag}-{}-{n}.{ext}",
            std::process::id()
        ))
    }

    const CONFIG: &str = "\
[[port]]
name = \"pod1\"
addresses = [\"10.0.1.1/24\"]

[[route]]
prefix = \"10.9.0.0/16\"
via = \"10.0.1.7\"
";

    #[test]
    fn batch_files() {
        let changes = parse_batch(
            "# pods\nport add pod1 addr 10.0.1.1/24\n\nroute add 10.9.0.0/16 via 10.0.1.7 # gw\nneigh add 10.0.1.7 lladdr 02:00:00:00:00:07 dev pod1\n",
        )
        .unwrap();
        assert_eq!(changes.len(), 3);
        assert!(matches!(changes[1], Change::AddRoute(_)));
        let e = parse_batch("port add pod1\nroute add 10.0.0.0/33 via 10.0.0.1\n").unwrap_err();
        assert_eq!(
            e.message,
            "line 2: bad prefix 10.0.0.0/33: prefix length exceeds 32"
        );
        let e = parse_batch("port add pod1\nstats\n").unwrap_err();
        assert!(
            e.message.starts_with("line 2: 'stats' is not a change"),
            "{}",
            e.message
        );
    }

    #[test]
    fn apply_reads_and_checks_the_file_locally() {
        let path = temp_path("apply", "toml");
        std::fs::write(&path, CONFIG).unwrap();
        let request = build_request(&Command::ApplyFile(path.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(
            request,
            Request::Sync {
                config: Config::parse(CONFIG).unwrap()
            }
        );
        std::fs::write(&path, CONFIG.replace("10.0.1.7", "10.7.7.7")).unwrap();
        let err = build_request(&Command::ApplyFile(path.clone())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 5: route 10.9.0.0/16"), "{text}");
        assert_eq!(err.exit_code(), exit::FAILED);
        std::fs::remove_file(&path).unwrap();
        let err = build_request(&Command::ApplyFile(path.clone())).unwrap_err();
        assert!(matches!(err, CliError::File { .. }), "{err}");

        let path = temp_path("batch", "txt");
        std::fs::write(
            &path,
            "route del 10.9.0.0/16\nroute add 10.8.0.0/16 blackhole\n",
        )
        .unwrap();
        let request = build_request(&Command::Batch(path.clone()))
            .unwrap()
            .unwrap();
        assert!(matches!(request, Request::Apply { ref changes } if changes.len() == 2));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn socket_path_precedence() {
        assert_eq!(socket_path(None, None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_path(None, Some("".into())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path(None, Some("/tmp/a.sock".into())),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(
            socket_path(Some(Path::new("/tmp/b.sock")), Some("/tmp/a.sock".into())),
            PathBuf::from("/tmp/b.sock")
        );
    }

    // ---- rendering ----

    fn sample_port(name: &str, id: u16) -> PortStatus {
        PortStatus {
            name: name.into(),
            id,
            ifindex: 10 + id as u32,
            mac: EthernetAddress([2, 0, 0, 0, 1, id as u8]),
            mtu: 1500,
            vrf: 0,
            addresses: vec![
                "10.0.1.1/24".parse().unwrap(),
                "fd00:1::1/64".parse().unwrap(),
            ],
            queues: 2,
            kind: "ethernet".into(),
            vni: None,
            xdp_mode: "native".into(),
            zero_copy: id == 0,
            rx_packets: 123_456,
            rx_bytes: 1_000_000,
            tx_packets: 7,
            tx_bytes: 700,
            rx_dropped: 3,
        }
    }

    #[test]
    fn tables_are_aligned() {
        let text = render_ports(&[sample_port("veth-pod1", 0), sample_port("p2", 1)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME       ID  VRF  KIND      MAC"),
            "{text}"
        );
        assert!(lines[1].contains("native/zc"), "{text}");
        assert!(lines[2].contains("native/copy"), "{text}");
        assert!(lines[1].ends_with("10.0.1.1/24,fd00:1::1/64"), "{text}");
        // Right-aligned numbers end in the same column.
        let rx = lines[0].find("RX-PACKETS").unwrap() + "RX-PACKETS".len();
        assert_eq!(&lines[1][rx - 6..rx], "123456");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn multipath_routes_take_continuation_lines() {
        let text = render_routes(&[
            RouteEntry {
                vrf: 0,
                prefix: "10.6.0.0/16".into(),
                kind: "multipath".into(),
                gateways: vec!["10.0.1.2".into(), "10.0.2.2".into()],
                devs: vec!["a".into(), "b".into()],
                vni: None,
                remote: None,
                mac: None,
            },
            RouteEntry {
                vrf: 0,
                prefix: "10.7.0.0/16".into(),
                kind: "blackhole".into(),
                gateways: vec![],
                devs: vec![],
                vni: None,
                remote: None,
                mac: None,
            },
        ]);
        let expected = "\
VRF  PREFIX       KIND       VIA       DEV
  0  10.6.0.0/16  multipath  10.0.1.2  a
                             10.0.2.2  b
  0  10.7.0.0/16  blackhole  -         -
";
        assert_eq!(text, expected);
    }

    fn sample_vxlan() -> VxlanEntry {
        VxlanEntry {
            vni: 100,
            name: "vxlan100".into(),
            id: 3,
            vrf: 5,
            local: "192.168.100.1".parse().unwrap(),
            dev: "eth1".into(),
            mac: mac("0e:00:00:00:64:01"),
            mtu: 1450,
            ttl: 0,
            df: DfPolicy::Unset,
            udp_checksum: false,
            addresses: vec![],
            rx_packets: 10,
            rx_bytes: 980,
            tx_packets: 12,
            tx_bytes: 1176,
            remotes: vec![crate::proto::RemoteEntry {
                remote: "192.168.100.2".parse().unwrap(),
                routes: 2,
                rx_packets: 10,
                rx_bytes: 1480,
                tx_packets: 12,
                tx_bytes: 1776,
            }],
        }
    }

    #[test]
    fn vxlans_routes_and_tunnel_ports_render() {
        let text = render_vxlans(&[sample_vxlan()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VNI  NAME      VRF  LOCAL"), "{text}");
        assert!(
            lines[1].contains(
                "vxlan100    5  192.168.100.1  eth1  0e:00:00:00:64:01  1450  inherit  unset  no"
            ),
            "{text}"
        );
        assert_eq!(lines[2], "");
        assert!(lines[3].starts_with("VNI  REMOTE"), "{text}");
        assert!(lines[4].contains("192.168.100.2       2"), "{text}");
        let mut lonely = sample_vxlan();
        lonely.remotes.clear();
        assert_eq!(render_vxlans(&[lonely]).lines().count(), 2);

        let text = render_routes(&[RouteEntry {
            vrf: 5,
            prefix: "10.244.2.0/24".into(),
            kind: "vxlan".into(),
            gateways: vec![],
            devs: vec!["vxlan100".into()],
            vni: Some(100),
            remote: Some("192.168.100.2".parse().unwrap()),
            mac: Some(mac("0e:00:00:00:64:02")),
        }]);
        assert!(
            text.contains(
                "10.244.2.0/24  vxlan 100  remote 192.168.100.2 mac 0e:00:00:00:64:02  vxlan100"
            ),
            "{text}"
        );

        let mut tunnel = sample_port("vxlan100", 3);
        tunnel.kind = "vxlan".into();
        tunnel.vni = Some(100);
        tunnel.queues = 0;
        tunnel.xdp_mode = "none".into();
        let text = render_ports(&[sample_port("eth1", 0), tunnel]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].contains("vxlan 100"), "{text}");
        assert!(lines[2].contains("1500       -  -"), "{text}");

        let vxlans = || Response::Vxlans {
            vxlans: vec![sample_vxlan()],
        };
        let json = render(&Command::VxlanList { vni: None }, vxlans(), true)
            .unwrap()
            .stdout;
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["vxlans"][0]["remotes"][0]["remote"], "192.168.100.2");
        assert_eq!(value["vxlans"][0]["df"], "unset");
        let err = render(&Command::VxlanList { vni: Some(7) }, vxlans(), false).unwrap_err();
        assert_eq!(err.to_string(), "vxlan 7 does not exist");
    }

    #[test]
    fn drops_show_non_zero_unless_all() {
        let drops = vec![
            DropEntry {
                reason: "no-route".into(),
                description: "no route to the destination".into(),
                count: 4,
            },
            DropEntry {
                reason: "ttl-exceeded".into(),
                description: "TTL expired".into(),
                count: 0,
            },
        ];
        let response = || Response::Drops {
            drops: drops.clone(),
        };
        let text = render(&Command::Drops { all: false }, response(), false)
            .unwrap()
            .stdout;
        assert!(
            text.contains("no-route") && !text.contains("ttl-exceeded"),
            "{text}"
        );
        assert!(text.contains("total"), "{text}");
        let text = render(&Command::Drops { all: true }, response(), false)
            .unwrap()
            .stdout;
        assert!(text.contains("ttl-exceeded"), "{text}");
        let json = render(&Command::Drops { all: false }, response(), true)
            .unwrap()
            .stdout;
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["drops"].as_array().unwrap().len(), 1);
        let none = Response::Drops {
            drops: vec![drops[1].clone()],
        };
        let text = render(&Command::Drops { all: false }, none, false)
            .unwrap()
            .stdout;
        assert!(text.starts_with("no drops counted"), "{text}");
    }

    fn sample_stats() -> StatsReport {
        let mut counters = Counters::new();
        counters.port(pipelines::PortId(0)).rx_packets = 10;
        counters.port(pipelines::PortId(3)).tx_packets = 5;
        counters.flow.hits = 9;
        counters.flow.misses = 1;
        counters.count_drop(pipelines::DropReason::NoRoute);
        StatsReport {
            workers: 2,
            generation: 17,
            counters,
            stages: vec![(
                "ip-lookup".into(),
                StageStats {
                    calls: 4,
                    packets: 10,
                    nanos: 1234,
                },
            )],
            port_names: vec![(0, "veth-pod1".into()), (1, "veth-pod2".into())],
            tx_dropped: 0,
            wakeups: 3,
            tx_kick_nanos: 5000,
            rx_poll_nanos: 0,
            rx_ring_full: 7,
            fill_ring_empty: 2,
        }
    }

    #[test]
    fn stats_render() {
        let text = render_stats(&sample_stats());
        assert!(text.starts_with("workers 2  generation 17"), "{text}");
        assert!(text.contains("rx-ring-full 7  fill-ring-empty 2"), "{text}");
        assert!(text.contains("veth-pod2"), "{text}");
        assert!(text.contains("#3 (removed)"), "{text}");
        assert!(!text.contains("#2"), "{text}");
        assert!(text.contains("ip-lookup"), "{text}");
        assert!(text.contains("2.5") && text.contains("123.4"), "{text}");
        assert!(text.contains("hit-rate 90.0%"), "{text}");
        assert!(text.contains("dropped 1"), "{text}");
    }

    #[test]
    fn flows_and_neighbors_render() {
        let key = FlowKey {
            src: u32::from(std::net::Ipv4Addr::new(10, 0, 1, 2)) as u128,
            dst: u32::from(std::net::Ipv4Addr::new(10, 0, 2, 2)) as u128,
            vrf: 0,
            protocol: 6,
            ipv6: false,
            src_port: 40000,
            dst_port: 80,
        };
        let flow = FlowEntry {
            worker: 0,
            record: FlowRecord {
                key,
                action: FlowAction::default(),
                nat: None,
                stats: FlowStats {
                    packets: 3,
                    bytes: 180,
                },
                idle_ticks: 1500,
            },
            out_dev: "veth-pod2".into(),
        };
        let text = render_flows(&[flow]);
        assert!(
            text.contains("tcp    10.0.1.2:40000  ->  10.0.2.2:80  veth-pod2"),
            "{text}"
        );
        assert!(text.contains("1.5s"), "{text}");
        let text = render_neighbors(&[NeighborEntry {
            dev: "veth-pod1".into(),
            ip: ip("10.0.1.2"),
            mac: mac("02:00:00:00:01:02"),
            kind: NeighborKind::Learned,
            age_secs: Some(187),
        }]);
        assert!(text.contains("learned  3m07s"), "{text}");
        assert_eq!(format_idle_ms(250), "250ms");
        assert_eq!(format_age(7300), "2h01m");
        assert_eq!(protocol_name(99), "99");
    }

    #[test]
    fn error_and_unexpected_responses() {
        let err = render(
            &Command::Stats,
            Response::error(ErrorCode::Unavailable, "dataplane not connected"),
            false,
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::UNREACHABLE);
        assert_eq!(err.to_string(), "dataplane not connected (unavailable)");
        let err = render(
            &Command::Change(vec![]),
            Response::error(ErrorCode::Rejected, "no such port"),
            false,
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::FAILED);
        let err = render(&Command::Stats, Response::Ok { generation: 1 }, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: expected a stats response, got ok"
        );
        let rendered = render(
            &Command::Change(vec![]),
            Response::Ok { generation: 0 },
            false,
        )
        .unwrap();
        assert_eq!(rendered.stdout, "");
        assert!(rendered.note.unwrap().contains("generation 0"));
        let err = render(
            &Command::PortList {
                name: Some("nope".into()),
            },
            Response::Ports {
                ports: vec![sample_port("eth0", 0)],
            },
            false,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "port nope does not exist");
    }

    #[test]
    fn json_payload_is_the_response_without_its_tag_in_field_order() {
        let responses = vec![
            Response::Ok { generation: 3 },
            Response::Ports {
                ports: vec![sample_port("eth0", 0)],
            },
            Response::Stats {
                stats: Box::new(sample_stats()),
            },
            Response::Config {
                config: Config::parse(CONFIG).unwrap(),
            },
        ];
        for response in responses {
            let text = payload_json(&response);
            let mut expected = serde_json::to_value(&response).unwrap();
            expected.as_object_mut().unwrap().remove("type");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value, expected, "{text}");
        }
        let text = payload_json(&Response::Ports {
            ports: vec![sample_port("eth0", 0)],
        });
        let name = text.find("\"name\"").unwrap();
        let id = text.find("\"id\"").unwrap();
        let rx = text.find("\"rx_packets\"").unwrap();
        assert!(name < id && id < rx, "{text}");
    }

    // ---- against a fake vrouter-control ----

    type Handler = Box<dyn FnMut(u32, &Request) -> (u32, Response) + Send>;

    /// A server for one connection: checks the hello, then answers with `handler`. Returns
    /// the socket path and a handle yielding every (id, request) received.
    fn fake_server(mut handler: Handler) -> (PathBuf, thread::JoinHandle<Vec<(u32, Request)>>) {
        let path = temp_path("server", "sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            while let Ok((header, body)) = read_frame(&mut stream) {
                let request: Request = crate::proto::decode_body(&body).unwrap();
                seen.push((header.id, request.clone()));
                let (id, response) = match request {
                    Request::Hello {
                        min_version,
                        max_version,
                        role,
                    } => {
                        assert_eq!(
                            (min_version, max_version, role),
                            (PROTOCOL_MIN, PROTOCOL_MAX, Role::Cli)
                        );
                        (
                            header.id,
                            Response::Hello {
                                version: PROTOCOL_MAX,
                                server: "fake-control".into(),
                            },
                        )
                    }
                    ref other => handler(header.id, other),
                };
                write_frame(&mut stream, KIND_RESPONSE, id, &response).unwrap();
            }
            seen
        });
        (path, handle)
    }

    fn run_cli(args: &[&str]) -> (u8, String, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut argv = vec!["vrouterctl"];
        argv.extend_from_slice(args);
        let code = main_with_args(argv, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn json_port_list_through_a_fake_server() {
        let (path, server) = fake_server(Box::new(|id, request| {
            assert_eq!(request, &Request::Ports);
            (
                id,
                Response::Ports {
                    ports: vec![sample_port("veth-pod1", 0), sample_port("veth-pod2", 1)],
                },
            )
        }));
        let socket = path.to_str().unwrap();
        let (code, out, err) = run_cli(&["--socket", socket, "-j", "port", "list", "veth-pod2"]);
        assert_eq!((code, err.as_str()), (0, ""));
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(value.get("type").is_none(), "{out}");
        let ports = value["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0]["name"], "veth-pod2");
        assert_eq!(ports[0]["mac"], "02:00:00:00:01:01");
        assert!(out.contains("\n  \"ports\""), "pretty JSON expected: {out}");
        let seen = server.join().unwrap();
        assert_eq!(
            seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn changes_are_sent_as_one_apply_and_rejections_exit_1() {
        let (path, server) = fake_server(Box::new(|id, _| {
            (
                id,
                Response::error(
                    ErrorCode::Rejected,
                    "route 10.2.0.0/16: gateway 10.0.9.9 is not on a connected subnet",
                ),
            )
        }));
        let (code, out, err) = run_cli(&[
            "--socket",
            path.to_str().unwrap(),
            "route",
            "add",
            "10.2.0.0/16",
            "via",
            "10.0.9.9",
        ]);
        assert_eq!(code, 1);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "vrouterctl: route 10.2.0.0/16: gateway 10.0.9.9 is not on a connected subnet (rejected)\n"
        );
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, 2);
        assert_eq!(
            seen[1].1,
            Request::Apply {
                changes: vec![Change::AddRoute(RouteChange {
                    prefix: prefix("10.2.0.0/16"),
                    vrf: None,
                    via: Some(ip("10.0.9.9")),
                    dev: None,
                    blackhole: false,
                    unreachable: false,
                    nexthops: vec![],
                    vxlan: None,
                    remote: None,
                    mac: None,
                })]
            }
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unavailable_dataplane_exits_2() {
        let (path, server) = fake_server(Box::new(|id, _| {
            (
                id,
                Response::error(ErrorCode::Unavailable, "vrouter is not connected"),
            )
        }));
        let (code, _, err) = run_cli(&["--socket", path.to_str().unwrap(), "stats"]);
        assert_eq!(code, 2);
        assert!(err.contains("vrouter is not connected"), "{err}");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn apply_syncs_and_show_config_prints_toml() {
        let file = temp_path("apply-run", "toml");
        std::fs::write(&file, CONFIG).unwrap();
        let (path, server) = fake_server(Box::new(|id, request| match request {
            Request::Sync { .. } => (id, Response::Ok { generation: 5 }),
            other => panic!("unexpected {other:?}"),
        }));
        let (code, out, err) = run_cli(&[
            "--socket",
            path.to_str().unwrap(),
            "apply",
            "-f",
            file.to_str().unwrap(),
        ]);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
        let seen = server.join().unwrap();
        assert_eq!(
            seen[1].1,
            Request::Sync {
                config: Config::parse(CONFIG).unwrap()
            }
        );
        let _ = std::fs::remove_file(&path);

        let (path, server) = fake_server(Box::new(|id, _| {
            (
                id,
                Response::Config {
                    config: Config::parse(CONFIG).unwrap(),
                },
            )
        }));
        let (code, out, _) = run_cli(&["--socket", path.to_str().unwrap(), "show", "config"]);
        assert_eq!(code, 0);
        assert_eq!(Config::parse(&out).unwrap(), Config::parse(CONFIG).unwrap());
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);

        let (path, server) = fake_server(Box::new(|id, _| {
            (
                id,
                Response::Config {
                    config: Config::parse(CONFIG).unwrap(),
                },
            )
        }));
        let (code, out, _) = run_cli(&["--socket", path.to_str().unwrap(), "-j", "show", "config"]);
        assert_eq!(code, 0);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["config"]["port"][0]["name"], "pod1");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn bad_file_is_refused_without_a_daemon() {
        let file = temp_path("bad", "toml");
        std::fs::write(&file, CONFIG.replace("10.0.1.7", "10.7.7.7")).unwrap();
        let missing = temp_path("missing", "sock");
        let (code, _, err) = run_cli(&[
            "--socket",
            missing.to_str().unwrap(),
            "apply",
            "-f",
            file.to_str().unwrap(),
        ]);
        assert_eq!(code, 1);
        assert!(err.contains("line 5: route 10.9.0.0/16"), "{err}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn missing_daemon_exits_2_with_a_hint() {
        let missing = temp_path("missing", "sock");
        let (code, out, err) = run_cli(&["--socket", missing.to_str().unwrap(), "status"]);
        assert_eq!(code, 2);
        assert_eq!(out, "");
        assert!(err.contains("cannot connect to"), "{err}");
        assert!(
            err.contains("is vrouter-control running? see --socket"),
            "{err}"
        );
    }

    #[test]
    fn usage_errors_exit_1_and_show_the_object_usage() {
        let (code, out, err) = run_cli(&["route", "add", "10.0.0.0/33", "via", "10.0.0.1"]);
        assert_eq!(code, 1);
        assert_eq!(out, "");
        assert!(
            err.starts_with("vrouterctl: bad prefix 10.0.0.0/33: prefix length exceeds 32\n"),
            "{err}"
        );
        assert!(
            err.contains("vrouterctl route del PREFIX [vrf ID]"),
            "{err}"
        );
        let (code, _, err) = run_cli(&["rout3"]);
        assert_eq!(code, 1);
        assert!(err.contains("Try 'vrouterctl help'."), "{err}");
        let (code, _, err) = run_cli(&["--timeout"]);
        assert_eq!(code, 1);
        assert!(!err.is_empty());
        let (code, out, _) = run_cli(&["--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("apply -f FILE"), "{out}");
        let (code, out, _) = run_cli(&["help", "neigh"]);
        assert_eq!(code, 0);
        assert!(out.contains("neigh del IP dev IFNAME"), "{out}");
    }

    #[test]
    fn human_status_through_a_fake_server() {
        let (path, server) = fake_server(Box::new(|id, _| {
            (
                id,
                Response::Status {
                    status: Status {
                        server: "vrouter-control 0.1.0".into(),
                        peer_connected: true,
                        in_sync: false,
                        last_error: Some("port veth9 missing".into()),
                        generation: Some(4),
                    },
                },
            )
        }));
        let (code, out, _) = run_cli(&["--socket", path.to_str().unwrap(), "status"]);
        assert_eq!(code, 0);
        assert!(out.contains("peer connected  yes"), "{out}");
        assert!(out.contains("in sync         no"), "{out}");
        assert!(out.contains("last error      port veth9 missing"), "{out}");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn nat_service_and_conntrack_commands_parse() {
        match parse("nat snat add src 10.244.0.0/16 out eth1 to 192.168.1.1 ports 2000-3000")
            .unwrap()
        {
            Command::Change(changes) => match &changes[0] {
                Change::AddSnat(rule) => {
                    assert_eq!(rule.out, "eth1");
                    assert_eq!(rule.ports.unwrap().low, 2000);
                    assert_eq!(rule.to, Some("192.168.1.1".parse().unwrap()));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("nat snat del src 10.244.0.0/16 out eth1").unwrap(),
            Command::Change(c) if matches!(c[0], Change::DelSnat { .. })
        ));
        assert_eq!(parse("nat snat list").unwrap(), Command::SnatList);
        match parse(
            "service add 10.96.0.10:80/tcp backend 10.0.1.5:8080 backend 10.0.1.6:8080@3 affinity client-ip timeout 60 vrf 2",
        )
        .unwrap()
        {
            Command::Change(changes) => match &changes[0] {
                Change::AddService(s) => {
                    assert_eq!(s.backends.len(), 2);
                    assert_eq!(s.backends[1].weight, 3);
                    assert_eq!(s.affinity_timeout, Some(60));
                    assert_eq!(s.vrf, 2);
                    assert_eq!(s.protocol, L4Protocol::Tcp);
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match parse("service add node-port 30080/udp").unwrap() {
            Command::Change(changes) => match &changes[0] {
                Change::AddService(s) => {
                    assert_eq!(s.node_port, Some(30080));
                    assert!(s.backends.is_empty());
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match parse("service add [fd00::10]:53/udp backend [fd00::5]:5353").unwrap() {
            Command::Change(changes) => {
                assert!(matches!(&changes[0], Change::AddService(s) if s.vip.unwrap().is_ipv6()))
            }
            other => panic!("{other:?}"),
        }
        match parse("service backend del 10.96.0.10:80/tcp 10.0.1.5:8080").unwrap() {
            Command::Change(changes) => {
                assert!(
                    matches!(&changes[0], Change::DelBackend { backend, .. } if backend.port() == 8080)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("service del node-port 30080/udp vrf 1").unwrap(),
            Command::Change(c) if matches!(&c[0], Change::DelService { service } if service.vrf == 1)
        ));
        assert_eq!(parse("service list").unwrap(), Command::ServiceList);
        assert_eq!(parse("svc").unwrap(), Command::ServiceList);
        match parse("conntrack list src 10.0.0.0/8 proto tcp limit 5").unwrap() {
            Command::ConntrackList(filter) => {
                assert_eq!(filter.protocol, Some(6));
                assert_eq!(filter.limit, 5);
                assert!(filter.src.is_some() && filter.dst.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("conntrack flush").unwrap(), Command::ConntrackFlush);
        assert_eq!(parse("ct stats").unwrap(), Command::ConntrackStats);

        for (line, expected) in [
            ("nat snat add out eth1", "needs src"),
            ("nat snat add src 10.0.0.0/8", "needs out"),
            ("nat snat add src 10.0.0.0/8 out eth1 ports 9-1", "LO <= HI"),
            (
                "nat snat add src 10.0.0.0/8 out eth1 to fd00::1",
                "address family",
            ),
            ("nat dnat add", "nat snat"),
            (
                "service add 10.96.0.10:80 backend 10.0.0.1:1",
                "needs a protocol",
            ),
            ("service add 10.96.0.10:80/sctp", "bad protocol"),
            ("service add 10.96.0.10/tcp", "IP:PORT"),
            (
                "service add 10.96.0.10:80/tcp backend 10.0.0.1:1@0",
                "weight",
            ),
            (
                "service add 10.96.0.10:80/tcp backend 10.0.0.1:1 backend 10.0.0.1:1",
                "twice",
            ),
            ("service add 10.96.0.10:80/tcp affinity sticky", "client-ip"),
            ("service add node-port 0/tcp", "node port"),
            (
                "service backend del 10.96.0.10:80/tcp 10.0.0.1:1@2",
                "without a weight",
            ),
            ("conntrack list proto sctp", "bad protocol"),
            ("conntrack flush now", "unexpected"),
        ] {
            let message = parse_err(line);
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn connections_render_both_tuples() {
        use pipelines::conntrack::{ConnTable, ConntrackConfig, Nat, Translation};
        use pipelines::wire::TcpFlags;
        let mut table = ConnTable::new(ConntrackConfig {
            capacity: 16,
            ..ConntrackConfig::default()
        });
        let original = pipelines::flow::FlowKey {
            src: u32::from(Ipv4Addr::new(10, 0, 1, 2)) as u128,
            dst: u32::from(Ipv4Addr::new(10, 96, 0, 10)) as u128,
            vrf: 0,
            protocol: 6,
            ipv6: false,
            src_port: 40000,
            dst_port: 80,
        };
        let nat = Nat {
            src: None,
            dst: Some(Translation::new("10.0.2.5".parse().unwrap(), 8080)),
        };
        table
            .create(&original, &nat, TcpFlags::SYN, 60, 0)
            .expect("created");
        let connections: Vec<crate::proto::ConnectionEntry> = table
            .iter(10)
            .map(|connection| crate::proto::ConnectionEntry {
                worker: 0,
                connection,
            })
            .collect();
        let text = render_connections(&connections);
        assert!(text.contains("SYN_SENT"), "{text}");
        assert!(text.contains("10.0.1.2:40000  ->  10.96.0.10:80"), "{text}");
        assert!(text.contains("10.0.2.5:8080  ->  10.0.1.2:40000"), "{text}");
        let filter = ConntrackFilter {
            src: Some("10.0.1.0/24".parse().unwrap()),
            dst: None,
            protocol: Some(17),
            limit: 10,
        };
        assert!(!filter.matches(&connections[0].connection));
    }

    #[test]
    fn acl_commands_parse_and_refuse_bad_rules() {
        use pipelines::acl::AclAction;
        use pipelines::tables::AclDirection;
        match parse("acl add vp1 out priority 10 src 10.0.0.0/24 proto tcp dport 80-81 allow")
            .unwrap()
        {
            Command::Change(changes) => match &changes[0] {
                Change::AddAclRule {
                    target,
                    direction,
                    rule,
                } => {
                    assert_eq!(*target, crate::acl::AclAttachment::Port("vp1".into()));
                    assert_eq!(*direction, AclDirection::Out);
                    assert_eq!(rule.priority, 10);
                    assert_eq!(rule.action, AclAction::Allow);
                    assert_eq!(rule.rule().dst_ports, Some((80, 81)));
                    assert_eq!(rule.rule().protocol, Some(6));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("acl add vp1 in proto icmp icmp-type 8 code 0 reject").unwrap(),
            Command::Change(c) if matches!(&c[0], Change::AddAclRule { rule, .. } if rule.icmp_code == Some(0))
        ));
        assert!(matches!(
            parse("acl del vp1 in rule 2").unwrap(),
            Command::Change(c) if matches!(c[0], Change::DelAclRule { position: 2, .. })
        ));
        assert!(matches!(
            parse("acl del vp1 out").unwrap(),
            Command::Change(c) if matches!(c[0], Change::DelAcl { .. })
        ));
        assert_eq!(
            parse("acl list vp1").unwrap(),
            Command::AclList {
                target: Some(crate::acl::AclAttachment::Port("vp1".into()))
            }
        );
        assert_eq!(
            parse("acl list vrf 7").unwrap(),
            Command::AclList {
                target: Some(crate::acl::AclAttachment::Vrf(7))
            }
        );
        assert!(matches!(
            parse("acl add vrf 7 out proto tcp dport 443 allow").unwrap(),
            Command::Change(c) if matches!(&c[0], Change::AddAclRule { target: crate::acl::AclAttachment::Vrf(7), .. })
        ));
        for (line, expected) in [
            ("acl add vp1 sideways allow", "bad direction"),
            ("acl add vp1 in proto tcp", "needs an action"),
            ("acl add vp1 in dport 80 allow", "ports need protocol"),
            ("acl add vp1 in proto tcp dport 90-80 allow", "empty range"),
            (
                "acl add vp1 in proto tcp icmp-type 8 allow",
                "icmp type/code need",
            ),
            (
                "acl add vp1 in src 10.0.0.0/8 dst fd00::/8 allow",
                "mixes IPv4 and IPv6",
            ),
            ("acl add vp1 in proto gre allow", "bad protocol"),
            ("acl add vp1 in allow deny", "action given twice"),
            ("acl del vp1 in rule 0", "bad rule"),
        ] {
            let message = parse_err(line);
            assert!(message.contains(expected), "{line}: {message}");
        }
    }
}
