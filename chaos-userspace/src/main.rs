use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = chaos::cli::Cli::parse(); // exits 2 with clap's message on bad usage
    match chaos::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("chaos: error: {}", failure.one_line());
            log::debug!("{:?}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
