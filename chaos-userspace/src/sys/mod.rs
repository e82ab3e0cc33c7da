//! Leaf helpers every layer may use and that use nothing of chaos: the clocks, and the
//! signals that end a run.

pub mod clock;
pub mod host;
pub mod stops;
pub mod trust;

/// An error and its causes on one line, the first line of each, without repeats (a
/// verifier log is long; `RUST_LOG=debug` shows it whole).
pub fn chain(err: &dyn std::error::Error) -> String {
    let first_line = |text: &str| {
        text.lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches(['.', ' '])
            .to_string()
    };
    let mut parts = vec![first_line(&err.to_string())];
    let mut source = err.source();
    while let Some(err) = source {
        let text = first_line(&err.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_joins_causes_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start the runtime")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("too many\nlines"));
        assert_eq!(super::chain(&err), "cannot start the runtime: too many");
    }
}
