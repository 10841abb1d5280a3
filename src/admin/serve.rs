//! How the control plane takes its connections: a bounded number at once, every request bounded
//! in time, and a stop that lets requests in progress finish.
//!
//! The admin port is for a few clients (an operator, a dashboard per viewer, a scraper, the
//! publishing app's pool), but it is a TCP port like any other: without bounds one client that
//! opens connections and sends half a request line, or a body byte a minute, holds a task and a
//! buffer per connection for ever. So:
//! - at most `admin_max_connections` are served at once; the next waits in the listen backlog
//!   (not accepted: the kernel, not this process, holds it) until one ends;
//! - a connection has `admin_timeout_ms` to send a request's headers, which also closes a
//!   keep-alive connection that sends nothing for that long, and a request has as long again for
//!   its body and its answer (`deadline` in `admin/mod.rs`);
//! - an answer the client does not read is bounded by `TCP_USER_TIMEOUT`: the kernel drops a
//!   connection whose sent data (or zero-window probes) go unacknowledged that long.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Serves `app` on `listener` until `stop` is notified, then lets the requests in progress finish
/// (for at most `timeout`) and closes idle keep-alive connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    timeout: Duration,
    stop: Arc<Notify>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        // The permit before the accept: past the bound, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut stopped => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let socket = socket2::SockRef::from(&stream);
        if let Err(e) = socket.set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "admin connection: TCP_USER_TIMEOUT not set");
        }
        let _ = stream.set_nodelay(true);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(timeout);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin requests still in progress at the stop were cut");
    }
}

/// A failed accept: a connection reset before it was taken costs nothing, but out of descriptors
/// or memory the loop waits a moment instead of spinning on the same error.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "admin accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
