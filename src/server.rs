//! `ringgate serve`: probe the kernel, open the listeners, start the workers, wait for a signal.
//!
//! Listeners are created here, not in the workers, so the first one can pick the port (port 0 in
//! tests) and the others join it with `SO_REUSEPORT`: the kernel then spreads new connections over
//! the workers. Signals are blocked in every thread and taken synchronously by the main thread,
//! which also watches the worker threads: one that dies is contained (`supervise`) and the process
//! exits non-zero or keeps serving, per `on_worker_death`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::admin;
use crate::bus::Bus;
use crate::config::{Config, OnWorkerDeath};
use crate::hub::Hub;
use crate::ring::probe;
use crate::supervise::{self, Outcome};
use crate::topics::table::TopicTable;
use crate::worker::inbox::{Inbox, Msg};
use crate::worker::{Stats, Worker, WorkerSetup};

/// A started gateway: its address and the handles to stop it.
pub struct Server {
    pub local_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    admin: Option<admin::Admin>,
    pub hub: Arc<Hub>,
    inboxes: Vec<Arc<Inbox>>,
    /// Worker threads not yet joined (`None` once joined by `reap`).
    threads: Vec<Option<thread::JoinHandle<io::Result<Stats>>>>,
    /// What each joined worker ended with, by worker id.
    ended: Vec<Option<io::Result<Stats>>>,
    /// The server's own descriptor of each worker's listener, to shut it down if the worker dies.
    listeners: Vec<Option<Socket>>,
    /// Time to wait for the remaining workers to close their connections before exiting.
    exit_wait: Duration,
    on_worker_death: OnWorkerDeath,
    /// Broadcasts presence diffs; stopped after the workers.
    pub presence: crate::presence_flush::Flusher,
}

/// A worker that died, as seen by `Server::reap`.
#[derive(Debug, Clone)]
pub struct Death {
    pub worker: usize,
    pub cause: String,
    /// Memberships dropped from the topic table with it.
    pub memberships: u64,
}

fn listener(addr: SocketAddr, backlog: u32, send_buffer_bytes: u32) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: small frames go out at once, not after 40 ms.
    socket.set_tcp_nodelay(true)?;
    if send_buffer_bytes > 0 {
        // Inherited by accepted sockets: bounds the kernel's share of a slow consumer's backlog.
        socket.set_send_buffer_size(send_buffer_bytes as usize)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// The soft `RLIMIT_NOFILE`: the kernel's cap on one ring's fixed-file table.
pub fn nofile_soft_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a valid, owned struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// The fixed-file table size per worker: the configured maximum, capped by the soft nofile limit
/// and by the kernel's fixed-file maximum per ring.
pub fn table_slots(cfg: &Config) -> u32 {
    let nofile = u32::try_from(nofile_soft_limit()).unwrap_or(u32::MAX);
    table_slots_under(cfg, nofile)
}

fn table_slots_under(cfg: &Config, nofile: u32) -> u32 {
    // Below u32::MAX: the kernel's per-ring maximum is 2^20.
    let cap = crate::doctor::cost::ring_capacity(u64::from(nofile)) as u32;
    let wanted = cfg.max_connections_per_worker;
    if wanted > cap {
        let (by, remedy) = if cap == nofile {
            (
                "the soft RLIMIT_NOFILE (the kernel's per-ring limit)",
                "Raise the limit (see kernel-tuning/) or run more workers.",
            )
        } else {
            (
                "the kernel's fixed-file maximum per ring (1,048,576)",
                "Run more workers: no limit raises it.",
            )
        };
        tracing::info!(
            wanted,
            cap,
            workers = cfg.workers,
            "max_connections_per_worker capped by {by}: this process holds at most {} \
             connections. {remedy}",
            u64::from(cap) * cfg.workers as u64
        );
    }
    wanted.min(cap)
}

impl Server {
    /// Probes the kernel and starts every worker; returns once all are accepting.
    pub fn start(cfg: Config) -> Result<Self, Box<dyn std::error::Error>> {
        probe::check()?;
        if cfg.wake_batch_us > 0 {
            probe::check_min_wait()?;
        }
        let cfg = Arc::new(cfg);
        let first = listener(cfg.listen, cfg.listen_backlog, cfg.send_buffer_bytes)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let local_addr = first
            .local_addr()?
            .as_socket()
            .ok_or("listener has no inet address")?;
        let mut sockets = vec![first];
        for _ in 1..cfg.workers {
            sockets.push(listener(
                local_addr,
                cfg.listen_backlog,
                cfg.send_buffer_bytes,
            )?);
        }
        let slots = table_slots(&cfg);
        let inboxes = (0..cfg.workers)
            .map(|i| Inbox::new(i).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let table = TopicTable::new(cfg.topic_stripes, cfg.workers);
        let (bus, bus_startup) = match cfg.bus.target()? {
            Some(target) => {
                let name = cfg
                    .bus
                    .node_name
                    .clone()
                    .unwrap_or_else(|| local_addr.to_string());
                let (bus, startup) = Bus::new(
                    cfg.bus.clone(),
                    target,
                    name,
                    local_addr.to_string(),
                    cfg.admin_listen.to_string(),
                    cfg.channels
                        .iter()
                        .any(|r| r.presence)
                        .then(|| cfg.presence.clone()),
                    // The largest payload this node publishes: a client's message or an admin
                    // publish; a node with the same configuration publishes nothing larger.
                    cfg.max_message_bytes.max(crate::admin::MAX_BODY_BYTES),
                );
                (Some(bus), Some(startup))
            }
            None => (None, None),
        };
        let hub = Arc::new(
            Hub::new(
                table,
                inboxes.clone(),
                cfg.router()?,
                crate::auth::Authenticator::from_config(&cfg.auth)?,
                bus,
            )
            .with_presence(&cfg.presence, cfg.topic_stripes),
        );
        let flusher = crate::presence_flush::Flusher::start(hub.clone(), cfg.presence.batch_ms)?;
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        let mut threads = Vec::new();
        let mut listeners = Vec::new();
        for (id, socket) in sockets.into_iter().enumerate() {
            listeners.push(Some(socket.try_clone()?));
            let setup = WorkerSetup {
                id,
                cfg: cfg.clone(),
                listener: OwnedFd::from(socket),
                inbox: inboxes[id].clone(),
                table_slots: slots,
                hub: hub.clone(),
            };
            let ready = ready_tx.clone();
            let handle = thread::Builder::new()
                .name(format!("ringgate-w{id}"))
                .spawn(move || {
                    let worker = match Worker::new(setup) {
                        Ok(w) => w,
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = ready.send((id, Err(e)));
                            return Err(io::Error::other(msg));
                        }
                    };
                    let _ = ready.send((id, Ok(())));
                    worker.run()
                })?;
            threads.push(Some(handle));
        }
        drop(ready_tx);
        let admin = match admin::start(cfg.clone(), hub.clone(), local_addr) {
            Ok(a) => a,
            Err(e) => {
                for inbox in &inboxes {
                    inbox.send(Msg::Drain { drain_ms: 0 });
                }
                return Err(
                    format!("cannot start the admin API on {}: {e}", cfg.admin_listen).into(),
                );
            }
        };
        if let Some(startup) = bus_startup {
            // Connect timeout, then up to two heartbeats of a name-clash check, then margin.
            let wait = Duration::from_millis(
                cfg.bus.connect_timeout_ms * 2 + cfg.bus.node_ttl_ms.min(10_000) + 1000,
            );
            if let Err(e) = startup.wait(wait) {
                admin.stop();
                for inbox in &inboxes {
                    inbox.send(Msg::Drain { drain_ms: 0 });
                }
                return Err(e.into());
            }
        }
        let server = Self {
            local_addr,
            admin_addr: admin.addr,
            admin: Some(admin),
            hub,
            inboxes,
            ended: (0..threads.len()).map(|_| None).collect(),
            threads,
            listeners,
            exit_wait: Duration::from_millis(cfg.close_timeout_ms.saturating_add(1_000)),
            on_worker_death: cfg.on_worker_death,
            presence: flusher,
        };
        for _ in 0..cfg.workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => {
                    server.stop();
                    let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                        " (the fixed-file table exceeds RLIMIT_NOFILE: lower max_connections_per_worker or raise the limit)"
                    } else {
                        ""
                    };
                    return Err(format!("worker {id} failed to start: {e}{hint}").into());
                }
                Err(_) => return Err("a worker exited during start-up".into()),
            }
        }
        tracing::info!(
            addr = %local_addr,
            admin = %server.admin_addr,
            workers = cfg.workers,
            slots_per_worker = slots,
            "ringgate listening; dashboard http://{0}/ · chat http://{0}/chat · metrics http://{0}/metrics",
            server.admin_addr
        );
        Ok(server)
    }

    /// Asks every worker to drain: stop accepting, close connections with 1012 spread over
    /// `drain_ms`, exit when empty.
    pub fn drain(&self, drain_ms: u64) {
        for inbox in &self.inboxes {
            inbox.send(Msg::Drain { drain_ms });
        }
    }

    /// Drains with no spreading: every connection is sent its close frame now.
    pub fn stop(&self) {
        self.drain(0);
    }

    /// Whether every worker thread has exited.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().flatten().all(|t| t.is_finished())
    }

    /// Workers still running.
    pub fn live_workers(&self) -> usize {
        self.threads
            .iter()
            .flatten()
            .filter(|t| !t.is_finished())
            .count()
    }

    /// What the process does when a worker dies.
    pub fn on_worker_death(&self) -> OnWorkerDeath {
        self.on_worker_death
    }

    /// Joins every worker thread that has ended since the last call, contains each one that died
    /// (see `supervise`) and returns those. Cheap when nothing ended: one flag read per worker.
    pub fn reap(&mut self) -> Vec<Death> {
        let mut deaths = Vec::new();
        for id in 0..self.threads.len() {
            if !self.threads[id].as_ref().is_some_and(|t| t.is_finished()) {
                continue;
            }
            let Some(handle) = self.threads[id].take() else {
                continue;
            };
            let listener = self.listeners[id].take();
            match supervise::outcome(handle.join()) {
                Outcome::Exited(stats) => self.ended[id] = Some(Ok(*stats)),
                Outcome::Died(cause) => {
                    let memberships = supervise::contain(id, listener.as_ref(), &self.hub);
                    tracing::error!(
                        worker = id,
                        cause = %cause,
                        memberships_dropped = memberships,
                        "worker {id} died: {cause}"
                    );
                    self.ended[id] = Some(Err(io::Error::other(cause.clone())));
                    deaths.push(Death {
                        worker: id,
                        cause,
                        memberships,
                    });
                }
            }
        }
        deaths
    }

    /// Waits for the workers, stops the admin API, and returns the workers' counters.
    pub fn join(mut self) -> Vec<io::Result<Stats>> {
        for (id, t) in self.threads.iter_mut().enumerate() {
            if let Some(t) = t.take() {
                self.ended[id] = Some(match supervise::outcome(t.join()) {
                    Outcome::Exited(stats) => Ok(*stats),
                    Outcome::Died(cause) => Err(io::Error::other(cause)),
                });
            }
        }
        if let Some(admin) = &self.admin {
            admin.stop();
        }
        std::mem::take(&mut self.ended)
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("worker never joined"))))
            .collect()
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts later, so that the main
/// thread can take them synchronously with `sigtimedwait`.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a zeroed, owned sigset_t; pthread_sigmask with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// The default answer to a worker's death: close the other workers' connections (1012, at once),
/// wait for them at most the close timeout, and fail so that `main` exits with status 1 and a
/// supervisor restarts the process.
fn exit_after_death(
    mut server: Server,
    set: &libc::sigset_t,
    death: &Death,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::error!(
        worker = death.worker,
        "on_worker_death = exit: stopping the other workers and exiting with status 1"
    );
    server.stop();
    let deadline = std::time::Instant::now() + server.exit_wait;
    while !server.is_finished() && std::time::Instant::now() < deadline {
        server.reap();
        if wait_signal(set, Duration::from_millis(100)).is_some() {
            break;
        }
    }
    server.reap();
    Err(format!("worker {} died: {}", death.worker, death.cause).into())
}

/// Runs the gateway until SIGINT/SIGTERM (or `POST /api/drain`) has drained it; a second signal
/// exits at once.
pub fn run(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let set = block_signals();
    let drain_ms = cfg.drain_ms;
    let mut server = Server::start(cfg)?;
    let mut stopping = false;
    while !server.is_finished() {
        for death in server.reap() {
            if stopping {
                continue;
            }
            let live = server.live_workers();
            if server.on_worker_death() == OnWorkerDeath::KeepServing && live > 0 {
                tracing::warn!(
                    worker = death.worker,
                    live_workers = live,
                    "on_worker_death = keep_serving: serving on the remaining workers"
                );
                continue;
            }
            return exit_after_death(server, &set, &death);
        }
        if let Some(sig) = wait_signal(&set, Duration::from_millis(200)) {
            if stopping {
                tracing::warn!(signal = sig, "second signal: exiting now");
                std::process::exit(130);
            }
            tracing::info!(
                signal = sig,
                drain_ms,
                "draining: closing connections with 1012; a second signal exits now"
            );
            stopping = true;
            server.drain(drain_ms);
        }
    }
    for (id, result) in server.join().into_iter().enumerate() {
        match result {
            Ok(stats) => tracing::info!(
                worker = id,
                accepted = stats.accepted,
                closed = stats.closed,
                joins = stats.joins,
                broadcasts = stats.broadcasts,
                deliveries = stats.deliveries,
                slow_consumer_closes = stats.send_queue_overflows,
                "worker exited"
            ),
            Err(e) => tracing::error!(worker = id, error = %e, "worker failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_capped_by_nofile_and_by_the_kernels_fixed_file_maximum() {
        let mut cfg = Config {
            max_connections_per_worker: 16 << 20,
            ..Config::default()
        };
        assert_eq!(table_slots_under(&cfg, 20_000), 20_000);
        // A nofile limit above the kernel's per-ring maximum no longer sizes a table the kernel
        // refuses to register.
        assert_eq!(table_slots_under(&cfg, 4 << 20), 1 << 20);
        cfg.max_connections_per_worker = 65_536;
        assert_eq!(table_slots_under(&cfg, 4 << 20), 65_536);
        assert_eq!(table_slots_under(&cfg, 20_000), 20_000);
    }
}
