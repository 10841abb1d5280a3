//! `ringgate serve`: probe the kernel, open the listeners, start the workers, wait for a signal.
//!
//! Listeners are created here, not in the workers, so the first one can pick the port (port 0 in
//! tests) and the others join it with `SO_REUSEPORT`: the kernel then spreads new connections over
//! the workers. Signals are blocked in every thread and taken synchronously by the main thread.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::admin;
use crate::config::Config;
use crate::hub::Hub;
use crate::ring::probe;
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
    threads: Vec<thread::JoinHandle<io::Result<Stats>>>,
    /// Broadcasts presence diffs; stopped after the workers.
    pub presence: crate::presence_flush::Flusher,
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

/// The fixed-file table size per worker: the configured maximum, capped by the soft nofile limit.
pub fn table_slots(cfg: &Config) -> u32 {
    let cap = u32::try_from(nofile_soft_limit()).unwrap_or(u32::MAX);
    let wanted = cfg.max_connections_per_worker;
    if wanted > cap {
        tracing::info!(
            wanted,
            cap,
            workers = cfg.workers,
            "max_connections_per_worker capped by the soft RLIMIT_NOFILE (the kernel's per-ring \
             limit): this process holds at most {} connections. Raise the limit (see kernel-tuning/) \
             or run more workers.",
            u64::from(cap) * cfg.workers as u64
        );
    }
    wanted.min(cap)
}

impl Server {
    /// Probes the kernel and starts every worker; returns once all are accepting.
    pub fn start(cfg: Config) -> Result<Self, Box<dyn std::error::Error>> {
        probe::check()?;
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
            .map(|_| Inbox::new().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let table = TopicTable::new(cfg.topic_stripes, cfg.workers);
        let hub = Arc::new(
            Hub::new(
                table,
                inboxes.clone(),
                cfg.router()?,
                crate::auth::Authenticator::from_config(&cfg.auth)?,
            )
            .with_presence(&cfg.presence, cfg.topic_stripes),
        );
        let flusher = crate::presence_flush::Flusher::start(hub.clone(), cfg.presence.batch_ms)?;
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        let mut threads = Vec::new();
        for (id, socket) in sockets.into_iter().enumerate() {
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
            threads.push(handle);
        }
        drop(ready_tx);
        let admin = match admin::start(cfg.clone(), hub.clone()) {
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
        let server = Self {
            local_addr,
            admin_addr: admin.addr,
            admin: Some(admin),
            hub,
            inboxes,
            threads,
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
            "ringgate listening"
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
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for the workers, stops the admin API, and returns the workers' counters.
    pub fn join(self) -> Vec<io::Result<Stats>> {
        let stats = self
            .threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
            })
            .collect();
        if let Some(admin) = &self.admin {
            admin.stop();
        }
        stats
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

/// Runs the gateway until SIGINT/SIGTERM (or `POST /api/drain`) has drained it; a second signal
/// exits at once.
pub fn run(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let set = block_signals();
    let drain_ms = cfg.drain_ms;
    let server = Server::start(cfg)?;
    let mut stopping = false;
    while !server.is_finished() {
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
            Ok(stats) => tracing::info!(worker = id, ?stats, "worker exited"),
            Err(e) => tracing::error!(worker = id, error = %e, "worker failed"),
        }
    }
    Ok(())
}
