//! Where an engine's lines for the operator go: stderr, above a progress bar when chaos
//! runs on a terminal with one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::machine::Progress;

#[derive(Default)]
pub struct Console {
    bar: Option<ProgressBar>,
}

impl Console {
    /// Plain lines on stderr.
    pub fn plain() -> Self {
        Self::default()
    }

    /// A progress bar of `len` faults (drawn only on a terminal; plain lines otherwise).
    pub fn with_bar(len: u64, phase: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] [{bar:24}] {pos}/{len} faults  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        Self { bar: Some(bar) }
    }

    pub fn say(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    pub fn progress(&self, p: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(p.phase);
            bar.set_position(p.faults);
            bar.set_message(p.message.clone());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
