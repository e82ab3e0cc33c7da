//! Helpers shared by the integration suites that include them (`mod common;`).

#![allow(dead_code)]

pub mod consumers;
pub mod files;
pub mod fleet;
pub mod supervised;
