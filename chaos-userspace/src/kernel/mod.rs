//! What the running kernel offers: tracepoint layouts, BTF, capabilities, features.

pub mod btf;
pub mod format;
pub mod layout;
pub mod preflight;
pub mod tracefs;
