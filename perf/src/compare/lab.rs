//! The namespaces of a comparison and the commands run in them.
//!
//! A [`Lab`] owns network namespaces named `<prefix>-<name>` (the prefix is unique per run:
//! `vpc<pid>`) and every process it started; dropping it kills the processes and deletes the
//! namespaces, so an error or an interrupted run leaves nothing behind. Only addresses inside
//! these namespaces are ever used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Result of the commands of a comparison: the error says which command failed and why.
pub type Result<T> = std::result::Result<T, String>;

/// The namespaces and processes of one comparison run.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Lab {
    /// A lab with its own prefix and scratch directory (nothing is created yet).
    pub fn new() -> Result<Lab> {
        let prefix = format!("vpc{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("vrouter-perf-{prefix}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        })
    }

    /// The scratch directory (configs, sockets, ready files); deleted with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates namespace `name` with its loopback up.
    pub fn add_ns(&mut self, name: &str) -> Result<String> {
        let ns = self.ns(name);
        run("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        self.ip(&ns, &["link", "set", "lo", "up"])?;
        // No IPv6 autoconfiguration noise (router solicitations, DAD) on the test links.
        let _ = self.exec(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        let _ = self.exec(
            &ns,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        );
        Ok(ns)
    }

    /// A veth pair `a` (in `ns_a`) -- `b` (in `ns_b`), one queue each, both up with `mtu`.
    pub fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str, mtu: u32) -> Result<()> {
        let mtu = mtu.to_string();
        run(
            "ip",
            &[
                "link",
                "add",
                a,
                "netns",
                ns_a,
                "numrxqueues",
                "1",
                "numtxqueues",
                "1",
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                b,
                "netns",
                ns_b,
                "numrxqueues",
                "1",
                "numtxqueues",
                "1",
                "mtu",
                &mtu,
            ],
        )?;
        self.ip(ns_a, &["link", "set", a, "up"])?;
        self.ip(ns_b, &["link", "set", b, "up"]).map(drop)
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec NS ARGS...`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The MAC address of interface `ifname` in `ns`.
    pub fn mac(&self, ns: &str, ifname: &str) -> Result<String> {
        Ok(self
            .exec(ns, &["cat", &format!("/sys/class/net/{ifname}/address")])?
            .trim()
            .to_string())
    }

    /// Starts `program ARGS...` inside `ns` in the background; its output goes to
    /// `<dir>/<label>.log`. The lab kills it when dropped (or [`Lab::stop`]).
    pub fn spawn(&mut self, label: &str, ns: &str, program: &Path, args: &[&str]) -> Result<()> {
        let log = self.dir.join(format!("{label}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    /// Whether the process started as `label` is still running.
    pub fn running(&mut self, label: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(l, _)| l == label)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of the process started as `label`.
    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Stops the processes started with `label` (SIGTERM, then SIGKILL after 2 s).
    pub fn stop(&mut self, label: &str) {
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(|(l, _)| l == label);
        self.children = others;
        for (_, child) in mine {
            terminate(child);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in std::mem::take(&mut self.children) {
            terminate(child);
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running inside a namespace of ours was started by this run.
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = run("kill", &["-9", pid]);
                }
            }
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaped.
fn terminate(mut child: Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = run("kill", &["-TERM", &child.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, "")
}

/// Runs a command (feeding `stdin`) to completion; its stdout, or an error with its stderr.
pub fn run_with_input(program: &str, args: &[&str], stdin: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        if !stdin.is_empty() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| format!("{program}: {e}"))?;
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            first_lines(&String::from_utf8_lossy(&output.stderr), 6)
        ))
    }
}

/// Busy time of one CPU (user, nice, system, irq, softirq, steal) from /proc/stat, in seconds.
pub fn cpu_busy_seconds(cpu: usize) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .ok_or_else(|| format!("/proc/stat has no {name}"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // USER_HZ is 100 on every Linux this project supports.
    Ok(busy as f64 / 100.0)
}

/// The first `n` lines of a command's error output (an nftables error about a 10k-rule set
/// quotes every rule after the first bad one).
fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.len() <= n {
        lines.join("\n")
    } else {
        format!(
            "{}\n... ({} more lines)",
            lines[..n].join("\n"),
            lines.len() - n
        )
    }
}
