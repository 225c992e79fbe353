//! The `iptables-init` binary: parse istio-iptables flags, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use iptables_init::app;
use iptables_init::cli::{self, CliError, LogLevel, ProcessEnvironment};
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let inv = match cli::parse(std::env::args_os(), &ProcessEnvironment) {
        Ok(inv) => inv,
        Err(CliError::Usage(e)) => {
            // --help prints to stdout and succeeds; usage mistakes exit 2, as clap does.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        Err(e) => {
            eprintln!("iptables-init: {e}");
            return ExitCode::from(1);
        }
    };
    let level = match inv.options.log_level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level)
        .with_target(false)
        .init();
    for w in &inv.warnings {
        tracing::warn!("{w}");
    }
    match app::run(inv, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iptables-init: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
