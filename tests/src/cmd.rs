//! Running external commands with a time limit, and the harness error type.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Time limit for commands run through [`crate::Netns::output`] and [`crate::Netns::run`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Error of every fallible harness call: one human-readable message that names the command
/// and carries its stderr when a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result of harness calls.
pub type Result<T> = std::result::Result<T, Error>;

/// `program arg1 arg2`, quoting arguments that contain spaces, for messages.
pub(crate) fn describe(program: &str, args: &[&str]) -> String {
    let mut text = String::from(program);
    for arg in args {
        text.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            text.push('\'');
            text.push_str(arg);
            text.push('\'');
        } else {
            text.push_str(arg);
        }
    }
    text
}

/// Runs `program args` with stdin closed, captures stdout and stderr, and kills it (by its pid)
/// when it runs longer than `timeout`. A non-zero exit is not an error here.
pub(crate) fn output_with_timeout(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Output> {
    let cmdline = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("cannot start `{cmdline}`: {e}")))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let status = match wait_with_deadline(&mut child, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            let err = collect(&stderr);
            return Err(Error::new(format!(
                "`{cmdline}` did not finish within {timeout:?} and was killed; stderr: {}",
                String::from_utf8_lossy(&err).trim()
            )));
        }
        Err(e) => return Err(Error::new(format!("waiting for `{cmdline}`: {e}"))),
    };
    Ok(Output {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    })
}

/// Turns a finished command into its stdout, or an error naming the command with its stderr.
pub(crate) fn check(cmdline: &str, output: &Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut message = format!("`{cmdline}` failed ({})", output.status);
    if !stderr.trim().is_empty() {
        message.push_str(&format!("; stderr: {}", stderr.trim()));
    }
    if !stdout.trim().is_empty() {
        message.push_str(&format!("; stdout: {}", stdout.trim()));
    }
    Err(Error::new(message))
}

/// Runs a command that must succeed (default time limit) and returns its stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = output_with_timeout(program, args, DEFAULT_TIMEOUT)?;
    check(&describe(program, args), &output)
}

/// Polls `child` until it exits (`Some(status)`) or the deadline passes (`None`).
pub(crate) fn wait_with_deadline(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

type Pending = mpsc::Receiver<Vec<u8>>;

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> Pending {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    }
    rx
}

/// What a reader thread collected. Bounded wait: a grandchild that keeps the pipe open after
/// the command exited must not hang the test.
fn collect(pending: &Pending) -> Vec<u8> {
    pending
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_spaces() {
        assert_eq!(describe("ip", &["link", "a b", ""]), "ip link 'a b' ''");
    }

    #[test]
    fn timeout_kills_and_reports() {
        let start = Instant::now();
        let err = output_with_timeout("sleep", &["5"], Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(err.message().contains("did not finish"), "{err}");
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(err.message().contains("sh -c"), "{err}");
        assert!(err.message().contains("oops"), "{err}");
        assert_eq!(run("sh", &["-c", "echo hi"]).unwrap(), "hi\n");
    }
}
