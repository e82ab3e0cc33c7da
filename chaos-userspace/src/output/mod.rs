//! Where observed events go: a human table or JSON Lines, behind one trait.

pub mod human;
pub mod jsonl;
pub mod stream;

use crate::event::{Event, Summary};

pub trait Sink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
    fn summary(&mut self, summary: &Summary) -> std::io::Result<()>;
}

/// Nanoseconds as a short human duration: `850ns`, `12.3us`, `4.56ms`, `1.234s`.
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

/// A writer tests can read after handing it to a sink.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations() {
        assert_eq!(super::human_duration(850), "850ns");
        assert_eq!(super::human_duration(12_345), "12.3us");
        assert_eq!(super::human_duration(4_560_000), "4.56ms");
        assert_eq!(super::human_duration(1_234_000_000), "1.234s");
    }
}
