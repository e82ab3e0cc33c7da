//! chaos: safe, measured resilience experiments on Linux, observed with eBPF.
//!
//! Layers, each importing only those below it (README, "Architecture"):
//!
//! - [`commands`]: one module per subcommand; arguments to a configuration, the exit code;
//! - [`driver`]: carries out the engines' actions and feeds them their inputs; the exporters
//!   ([`export`]) are sinks it feeds;
//! - the engines: [`experiment`] (`chaos run`), [`inject`] (the fault model and the
//!   injector), [`measure`] (recovery episodes), [`output`] (the event stream), and
//!   [`report`] (a result rendered);
//! - the protocol between engines and driver ([`machine`]), and the records they exchange
//!   ([`event`], [`fault`], [`episode`], [`audit`]);
//! - the machine underneath: [`session`] (bringing the kernel up), [`bpf`], [`decode`],
//!   [`kernel`], [`target`], [`launch`], [`source`], [`power`] (the power-loss fault's
//!   disk);
//! - [`sys`]: the clocks, the signals that end a run, error chains.

pub mod audit;
pub mod bpf;
pub mod cli;
pub mod commands;
pub mod decode;
pub mod driver;
pub mod episode;
pub mod event;
pub mod experiment;
pub mod export;
pub mod fault;
pub mod inject;
pub mod kernel;
pub mod launch;
pub mod machine;
pub mod measure;
pub mod output;
pub mod power;
pub mod report;
pub mod session;
pub mod source;
pub mod sys;
pub mod systemd;
pub mod target;
