//! Serving the router on the listener, plain HTTP or TLS, HTTP/1.1 and
//! HTTP/2, within the limits that keep slow, idle and hostile clients from
//! holding the registry (`[server]` in the config):
//!
//! - a request's headers must arrive within `header_read_timeout_seconds`
//!   of the connection opening or the previous answer ending (hyper's
//!   header read timeout, which also ends idle keep-alive connections);
//! - a request body that sends nothing for `body_read_timeout_seconds` is
//!   cut off ([`body_timeout`]);
//! - a client that reads nothing of an answer for `write_timeout_seconds`
//!   is disconnected, and at most `max_connections` connections are served
//!   at once, more being closed as they arrive ([`guard`]).

mod body_timeout;
mod guard;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::{Router, ServiceExt};
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper::body::Incoming;
use tower::ServiceBuilder;

use crate::config::ServerConfig;

pub use guard::Guard;

/// The most an HTTP/1 connection buffers (and so the largest request head
/// it takes). A pushed body arrives in chunks of this size, each held
/// until it is hashed and written: hyper's default, about 400 KiB, made an
/// upload hold several MiB. Smaller chunks push as fast (the storage
/// batches them), but below this size a single pull slowed: hyper buffers
/// no more of an answer than this ahead of the socket.
const HTTP1_BUFFER: usize = 128 * 1024;

/// The protocol timeouts, on axum_server's connection builder.
macro_rules! configure {
    ($builder:expr, $header_timeout:expr) => {{
        let builder = $builder;
        builder
            .http1()
            .header_read_timeout($header_timeout)
            .max_buf_size(HTTP1_BUFFER);
        // An idle HTTP/2 connection is pinged, and closed when the pings go
        // unanswered.
        builder
            .http2()
            .keep_alive_interval($header_timeout)
            .keep_alive_timeout($header_timeout);
    }};
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (for up to 30 seconds). With `tls`, serves
/// HTTPS.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    limits: &ServerConfig,
    tls: Option<RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_connections = raise_open_file_limit(limits.max_connections);
    let guard = Guard::new(
        max_connections,
        Duration::from_secs(limits.write_timeout_seconds),
    );
    let body_timeout = Duration::from_secs(limits.body_read_timeout_seconds);
    // Outside the router, which would box the layer once more per request.
    let service = ServiceBuilder::new()
        .map_request(move |request: Request<Incoming>| body_timeout::timed(request, body_timeout))
        .service(router);
    let service =
        ServiceExt::<Request<Incoming>>::into_make_service_with_connect_info::<SocketAddr>(service);
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let header_timeout = Duration::from_secs(limits.header_read_timeout_seconds);
    // The first request's timer starts with the connection: before it,
    // HTTP/1 and HTTP/2 are told apart, which hyper does not time.
    let server = axum_server::from_tcp(listener)?
        .handle(handle)
        .first_request_timeout(header_timeout);
    match tls {
        None => {
            let mut server = server.acceptor(guard);
            configure!(server.http_builder(), header_timeout);
            server.serve(service).await
        }
        Some(tls) => {
            let mut server = server.acceptor(RustlsAcceptor::new(tls).acceptor(guard));
            configure!(server.http_builder(), header_timeout);
            server.serve(service).await
        }
    }
}

/// Raises the soft limit on open files to the hard one (each connection
/// holds one, a blob being read another), and returns how many connections
/// fit under it, at most `wanted`: beyond the limit accepting would fail
/// for everyone, rather than for the connections over the cap.
fn raise_open_file_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // Files for the database, blobs being read and written, and the
    // connections berth makes itself (webhooks, S3, upstreams).
    let spare = 256;
    let fit = (limit.rlim_cur as usize).saturating_sub(spare) / 2;
    if wanted > fit {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = limit.rlim_cur,
            "server.max_connections lowered to {fit} to fit the open-file limit"
        );
        return fit.max(1);
    }
    wanted
}
