//! `vrouter-perf report FILE...`: the tables of saved `compare` results (`compare --out`), so
//! BENCHMARKS.md is regenerated from a run instead of being typed.
//!
//! Each file is rendered as `compare` renders it (one section per file, in the order given).
//! With `--update DOC`, the text between the lines `<!-- vrouter-perf report: begin -->` and
//! `<!-- vrouter-perf report: end -->` of DOC is replaced by the tables (the markers stay);
//! a document without both markers is refused and left untouched.

use crate::compare::{render_markdown, Results};
use std::path::PathBuf;

/// The opening marker of the generated region.
pub const BEGIN: &str = "<!-- vrouter-perf report: begin -->";
/// The closing marker.
pub const END: &str = "<!-- vrouter-perf report: end -->";

/// `vrouter-perf report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Results saved by `vrouter-perf compare --out FILE`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Replace the generated region of this document (e.g. BENCHMARKS.md) instead of
    /// printing.
    #[arg(long, value_name = "DOC")]
    pub update: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: &ReportArgs) -> Result<(), String> {
    let mut tables = String::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let results: Results =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        tables.push_str(&format!(
            "From `{}`:\n\n",
            path.file_name().map_or(path.display().to_string(), |n| n
                .to_string_lossy()
                .into_owned())
        ));
        tables.push_str(&render_markdown(&results));
        tables.push('\n');
    }
    match &args.update {
        None => {
            print!("{tables}");
            Ok(())
        }
        Some(doc) => {
            let text =
                std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
            let updated = replace_region(&text, &tables)
                .ok_or_else(|| format!("{}: no `{BEGIN}` ... `{END}` region", doc.display()))?;
            std::fs::write(doc, updated).map_err(|e| format!("{}: {e}", doc.display()))?;
            eprintln!("{} updated", doc.display());
            Ok(())
        }
    }
}

/// `text` with the lines between the markers replaced by `tables`; `None` without both
/// markers in order.
pub fn replace_region(text: &str, tables: &str) -> Option<String> {
    let begin = text.find(BEGIN)?;
    let after_begin = begin + BEGIN.len();
    let end = after_begin + text[after_begin..].find(END)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &text[..after_begin],
        tables.trim_end(),
        &text[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_region_between_the_markers_changes() {
        let doc = format!("# Title\nbefore\n{BEGIN}\nold table\n{END}\nafter\n");
        let new = replace_region(&doc, "| new |\n").unwrap();
        assert_eq!(
            new,
            format!("# Title\nbefore\n{BEGIN}\n\n| new |\n{END}\nafter\n")
        );
        // Idempotent.
        assert_eq!(replace_region(&new, "| new |\n").unwrap(), new);
        assert!(replace_region("no markers", "x").is_none());
        assert!(replace_region(&format!("{END}\n{BEGIN}\n"), "x").is_none());
    }
}
