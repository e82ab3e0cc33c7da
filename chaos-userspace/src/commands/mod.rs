//! One module per subcommand, and what they share.

pub mod audit;
pub mod common;
pub mod doctor;
pub mod inject;
pub mod measure;
pub mod observe;
pub mod run;
