//! Background processes started by a lab, with their output kept in log files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{Error, Result};

/// How long a process gets between SIGTERM and SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);

/// One spawned process; shared between its [`LabProcess`] handle and the lab that kills it.
pub(crate) struct ProcShared {
    pub(crate) command: String,
    pub(crate) pid: u32,
    pub(crate) stdout_path: PathBuf,
    pub(crate) stderr_path: PathBuf,
    child: Mutex<ChildState>,
}

struct ChildState {
    child: Child,
    status: Option<ExitStatus>,
}

impl ProcShared {
    pub(crate) fn new(
        command: String,
        child: Child,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
    ) -> Self {
        ProcShared {
            command,
            pid: child.id(),
            stdout_path,
            stderr_path,
            child: Mutex::new(ChildState {
                child,
                status: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, ChildState> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Exit status if the process has exited (reaps it); `None` while it runs.
    pub(crate) fn try_wait(&self) -> Option<ExitStatus> {
        let mut state = self.state();
        if state.status.is_none() {
            // An error means the child cannot be waited for any more; treat it as exited.
            match state.child.try_wait() {
                Ok(Some(s)) => state.status = Some(s),
                Ok(None) => {}
                Err(_) => state.status = Some(ExitStatus::default()),
            }
        }
        state.status
    }

    /// Sends `signal` to the process if it has not been reaped yet. An unreaped child keeps its
    /// pid, so the signal cannot reach an unrelated process that reused the number.
    fn signal_if_running(&self, signal: libc::c_int) -> bool {
        let mut state = self.state();
        if state.status.is_none() {
            match state.child.try_wait() {
                Ok(Some(s)) => state.status = Some(s),
                Ok(None) => {}
                Err(_) => state.status = Some(ExitStatus::default()),
            }
        }
        if state.status.is_some() {
            return false;
        }
        // Signalled while holding the lock, so nobody can reap the child in between.
        send_signal(self.pid, signal);
        true
    }

    fn kill_and_reap(&self) {
        let mut state = self.state();
        if state.status.is_none() {
            let _ = state.child.kill();
            state.status = Some(state.child.wait().unwrap_or_default());
        }
    }

    /// Polls until the process exits or the deadline passes.
    fn wait_until(&self, deadline: Instant) -> Option<ExitStatus> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    pub(crate) fn exit_description(&self) -> String {
        match self.try_wait() {
            Some(status) => status.to_string(),
            None => "still running".to_string(),
        }
    }
}

/// SIGTERM to every process, up to `grace` for them to exit, then SIGKILL for the rest.
pub(crate) fn terminate_all(procs: &[Arc<ProcShared>], grace: Duration) {
    let running: Vec<&Arc<ProcShared>> = procs
        .iter()
        .filter(|p| p.signal_if_running(libc::SIGTERM))
        .collect();
    let deadline = Instant::now() + grace;
    for proc in running {
        proc.wait_until(deadline);
        proc.kill_and_reap();
    }
}

/// Sends a signal to exactly one process by pid; never to a process group or to "all".
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; pid > 1 names exactly
    // one process (not a group, not init).
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The last `lines` lines of a log file, or a note why it cannot be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A background process started with [`crate::Netns::spawn`]. Its stdout and stderr go to files
/// in the lab's directory. Dropping the handle stops the process (SIGTERM, then SIGKILL after a
/// short grace); so does dropping the [`crate::Lab`], whichever comes first.
pub struct LabProcess {
    pub(crate) shared: Arc<ProcShared>,
}

impl LabProcess {
    /// Process id (of the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.shared.command
    }

    /// True until the process has exited.
    pub fn is_running(&self) -> bool {
        self.shared.try_wait().is_none()
    }

    /// Exit status if it has exited, `None` while it runs.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.shared.try_wait()
    }

    /// Waits up to `timeout` for the process to exit by itself; an error (naming the command and
    /// its stderr) if it is still running then. The process is left running in that case.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        match self.shared.wait_until(Instant::now() + timeout) {
            Some(status) => Ok(status),
            None => Err(Error::new(format!(
                "`{}` still running after {timeout:?}; stderr: {}",
                self.shared.command,
                tail(&self.shared.stderr_path, 20)
            ))),
        }
    }

    /// Stops the process now (SIGTERM, SIGKILL after a short grace) and returns its exit status.
    pub fn stop(&self) -> Option<ExitStatus> {
        terminate_all(std::slice::from_ref(&self.shared), TERM_GRACE);
        self.shared.try_wait()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read(&self.shared.stdout_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.shared.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the stdout log file.
    pub fn stdout_path(&self) -> &Path {
        &self.shared.stdout_path
    }

    /// Path of the stderr log file.
    pub fn stderr_path(&self) -> &Path {
        &self.shared.stderr_path
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        terminate_all(std::slice::from_ref(&self.shared), TERM_GRACE);
    }
}
