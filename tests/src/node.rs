//! A vRouter node for out-of-process tests: `vrouter` and `vrouter-control` started from the
//! built binaries inside a lab namespace, with their sockets and state in the lab directory,
//! and `vrouterctl` to drive them.

use crate::cmd::Error;
use crate::{binary_path, wait_until, Lab, LabProcess, Netns, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The processes of one node.
pub struct Node {
    /// Namespace the node's processes run in.
    pub ns: Netns,
    /// Control socket of the dataplane.
    pub vrouter_socket: PathBuf,
    /// Control socket of the daemon (what `vrouterctl` talks to).
    pub control_socket: PathBuf,
    /// Daemon state directory.
    pub state_dir: PathBuf,
    /// CPU list for the dataplane workers.
    pub cores: String,
    /// More `vrouter` arguments (e.g. `--ct-timeout udp=2`).
    pub vrouter_args: Vec<String>,
    /// The dataplane process, while running.
    pub vrouter: Option<LabProcess>,
    /// The daemon process, while running.
    pub daemon: Option<LabProcess>,
}

/// Output of one `vrouterctl` run.
#[derive(Debug)]
pub struct CtlOutput {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Node {
    /// A node in `ns` whose files live in `lab.dir()/name`. Starts nothing.
    pub fn new(lab: &Lab, ns: &Netns, name: &str) -> Result<Node> {
        let dir = lab.dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::new(format!("{}: {e}", dir.display())))?;
        Ok(Node {
            ns: ns.clone(),
            vrouter_socket: dir.join("vrouter.sock"),
            control_socket: dir.join("control.sock"),
            state_dir: dir.join("state"),
            cores: "1".into(),
            vrouter_args: Vec::new(),
            vrouter: None,
            daemon: None,
        })
    }

    /// Starts `vrouter` and waits for its socket.
    pub fn start_vrouter(&mut self) -> Result<()> {
        let bin = binary_path("vrouter")?;
        let socket = self.vrouter_socket.to_string_lossy().to_string();
        let mut args = vec![
            "--socket",
            socket.as_str(),
            "--cores",
            self.cores.as_str(),
            "--idle",
            "adaptive",
        ];
        args.extend(self.vrouter_args.iter().map(String::as_str));
        let process = self.ns.spawn(&bin.to_string_lossy(), &args)?;
        self.vrouter = Some(process);
        self.wait_socket(&self.vrouter_socket.clone(), "vrouter")
    }

    /// Starts `vrouter-control`, with `config` as its `--config` when given.
    pub fn start_daemon(&mut self, config: Option<&Path>) -> Result<()> {
        let bin = binary_path("vrouter-control")?;
        let vrouter = self.vrouter_socket.to_string_lossy().to_string();
        let listen = self.control_socket.to_string_lossy().to_string();
        let state = self.state_dir.to_string_lossy().to_string();
        let mut args = vec![
            "--vrouter-socket",
            vrouter.as_str(),
            "--listen",
            listen.as_str(),
            "--state-dir",
            state.as_str(),
        ];
        let config = config.map(|c| c.to_string_lossy().to_string());
        if let Some(config) = &config {
            args.push("--config");
            args.push(config);
        }
        let process = self.ns.spawn(&bin.to_string_lossy(), &args)?;
        self.daemon = Some(process);
        self.wait_socket(&self.control_socket.clone(), "vrouter-control")
    }

    fn wait_socket(&self, path: &Path, what: &str) -> Result<()> {
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            std::os::unix::net::UnixStream::connect(path).is_ok()
        });
        if ok {
            Ok(())
        } else {
            Err(Error::new(format!(
                "{what} did not open {} within 10 s",
                path.display()
            )))
        }
    }

    /// Runs `vrouterctl --socket <daemon socket> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Result<CtlOutput> {
        let bin = binary_path("vrouterctl")?;
        let output = Command::new(bin)
            .arg("--socket")
            .arg(&self.control_socket)
            .args(args)
            .output()
            .map_err(|e| Error::new(format!("vrouterctl: {e}")))?;
        Ok(CtlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `vrouterctl ARGS` and requires success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl(args)?;
        if out.code != 0 {
            return Err(Error::new(format!(
                "vrouterctl {} failed ({}): {}{}",
                args.join(" "),
                out.code,
                out.stdout,
                out.stderr
            )));
        }
        Ok(out.stdout)
    }

    /// `vrouterctl -j ARGS` parsed as JSON.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.ctl_ok(&full)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(format!(
                "vrouterctl -j {}: bad JSON: {e}: {text}",
                args.join(" ")
            ))
        })
    }

    /// Kills a process with SIGKILL (a crash) and waits for it to be gone.
    pub fn crash(process: &LabProcess) -> Result<()> {
        let status = Command::new("kill")
            .args(["-9", &process.pid().to_string()])
            .status()
            .map_err(|e| Error::new(format!("kill: {e}")))?;
        if !status.success() {
            return Err(Error::new(format!("kill -9 {} failed", process.pid())));
        }
        process.wait_timeout(Duration::from_secs(5))?;
        Ok(())
    }

    /// True if any interface of the node's namespace still has an XDP program attached.
    pub fn xdp_attached(&self) -> Result<bool> {
        let links = self.ns.ip(&["-d", "link", "show"])?;
        Ok(links.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("prog/xdp")
                || l.contains(" xdp ")
                || l.contains("xdpgeneric")
                || l.contains("xdpdrv")
        }))
    }
}
