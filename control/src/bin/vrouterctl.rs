//! `vrouterctl`: the operator CLI (see `control::cli` and docs/cli-reference.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code =
        control::cli::main_with_args(std::env::args_os(), &mut stdout.lock(), &mut stderr.lock());
    ExitCode::from(code)
}
