//! The `ringgate` binary: parses the command line and runs a subcommand.

use clap::Parser;
use ringgate::cli::{Cli, Command};

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(args) => ringgate::profile::run(args).map_err(Into::into),
        Command::Serve(args) => match args.resolve() {
            Ok(cfg) => {
                init_logging(&cfg.log_level);
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
    };
    if let Err(e) = result {
        eprintln!("ringgate: {e}");
        std::process::exit(1);
    }
}
