//! Command line: `ringgate serve` and the other subcommands. Each serve flag mirrors a config key
//! (`x_y` ↔ `--x-y`), documented once in `config.rs`; here they only override the file's values.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, RecvMode};
use crate::phoenix::router::{OnPush, Route};

fn parse_route(s: &str) -> Result<Route, String> {
    let (pattern, on_push) = s
        .split_once('=')
        .ok_or("expected PATTERN=broadcast|reject")?;
    let on_push = match on_push {
        "broadcast" => OnPush::Broadcast,
        "reject" => OnPush::Reject,
        other => {
            return Err(format!(
                "unknown on_push {other:?}: expected broadcast or reject"
            ))
        }
    };
    Ok(Route::new(pattern, on_push))
}

/// ringgate: a WebSocket gateway on io_uring for millions of idle Phoenix Channels connections.
#[derive(Debug, Parser)]
#[command(name = "ringgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    ///
    /// Example: `ringgate serve --listen 0.0.0.0:4000 --workers 4`
    Serve(Box<ServeArgs>),
    /// Measure what an idle joined connection costs (user and kernel memory) by ramping real
    /// connections against a gateway.
    ///
    /// Example: `ringgate profile --max 20000 --step 4000 --out /tmp/profile`
    Profile(crate::profile::ProfileArgs),
    /// Check every limit that caps connections on this box against a target.
    ///
    /// Example: `ringgate doctor --target-connections 1000000 --workers 50`
    Doctor(crate::doctor::DoctorArgs),
    /// Load a WebSocket / Phoenix server with simulated users and write a report.
    ///
    /// Example: `ringgate load --url ws://127.0.0.1:4000/socket/websocket --scenario seed --users 20000`
    Load(Box<crate::load::LoadArgs>),
    /// Watch a running gateway in the terminal: totals, rates and a row per worker, refreshed
    /// every second (q or Ctrl-C quits).
    ///
    /// Example: `ringgate top --admin http://127.0.0.1:4001`
    Top(crate::top::TopArgs),
}

/// Flags of `ringgate serve`; each overrides the config key of the same name (see `config.rs`).
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Public listener address [default: 127.0.0.1:4000].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Worker threads, one io_uring each [default: number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Log filter: error, warn, info, debug, trace [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log line format: text (colours only on a terminal) or json [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Connections per worker (fixed-file table size, capped by RLIMIT_NOFILE) [default: 65536].
    #[arg(long)]
    pub max_connections_per_worker: Option<u32>,
    /// listen(2) backlog [default: 4096].
    #[arg(long)]
    pub listen_backlog: Option<u32>,
    /// Time to complete the HTTP upgrade, ms [default: 10000].
    #[arg(long)]
    pub handshake_timeout_ms: Option<u64>,
    /// Close a connection silent for this long, ms [default: 60000].
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Wait for the peer's TCP close after our close frame, ms [default: 5000].
    #[arg(long)]
    pub close_timeout_ms: Option<u64>,
    /// Spread of the closes when draining (SIGTERM, POST /api/drain), ms [default: 30000].
    #[arg(long)]
    pub drain_ms: Option<u64>,
    /// Timer wheel resolution, ms [default: 1000].
    #[arg(long)]
    pub timer_tick_ms: Option<u64>,
    /// Largest frame payload, bytes (1009 past it) [default: 1048576].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Largest message, bytes (1009 past it) [default: 1048576].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Most fragments per message [default: 1024].
    #[arg(long)]
    pub max_fragments: Option<usize>,
    /// Largest upgrade request head, bytes [default: 8192].
    #[arg(long)]
    pub max_handshake_bytes: Option<usize>,
    /// Bytes a worker may hold for incomplete input before closing with 1009; 0 = off
    /// [default: 268435456].
    #[arg(long)]
    pub max_rx_bytes_per_worker: Option<usize>,
    /// Most upgrade request header lines [default: 32].
    #[arg(long)]
    pub max_handshake_headers: Option<usize>,
    /// Outbound bytes queued per connection before it is closed with 1008 [default: 262144].
    #[arg(long)]
    pub max_send_queue_bytes: Option<usize>,
    /// Connections per source address across workers; 0 = off [default: 0].
    #[arg(long)]
    pub max_connections_per_ip: Option<u32>,
    /// Resident bytes past which new connections are not accepted; 0 = off [default: 0].
    #[arg(long)]
    pub max_memory_bytes: Option<u64>,
    /// Upgrades in progress per worker before new connections are dropped [default: 4096].
    #[arg(long)]
    pub max_handshakes_per_worker: Option<u32>,
    /// Messages per second per connection before close 1008; 0 = off [default: 100].
    #[arg(long)]
    pub max_messages_per_second: Option<u32>,
    /// Joins per second per connection before join errors [default: 10].
    #[arg(long)]
    pub max_joins_per_second: Option<u32>,
    /// SO_SNDBUF of accepted sockets, bytes; 0 = kernel autotuning [default: 0].
    #[arg(long)]
    pub send_buffer_bytes: Option<u32>,
    /// How idle connections wait: poll (cheaper kernel memory) or multishot [default: poll].
    #[arg(long, value_enum)]
    pub recv_mode: Option<RecvMode>,
    /// How long a sleeping worker lets completions gather before it wakes, µs; ≤ 100000, Linux
    /// 6.12+ [default: 0].
    #[arg(long)]
    pub wake_batch_us: Option<u32>,
    /// Provided receive buffer size, bytes [default: 4096].
    #[arg(long)]
    pub recv_buffer_bytes: Option<u32>,
    /// Provided receive buffers per worker, a power of two [default: 1024].
    #[arg(long)]
    pub recv_buffers: Option<u16>,
    /// Submission queue entries per ring [default: 4096].
    #[arg(long)]
    pub sq_entries: Option<u32>,
    /// Completion queue entries per ring [default: 65536].
    #[arg(long)]
    pub cq_entries: Option<u32>,
    /// Enable the diagnostic echo endpoint at this path (off by default).
    #[arg(long)]
    pub echo_path: Option<String>,
    /// Phoenix Channels endpoint path [default: /socket/websocket].
    #[arg(long)]
    pub phoenix_path: Option<String>,
    /// Channels one connection may join [default: 100].
    #[arg(long)]
    pub max_channels_per_connection: Option<usize>,
    /// Lock stripes of the shared topic table [default: 64].
    #[arg(long)]
    pub topic_stripes: Option<usize>,
    /// Control-plane (publish API) listener [default: 127.0.0.1:4001].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Admin connections served at once (more wait in the listen backlog) [default: 256].
    #[arg(long)]
    pub admin_max_connections: Option<usize>,
    /// Time an admin request has for its headers, and again for its body and answer, ms
    /// [default: 10000].
    #[arg(long)]
    pub admin_timeout_ms: Option<u64>,
    /// Require `Authorization: Bearer KEY` on the admin API.
    #[arg(long)]
    pub api_key: Option<String>,
    /// A channel route PATTERN=broadcast|reject (repeatable; replaces the configured list).
    #[arg(long = "channels", value_parser = parse_route)]
    pub channels: Vec<Route>,
    /// [auth] HS256 secret: require a JWT on connect.
    #[arg(long)]
    pub auth_secret: Option<String>,
    /// [auth] PEM public key (RS256, or ES256 with --auth-algorithm ES256): require a JWT.
    #[arg(long)]
    pub auth_public_key_file: Option<String>,
    /// [auth] HS256, RS256 or ES256 [default: from the key kind].
    #[arg(long)]
    pub auth_algorithm: Option<String>,
    /// [auth] Required `aud` claim.
    #[arg(long)]
    pub auth_audience: Option<String>,
    /// [auth] Required `iss` claim.
    #[arg(long)]
    pub auth_issuer: Option<String>,
    /// [auth] Clock skew tolerated on exp/nbf, seconds [default: 30].
    #[arg(long)]
    pub auth_leeway_s: Option<u64>,
    /// [bus] Redis URL: redis://host:port[/db] or redis+cluster://host:port,host:port (off by default).
    #[arg(long)]
    pub bus_url: Option<String>,
    /// [bus] This node's unique name on the bus [default: the listener's host:port].
    #[arg(long)]
    pub bus_node_name: Option<String>,
    /// [bus] Wire format: ringgate (own envelope) or phoenix (Phoenix.PubSub's Redis adapter)
    /// [default: ringgate].
    #[arg(long, value_enum)]
    pub bus_format: Option<crate::bus::config::BusFormat>,
    /// [bus] With --bus-format phoenix: the Elixir app's PubSub name, e.g. MyApp.PubSub.
    #[arg(long)]
    pub bus_phoenix_pubsub: Option<String>,
    /// [bus] Linger before unsubscribing a topic with no local member, ms [default: 5000].
    #[arg(long)]
    pub bus_linger_ms: Option<u64>,
    /// [bus] Heartbeat (cluster view) interval, ms [default: 1000].
    #[arg(long)]
    pub bus_heartbeat_ms: Option<u64>,
    /// [bus] Redis Cluster: interval of the shard-subscription check, ms [default: 5000].
    #[arg(long)]
    pub bus_subscription_audit_ms: Option<u64>,
    /// [bus] A node without heartbeat for this long leaves the cluster view, ms [default: 5000].
    #[arg(long)]
    pub bus_node_ttl_ms: Option<u64>,
    /// [presence] Merge a topic's diffs over this long, ms; 0 = each change at once [default: 50].
    #[arg(long)]
    pub presence_batch_ms: Option<u64>,
    /// [presence] Entries tracked per topic [default: 10000].
    #[arg(long)]
    pub presence_max_members: Option<usize>,
    /// [presence] Largest meta fields of one entry, bytes of JSON [default: 512].
    #[arg(long)]
    pub presence_max_meta_bytes: Option<usize>,
    /// [presence] Event a client pushes to update its own meta [default: none, off].
    #[arg(long)]
    pub presence_update_event: Option<String>,
    /// [presence] A node silent this long has its entries removed, ms [default: 15000].
    #[arg(long)]
    pub presence_node_timeout_ms: Option<u64>,
    /// [presence] Heartbeat period between nodes, ms [default: 1500].
    #[arg(long)]
    pub presence_heartbeat_ms: Option<u64>,
    /// Allowed browser Origin (repeatable); none given = any.
    #[arg(long = "allowed-origins")]
    pub allowed_origins: Vec<String>,
    /// When a worker dies: exit (status 1, for a supervisor to restart) or keep-serving on the
    /// remaining workers [default: exit].
    #[arg(long, value_enum)]
    pub on_worker_death: Option<crate::config::OnWorkerDeath>,
    /// Test only: enables the /api/debug/* routes of the admin API (docs/configuration.md).
    #[arg(long, hide = true)]
    pub debug_fault_injection: bool,
}

macro_rules! override_fields {
    ($cfg:ident, $args:ident, $($field:ident),* $(,)?) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then these flags.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        override_fields!(
            cfg,
            self,
            listen,
            workers,
            log_level,
            log_format,
            max_connections_per_worker,
            listen_backlog,
            handshake_timeout_ms,
            idle_timeout_ms,
            close_timeout_ms,
            drain_ms,
            timer_tick_ms,
            max_frame_bytes,
            max_message_bytes,
            max_rx_bytes_per_worker,
            max_fragments,
            max_handshake_bytes,
            max_handshake_headers,
            max_send_queue_bytes,
            max_connections_per_ip,
            max_memory_bytes,
            max_handshakes_per_worker,
            max_messages_per_second,
            max_joins_per_second,
            send_buffer_bytes,
            recv_mode,
            wake_batch_us,
            recv_buffer_bytes,
            recv_buffers,
            sq_entries,
            cq_entries,
            phoenix_path,
            max_channels_per_connection,
            topic_stripes,
            admin_listen,
            admin_max_connections,
            admin_timeout_ms,
            on_worker_death,
        );
        cfg.debug_fault_injection = self.debug_fault_injection;
        let auth = &mut cfg.auth;
        for (flag, key) in [
            (&self.auth_secret, &mut auth.secret),
            (&self.auth_public_key_file, &mut auth.public_key_file),
            (&self.auth_algorithm, &mut auth.algorithm),
            (&self.auth_audience, &mut auth.audience),
            (&self.auth_issuer, &mut auth.issuer),
        ] {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        if self.auth_leeway_s.is_some() {
            auth.leeway_s = self.auth_leeway_s;
        }
        if self.api_key.is_some() {
            cfg.api_key = self.api_key.clone();
        }
        if self.bus_url.is_some() {
            cfg.bus.url = self.bus_url.clone();
        }
        if self.bus_node_name.is_some() {
            cfg.bus.node_name = self.bus_node_name.clone();
        }
        if let Some(f) = self.bus_format {
            cfg.bus.format = f;
        }
        if self.bus_phoenix_pubsub.is_some() {
            cfg.bus.phoenix_pubsub = self.bus_phoenix_pubsub.clone();
        }
        for (flag, key) in [
            (self.bus_linger_ms, &mut cfg.bus.linger_ms),
            (self.bus_heartbeat_ms, &mut cfg.bus.heartbeat_ms),
            (
                self.bus_subscription_audit_ms,
                &mut cfg.bus.subscription_audit_ms,
            ),
            (self.bus_node_ttl_ms, &mut cfg.bus.node_ttl_ms),
        ] {
            if let Some(v) = flag {
                *key = v;
            }
        }
        let p = &mut cfg.presence;
        for (flag, key) in [
            (self.presence_batch_ms, &mut p.batch_ms),
            (self.presence_node_timeout_ms, &mut p.node_timeout_ms),
            (self.presence_heartbeat_ms, &mut p.heartbeat_ms),
        ] {
            if let Some(v) = flag {
                *key = v;
            }
        }
        for (flag, key) in [
            (self.presence_max_members, &mut p.max_members),
            (self.presence_max_meta_bytes, &mut p.max_meta_bytes),
        ] {
            if let Some(v) = flag {
                *key = v;
            }
        }
        if self.presence_update_event.is_some() {
            p.update_event.clone_from(&self.presence_update_event);
        }
        if !self.channels.is_empty() {
            cfg.channels = self.channels.clone();
        }
        if self.echo_path.is_some() {
            cfg.echo_path = self.echo_path.clone();
        }
        if !self.allowed_origins.is_empty() {
            cfg.allowed_origins = self.allowed_origins.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("ringgate-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "idle_timeout_ms = 1234\nworkers = 3\n").unwrap();
        let cli = Cli::parse_from([
            "ringgate",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--workers",
            "5",
            "--max-frame-bytes",
            "99",
            "--bus-url",
            "redis://127.0.0.1:6999",
            "--bus-node-name",
            "n1",
            "--bus-format",
            "phoenix",
            "--bus-phoenix-pubsub",
            "MyApp.PubSub",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.workers, 5);
        assert_eq!(cfg.idle_timeout_ms, 1234);
        assert_eq!(cfg.max_frame_bytes, 99);
        assert_eq!(cfg.handshake_timeout_ms, 10_000);
        assert_eq!(cfg.bus.url.as_deref(), Some("redis://127.0.0.1:6999"));
        assert_eq!(cfg.bus.node_name.as_deref(), Some("n1"));
        assert_eq!(cfg.bus.format, crate::bus::config::BusFormat::Phoenix);
        assert_eq!(cfg.bus.phoenix_pubsub.as_deref(), Some("MyApp.PubSub"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
