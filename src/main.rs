//! The `ringgate` binary: parses the command line and runs a subcommand.

use clap::Parser;
use ringgate::cli::{Cli, Command};
use ringgate::config::LogFormat;

/// Logs go to stderr: human-readable lines, coloured only when stderr is a terminal (a file or a
/// pipe gets no escape codes), or one JSON object per line for log shippers.
fn init_logging(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(args) => ringgate::profile::run(args).map_err(Into::into),
        Command::Serve(args) => match args.resolve() {
            Ok(cfg) => {
                init_logging(&cfg.log_level, cfg.log_format);
                ringgate::server::run(cfg)
            }
            Err(e) => Err(e.into()),
        },
        Command::Doctor(args) => ringgate::doctor::run(&args).map(|code| {
            if code != 0 {
                std::process::exit(code)
            }
        }),
        Command::Load(args) => std::process::exit(ringgate::load::main(*args)),
        Command::Top(args) => ringgate::top::run(args).map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("ringgate: {e}");
        std::process::exit(1);
    }
}
