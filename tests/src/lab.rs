//! [`Lab`]: a set of network namespaces, links and processes that is torn down on drop.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, check, describe, output_with_timeout, Error, Result, DEFAULT_TIMEOUT};
use crate::process::{self, send_signal, tail, terminate_all, LabProcess, ProcShared};

/// Every namespace the harness creates is named `vrt<pid % 100000>-<counter>-<name>`.
const NETNS_PREFIX: &str = "vrt";
/// Linux limit on interface names (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static STALE_CLEANUP: Once = Once::new();

/// Directory for lab state and logs: `$VROUTER_TESTS_DIR`, else `<tmp>/vrouter-tests`.
/// Each lab gets `<dir>/<prefix>/` holding an `owner` file (pid and start time of the process
/// that created it, read by [`cleanup_stale`]) and the logs of its processes.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("VROUTER_TESTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("vrouter-tests"),
    }
}

struct LabShared {
    /// `vrt<pid%100000>-<counter>`; namespaces are `<prefix>-<name>`.
    prefix: String,
    /// `v<pid%100000>-<counter>`; interface names from [`Lab::ifname`] start with it.
    if_prefix: String,
    dir: PathBuf,
    state: Mutex<LabState>,
}

#[derive(Default)]
struct LabState {
    namespaces: Vec<String>,
    processes: Vec<Arc<ProcShared>>,
    /// Veth ends created in the root namespace.
    host_links: Vec<String>,
    /// Root-namespace sysctls changed through the lab, with their previous values.
    host_sysctls: Vec<(String, String)>,
}

impl LabShared {
    fn state(&self) -> MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A test topology: network namespaces, veths, bridges and processes, all removed when the
/// `Lab` drops (also while a test panics). See the crate docs for the full contract.
pub struct Lab {
    shared: Arc<LabShared>,
}

impl Lab {
    /// Claims a fresh name prefix and creates the lab's directory. The first lab of a process
    /// also runs [`cleanup_stale`] (namespaces left behind by crashed earlier runs).
    pub fn new() -> Result<Lab> {
        STALE_CLEANUP.call_once(|| match cleanup_stale() {
            Ok(removed) if !removed.is_empty() => {
                eprintln!("vrouter-tests: removed stale namespaces {removed:?}");
            }
            Ok(_) => {}
            Err(e) => eprintln!("vrouter-tests: warning: stale cleanup failed: {e}"),
        });

        let pid = std::process::id();
        let base = state_dir();
        fs::create_dir_all(&base)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", base.display())))?;
        let existing = list_netns()?;
        for _ in 0..1000 {
            let counter = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("{NETNS_PREFIX}{}-{counter}", pid % 100_000);
            let taken = existing
                .iter()
                .any(|n| n.starts_with(&format!("{prefix}-")));
            if taken {
                continue;
            }
            // Creating the directory claims the prefix against other test processes.
            let dir = base.join(&prefix);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::new(format!("cannot create {}: {e}", dir.display()))),
            }
            let owner = format!("{pid} {}\n", process_start_time(pid).unwrap_or(0));
            fs::write(dir.join("owner"), owner)
                .map_err(|e| Error::new(format!("cannot write owner file: {e}")))?;
            return Ok(Lab {
                shared: Arc::new(LabShared {
                    if_prefix: format!("v{}-{counter}", pid % 100_000),
                    prefix,
                    dir,
                    state: Mutex::new(LabState::default()),
                }),
            });
        }
        Err(Error::new("no free lab prefix after 1000 attempts"))
    }

    /// The lab's unique prefix, `vrt<pid%100000>-<counter>`.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The lab's directory (process logs). Removed on drop unless the thread is panicking.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A unique interface name for the root namespace: `v<pid%100000>-<counter><suffix>`.
    /// Interfaces inside the lab's own namespaces can have any name (`eth0`); only root-namespace
    /// ends need this. Panics if `suffix` does not start with a letter, has characters other than
    /// ASCII letters, digits, `_` and `-`, or the result exceeds 15 characters.
    pub fn ifname(&self, suffix: &str) -> String {
        let valid = suffix.starts_with(|c: char| c.is_ascii_alphabetic())
            && suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        assert!(
            valid,
            "ifname suffix {suffix:?}: use a letter then letters, digits, _ or -"
        );
        let name = format!("{}{suffix}", self.shared.if_prefix);
        assert!(
            name.len() <= MAX_IFNAME,
            "interface name {name:?} is longer than {MAX_IFNAME} characters; shorten {suffix:?}"
        );
        name
    }

    /// Creates namespace `<prefix>-<name>` (`ip netns add`) with its loopback up.
    pub fn netns(&self, name: &str) -> Result<Netns> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::new(format!(
                "namespace name {name:?}: use ASCII letters, digits, _ or -"
            )));
        }
        let full = format!("{}-{name}", self.shared.prefix);
        cmd::run("ip", &["netns", "add", &full])?;
        self.shared.state().namespaces.push(full.clone());
        let ns = Netns {
            lab: Arc::clone(&self.shared),
            name: Some(full),
        };
        ns.set_up_loopback()?;
        Ok(ns)
    }

    /// A handle on the root (host) namespace, for spawning processes such as the vrouter there.
    /// Link helpers on it only accept interfaces named by [`Lab::ifname`]; it refuses routes, and
    /// its sysctl changes are restored when the lab drops.
    pub fn host(&self) -> Netns {
        Netns {
            lab: Arc::clone(&self.shared),
            name: None,
        }
    }

    /// Creates a veth pair `name_a` in `ns_a` <-> `name_b` in `ns_b` (`None` = root namespace),
    /// with one RX and one TX queue on each end, both ends up. `ns_a` must be a lab namespace, so
    /// every veth dies with its namespace; a root-namespace end must be named by [`Lab::ifname`].
    pub fn veth(
        &self,
        ns_a: &Netns,
        name_a: &str,
        ns_b: Option<&Netns>,
        name_b: &str,
    ) -> Result<()> {
        let Some(a) = ns_a.name.as_deref() else {
            return Err(Error::new(
                "veth: the first end must be in a lab namespace, not the root namespace",
            ));
        };
        let b = ns_b.and_then(|ns| ns.name.as_deref());
        check_ifname_len(name_a)?;
        check_ifname_len(name_b)?;
        if b.is_none() {
            self.check_host_ifname(name_b)?;
        }
        let mut args = vec!["link", "add", "name", name_a, "netns", a];
        args.extend(["numrxqueues", "1", "numtxqueues", "1", "type", "veth"]);
        args.extend(["peer", "name", name_b]);
        if let Some(b) = b {
            args.extend(["netns", b]);
        }
        args.extend(["numrxqueues", "1", "numtxqueues", "1"]);
        cmd::run("ip", &args)?;
        if b.is_none() {
            self.shared.state().host_links.push(name_b.to_string());
        }
        ns_a.link_up(name_a)?;
        match ns_b {
            Some(ns) => ns.link_up(name_b),
            None => self.host().link_up(name_b),
        }
    }

    /// Creates a bridge `name` in the lab namespace `ns`, up.
    pub fn bridge(&self, ns: &Netns, name: &str) -> Result<()> {
        if ns.name.is_none() {
            return Err(Error::new("bridge: only inside lab namespaces"));
        }
        check_ifname_len(name)?;
        ns.ip(&["link", "add", "name", name, "type", "bridge"])?;
        ns.link_up(name)
    }

    /// Prints every process's command, exit status and the tail of its stdout and stderr to
    /// stderr. Called automatically when the lab drops during a panic.
    pub fn dump_logs(&self) {
        let procs = self.shared.state().processes.clone();
        for proc in procs {
            eprintln!(
                "---- [{}] `{}` (pid {}, {})",
                self.shared.prefix,
                proc.command,
                proc.pid,
                proc.exit_description()
            );
            eprintln!("-- stdout ({}):", proc.stdout_path.display());
            eprintln!("{}", tail(&proc.stdout_path, 40));
            eprintln!("-- stderr ({}):", proc.stderr_path.display());
            eprintln!("{}", tail(&proc.stderr_path, 40));
        }
    }

    fn check_host_ifname(&self, name: &str) -> Result<()> {
        check_host_ifname(&self.shared, name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            self.dump_logs();
        }
        let state = std::mem::take(&mut *self.shared.state());

        terminate_all(&state.processes, process::TERM_GRACE);
        for ns in &state.namespaces {
            kill_netns_pids(ns);
        }
        for link in &state.host_links {
            // Usually already gone with its peer's namespace; only "not found" is expected here.
            let _ = cmd::output_with_timeout("ip", &["link", "del", link], DEFAULT_TIMEOUT);
        }
        for (key, old) in &state.host_sysctls {
            if let Err(e) = cmd::run("sysctl", &["-w", &format!("{key}={old}")]) {
                eprintln!("vrouter-tests: warning: restoring {key}: {e}");
            }
        }
        for ns in &state.namespaces {
            if let Err(e) = cmd::run("ip", &["netns", "del", ns]) {
                eprintln!("vrouter-tests: warning: {e}");
            }
        }
        if panicking {
            eprintln!(
                "vrouter-tests: logs of lab {} kept in {}",
                self.shared.prefix,
                self.shared.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.shared.dir);
        }
    }
}

/// A network namespace of a lab (or the root namespace, see [`Lab::host`]). A cheap handle: the
/// namespace itself belongs to the [`Lab`] and is deleted when the lab drops.
#[derive(Clone)]
pub struct Netns {
    lab: Arc<LabShared>,
    /// `None` for the root namespace.
    name: Option<String>,
}

impl Netns {
    /// The full namespace name (`<prefix>-<name>`), as `ip netns` knows it.
    /// Panics on the root-namespace handle, which has no name.
    pub fn name(&self) -> &str {
        self.name
            .as_deref()
            .expect("the root namespace handle (Lab::host) has no netns name")
    }

    /// The namespace name, or "the root namespace", for messages.
    pub(crate) fn name_or_host(&self) -> &str {
        self.name.as_deref().unwrap_or("the root namespace")
    }

    /// True for the handle from [`Lab::host`].
    pub fn is_host(&self) -> bool {
        self.name.is_none()
    }

    /// `program args` inside this namespace (`ip netns exec NAME program args`), as the
    /// (program, args) pair to run.
    fn wrap<'a>(&'a self, program: &'a str, args: &[&'a str]) -> (&'a str, Vec<&'a str>) {
        match &self.name {
            Some(name) => {
                let mut all = vec!["netns", "exec", name.as_str(), program];
                all.extend_from_slice(args);
                ("ip", all)
            }
            None => (program, args.to_vec()),
        }
    }

    /// Runs `program args` in the namespace with a time limit and returns its raw output; a
    /// non-zero exit is not an error, a timeout (the command is killed) or a failed start is.
    pub fn exec(&self, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        let (program, args) = self.wrap(program, args);
        output_with_timeout(program, &args, timeout)
    }

    /// [`Netns::exec`] with the default 30 s limit.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.exec(program, args, DEFAULT_TIMEOUT)
    }

    /// Runs `program args` in the namespace; it must exit 0 within 30 s. Returns stdout; the
    /// error names the full command and carries its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        self.run_timeout(program, args, DEFAULT_TIMEOUT)
    }

    /// [`Netns::run`] with an explicit time limit.
    pub fn run_timeout(&self, program: &str, args: &[&str], timeout: Duration) -> Result<String> {
        let (program, args) = self.wrap(program, args);
        let output = output_with_timeout(program, &args, timeout)?;
        check(&describe(program, &args), &output)
    }

    /// `ip -n NAME args` (plain `ip args` in the root namespace); must succeed.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = Vec::with_capacity(args.len() + 2);
        if let Some(name) = &self.name {
            all.extend(["-n", name.as_str()]);
        }
        all.extend_from_slice(args);
        cmd::run("ip", &all)
    }

    /// Starts `program args` in the namespace in the background. Stdout and stderr go to
    /// `<lab dir>/<n>-<program>.{stdout,stderr}`. The process is stopped when the returned
    /// handle or the lab drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<LabProcess> {
        let (wrapped, wrapped_args) = self.wrap(program, args);
        let command = describe(wrapped, &wrapped_args);
        let mut state = self.lab.state();
        let base = Path::new(program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".into());
        let stem = format!("{:02}-{base}", state.processes.len());
        let stdout_path = self.lab.dir.join(format!("{stem}.stdout"));
        let stderr_path = self.lab.dir.join(format!("{stem}.stderr"));
        let open = |path: &Path| {
            File::create(path)
                .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))
        };
        let child = Command::new(wrapped)
            .args(&wrapped_args)
            .stdin(Stdio::null())
            .stdout(open(&stdout_path)?)
            .stderr(open(&stderr_path)?)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start `{command}`: {e}")))?;
        let shared = Arc::new(ProcShared::new(command, child, stdout_path, stderr_path));
        state.processes.push(Arc::clone(&shared));
        Ok(LabProcess { shared })
    }

    /// Sets `lo` up (done by [`Lab::netns`] already).
    pub fn set_up_loopback(&self) -> Result<()> {
        if self.is_host() {
            return Ok(());
        }
        self.ip(&["link", "set", "lo", "up"]).map(drop)
    }

    /// `ip link set IF up`.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// `ip link set IF down`.
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["link", "set", ifname, "down"]).map(drop)
    }

    /// `ip addr add CIDR dev IF`, e.g. `addr_add("eth0", "10.0.1.2/24")`.
    pub fn addr_add(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// `ip route add DST via VIA` (`dst` may be `default`). Refused in the root namespace.
    pub fn route_add(&self, dst: &str, via: &str) -> Result<()> {
        if self.is_host() {
            return Err(Error::new(
                "route_add: the harness does not change host routes",
            ));
        }
        self.ip(&["route", "add", dst, "via", via]).map(drop)
    }

    /// `ip link set IF address MAC`.
    pub fn set_mac(&self, ifname: &str, mac: &str) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["link", "set", ifname, "address", mac]).map(drop)
    }

    /// `ip link set IF mtu MTU`.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["link", "set", ifname, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// `ip link set IF master BRIDGE`.
    pub fn link_set_master(&self, ifname: &str, bridge: &str) -> Result<()> {
        self.check_link(ifname)?;
        self.ip(&["link", "set", ifname, "master", bridge])
            .map(drop)
    }

    /// `ethtool -K IF FEATURE on|off`, e.g. `ethtool_offload("eth0", "tx", false)` turns off TX
    /// checksum offload (see the veth checksum trap in the environment notes).
    pub fn ethtool_offload(&self, ifname: &str, feature: &str, on: bool) -> Result<()> {
        self.check_link(ifname)?;
        let value = if on { "on" } else { "off" };
        self.run("ethtool", &["-K", ifname, feature, value])
            .map(drop)
    }

    /// MAC address of an interface, read from `ip -j link show`.
    pub fn mac(&self, ifname: &str) -> Result<String> {
        let json = self.ip(&["-j", "link", "show", "dev", ifname])?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| Error::new(format!("ip -j link show {ifname}: {e}")))?;
        value[0]["address"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::new(format!("no address for {ifname} in {json}")))
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (`ip netns exec` gives it the namespace's
    /// /proc/sys/net). In the root namespace the previous value is restored when the lab drops.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        if self.is_host() {
            let old = cmd::run("sysctl", &["-n", key])?.trim().to_string();
            let mut state = self.lab.state();
            if !state.host_sysctls.iter().any(|(k, _)| k == key) {
                state.host_sysctls.push((key.to_string(), old));
            }
        }
        self.run("sysctl", &["-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Waits until something listens on `port` (`ss -l`, TCP or UDP) in this namespace.
    pub fn wait_listening(&self, port: u16, udp: bool, timeout: Duration) -> Result<()> {
        let flags = if udp { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        let listening = || {
            self.run("ss", &[flags, &filter])
                .map(|out| !out.trim().is_empty())
                .unwrap_or(false)
        };
        if crate::wait_until(timeout, Duration::from_millis(20), listening) {
            Ok(())
        } else {
            let proto = if udp { "UDP" } else { "TCP" };
            Err(Error::new(format!(
                "nothing listening on {proto} port {port} in {} after {timeout:?}",
                self.name.as_deref().unwrap_or("the root namespace")
            )))
        }
    }

    fn check_link(&self, ifname: &str) -> Result<()> {
        if self.is_host() {
            check_host_ifname(&self.lab, ifname)
        } else {
            Ok(())
        }
    }
}

fn check_ifname_len(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(Error::new(format!(
            "interface name {name:?} must be 1 to {MAX_IFNAME} characters"
        )));
    }
    Ok(())
}

/// Root-namespace interfaces touched by the harness must be the lab's own.
fn check_host_ifname(lab: &LabShared, name: &str) -> Result<()> {
    if name.starts_with(&lab.if_prefix) {
        Ok(())
    } else {
        Err(Error::new(format!(
            "root-namespace interface {name:?} is not this lab's: name it with lab.ifname(..) \
             (prefix {})",
            lab.if_prefix
        )))
    }
}

/// Names from `ip netns list` (first word of each line).
pub fn list_netns() -> Result<Vec<String>> {
    let out = cmd::run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Pids of processes inside a namespace (`ip netns pids NAME`).
fn netns_pids(ns: &str) -> Vec<u32> {
    match cmd::output_with_timeout("ip", &["netns", "pids", ns], DEFAULT_TIMEOUT) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// SIGTERM to every process in the namespace, up to 1 s to exit, then SIGKILL.
fn kill_netns_pids(ns: &str) {
    let own = std::process::id();
    let pids: Vec<u32> = netns_pids(ns).into_iter().filter(|&p| p != own).collect();
    if pids.is_empty() {
        return;
    }
    for &pid in &pids {
        send_signal(pid, libc::SIGTERM);
    }
    let gone = crate::wait_until(Duration::from_secs(1), Duration::from_millis(20), || {
        netns_pids(ns).is_empty()
    });
    if !gone {
        for pid in netns_pids(ns) {
            if pid != own {
                send_signal(pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !netns_pids(ns).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Start time (clock ticks since boot, field 22 of /proc/PID/stat) of a live process.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `(pid % 100000, counter)` from a harness namespace name `vrt<n>-<c>-<name>`.
fn parse_netns_prefix(ns: &str) -> Option<(u32, u32)> {
    let rest = ns.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let n = parts.next()?;
    let c = parts.next()?;
    parts.next().filter(|name| !name.is_empty())?;
    let digits = |s: &str| !s.is_empty() && s.chars().all(|ch| ch.is_ascii_digit());
    if !digits(n) || !digits(c) {
        return None;
    }
    Some((n.parse().ok()?, c.parse().ok()?))
}

/// Is the process that created lab `prefix` still alive? Uses the lab's owner file (pid and
/// start time); without one, conservatively "alive" if any live pid matches `pid % 100000`.
fn lab_owner_alive(prefix: &str, pid_mod: u32) -> bool {
    let owner = fs::read_to_string(state_dir().join(prefix).join("owner")).ok();
    let parsed = owner.as_deref().and_then(|text| {
        let mut words = text.split_whitespace();
        let pid: u32 = words.next()?.parse().ok()?;
        let start: u64 = words.next()?.parse().ok()?;
        Some((pid, start))
    });
    if let Some((pid, start)) = parsed {
        return process_start_time(pid) == Some(start);
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return true;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| pid % 100_000 == pid_mod)
}

/// Removes namespaces named like the harness's (`vrt<n>-<c>-<name>`) whose creating process no
/// longer exists, after killing the processes inside them (veths with an end in them go too).
/// Touches nothing else. Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in list_netns()? {
        let Some((n, c)) = parse_netns_prefix(&ns) else {
            continue;
        };
        if lab_owner_alive(&format!("{NETNS_PREFIX}{n}-{c}"), n) {
            continue;
        }
        kill_netns_pids(&ns);
        cmd::run("ip", &["netns", "del", &ns])?;
        removed.push(ns);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_prefix_parsing() {
        assert_eq!(parse_netns_prefix("vrt123-4-pod1"), Some((123, 4)));
        assert_eq!(parse_netns_prefix("vrt123-4-a-b"), Some((123, 4)));
        assert_eq!(parse_netns_prefix("vrt123-4-"), None);
        assert_eq!(parse_netns_prefix("vrt123-4"), None);
        assert_eq!(parse_netns_prefix("vrtx-4-pod"), None);
        assert_eq!(parse_netns_prefix("other-1-2"), None);
        assert_eq!(parse_netns_prefix("vrt-1-2"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = std::process::id();
        assert!(process_start_time(pid).is_some());
    }

    #[test]
    fn ifname_rules() {
        let shared = LabShared {
            prefix: "vrt12345-7".into(),
            if_prefix: "v12345-7".into(),
            dir: PathBuf::from("/nonexistent"),
            state: Mutex::new(LabState::default()),
        };
        let lab = Lab {
            shared: Arc::new(shared),
        };
        assert_eq!(lab.ifname("p1"), "v12345-7p1");
        assert!(check_host_ifname(&lab.shared, "v12345-7p1").is_ok());
        assert!(check_host_ifname(&lab.shared, "eth0").is_err());
        assert!(std::panic::catch_unwind(|| lab.ifname("1p")).is_err());
        assert!(std::panic::catch_unwind(|| lab.ifname("toolongsuffix")).is_err());
        // Nothing was created: dropping this lab only tries to remove a missing directory.
    }
}
