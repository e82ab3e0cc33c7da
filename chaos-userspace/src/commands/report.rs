//! `chaos report RESULT.json [--html OUT.html]`: a run's result in the terminal, or as an
//! HTML page.

use std::path::Path;

use super::{EXIT_FAILURE, Failure};
use crate::{
    cli::ReportArgs,
    experiment::result::RunResult,
    report::{html, terminal, verdict_word},
};

pub fn run(args: ReportArgs) -> Result<u8, Failure> {
    let result = load(&args.result)?;
    match &args.html {
        Some(out) => {
            let page = html::page(&result);
            crate::sys::trust::create_output(out)
                .and_then(|mut f| std::io::Write::write_all(&mut f, page.as_bytes()))
                .map_err(|e| {
                    Failure::refused(format!("{}: cannot write the page: {e}", out.display()))
                })?;
            println!(
                "{}: {} episode(s), verdict {}",
                out.display(),
                result.episodes.len(),
                verdict_word(&result)
            );
        }
        None => {
            let mut out = std::io::stdout();
            terminal::render(&mut out, &result).map_err(|e| Failure::running(EXIT_FAILURE, e))?;
        }
    }
    Ok(0)
}

/// Reads a result of `chaos run --json`.
pub fn load(path: &Path) -> Result<RunResult, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::refused(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::refused(format!(
            "{}:{}:{}: not the result of chaos run (--json): {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}
