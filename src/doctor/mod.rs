//! `ringgate doctor`: can this box hold N connections, and if not, what stops it?
//!
//! It reads every limit that caps connection count or throughput (rlimits, sysctls, memory,
//! conntrack, the io_uring probe), computes how many connections each allows with the planned
//! workers, names the one that binds first and prints the command or file line that lifts each
//! failing one. Exit status 1 when the target cannot be reached, so scripts and CI can gate on it.
//!
//! - `parse`: pure parsers, file text → value.
//! - `facts`: reads those files below a root directory (fixtures in tests), plus the probe.
//! - `cost`: bytes per connection and per worker, from measurements on this kernel.
//! - `assess`, `caps`, `notes`: facts + plan → one row per limit, the verdict.
//! - `render`: the table.
//!
//! Guide to every knob: `kernel-tuning/README.md`.

pub mod assess;
mod caps;
pub mod cost;
pub mod facts;
mod notes;
pub mod parse;
pub mod render;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::config::{Config, RecvMode};

/// What this box runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The gateway only.
    Gateway,
    /// The load generator only: ephemeral ports and TIME_WAIT matter.
    Load,
    /// Both on one box (loopback tests): every connection costs two sockets here.
    Both,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Load => "load",
            Role::Both => "both",
        }
    }
}

/// Flags of `ringgate doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Connections the box must hold.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub target_connections: u64,
    /// Print a JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (one ring each) ringgate will run [default: the config's, else cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// The gateway's config file, for workers, max_connections_per_worker and ring sizes.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the config's max_connections_per_worker.
    #[arg(long)]
    pub max_connections_per_worker: Option<u32>,
    /// Override the config's recv_mode (it sets the kernel bytes per idle connection).
    #[arg(long, value_enum)]
    pub recv_mode: Option<RecvMode>,
    /// What runs on this box.
    #[arg(long, value_enum, default_value = "gateway")]
    pub role: Role,
    /// Source addresses the load generator binds (roles load and both).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub source_addrs: u64,
}

impl DoctorArgs {
    /// The plan: the gateway configuration (file, then flags) and the target.
    pub fn plan(&self) -> Result<assess::Plan, crate::config::ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        if let Some(m) = self.max_connections_per_worker {
            cfg.max_connections_per_worker = m;
        }
        if let Some(mode) = self.recv_mode {
            cfg.recv_mode = mode;
        }
        cfg.validate()?;
        Ok(assess::Plan {
            target_connections: self.target_connections,
            role: self.role,
            workers: cfg.workers as u64,
            max_connections_per_worker: u64::from(cfg.max_connections_per_worker),
            listen_backlog: u64::from(cfg.listen_backlog),
            listen_port: cfg.listen.port(),
            recv_mode: cfg.recv_mode,
            sq_entries: u64::from(cfg.sq_entries),
            cq_entries: u64::from(cfg.cq_entries),
            recv_buffer_bytes: u64::from(cfg.recv_buffer_bytes),
            source_addrs: self.source_addrs,
        })
    }
}

/// Runs `ringgate doctor` on this machine, prints the report, returns the exit status:
/// 0 when the target is reachable, 1 when some limit binds.
pub fn run(args: &DoctorArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let plan = args.plan()?;
    let report = assess::assess(facts::Facts::live(), plan);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::table(&report));
    }
    Ok(if report.reachable { 0 } else { 1 })
}
