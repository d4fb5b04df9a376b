//! rxcube's Arrow Flight SQL server (`rxcube serve`).
//!
//! - [`service`]: the `FlightSqlService`: handshake (basic auth → bearer token), statements
//!   and prepared statements planned in the caller's scoped session, streamed results, catalog
//!   metadata.
//! - [`metadata`]: `GetSqlInfo`, `GetXdbcTypeInfo` and primary keys.
//! - [`wire`]: plain (non-view) types for clients, `?` placeholders, bound parameters.
//! - [`limits`]: what a statement, a session and a user may take (statement size and depth,
//!   memory, time, tickets, prepared statements), and the memory pools that hold them to it.
//! - [`throttle`]: failed sign-ins slow down the names and addresses making them.
//! - [`refresh`]: the server keeps the rollups fresh itself, in the background, debounced.

mod kept;
pub mod limits;
pub mod metadata;
pub mod refresh;
pub mod service;
pub mod throttle;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use arrow_flight::flight_service_server::FlightServiceServer;
use rxcube_warehouse::Warehouse;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use limits::Limits;
pub use service::Service;
/// The status of a refused call, as the service's public methods return it.
pub use tonic::{Code, Status};

/// How long calls in flight may take to finish once the server is told to stop; then they are
/// closed and the server stops anyway (the audit log is still written).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to serve.
#[derive(Debug, Clone)]
pub struct Options {
    pub address: SocketAddr,
    /// PEM certificate chain and private key: TLS when given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a bearer token is valid after sign-in.
    pub token_ttl: Duration,
    /// How often new table versions, rollups and user changes are picked up.
    pub reload: Duration,
    /// Refresh stale rollups in the background once no newer table version has shown up for
    /// this long ([`refresh`]); `None`: never (`--no-auto-refresh`).
    pub auto_refresh: Option<Duration>,
    /// How often the audit log is written.
    pub audit_flush: Duration,
    /// What statements, sessions and users may take.
    pub limits: Limits,
}

/// Runs `serving`, a server's graceful shutdown, to its end, or until [`SHUTDOWN_GRACE`] after
/// `stopped` (sent when the shutdown signal came): then the `what` still in flight (calls, page
/// requests) are closed, with a warning.
pub async fn graced<E>(
    serving: impl Future<Output = Result<(), E>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
    what: &str,
) -> Result<(), E> {
    tokio::select! {
        result = serving => result,
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(
                "{what} still in flight {} s after the shutdown signal: closing them",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

/// Serves `warehouse` until `shutdown` completes, then finishes the calls in flight (for at
/// most [`SHUTDOWN_GRACE`]) and writes the audit log. Prints `listening on
/// grpc[+tls]://ADDR` on stdout once listening.
pub async fn serve(
    warehouse: Warehouse,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = open(warehouse, &options).await?;
    serve_service(service, options, shutdown, || Ok(())).await
}

/// The service `serve` serves, for serving it alongside other front ends (the web pages).
pub async fn open(
    warehouse: Warehouse,
    options: &Options,
) -> anyhow::Result<std::sync::Arc<Service>> {
    Service::new(warehouse.clone(), options.token_ttl, options.limits.clone())
        .await
        .with_context(|| format!("cannot open the warehouse {}", warehouse.root()))
}

/// Serves `service` as [`serve`] does; `listening` runs right after the listening line is
/// printed (to print the lines of other front ends after it).
pub async fn serve_service(
    service: std::sync::Arc<Service>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
    listening: impl FnOnce() -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let warehouse = service.warehouse().clone();
    let listener = tokio::net::TcpListener::bind(options.address)
        .await
        .with_context(|| format!("cannot listen on {}", options.address))?;
    let local = listener.local_addr()?;
    // Peers that vanish without closing (a client killed, a network gone) are noticed within
    // a minute, ending their calls and the queries behind them.
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let scheme = match &options.tls {
        Some((cert, key)) => {
            // Two crypto providers are linked (ring, aws-lc-rs): name one for the process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let read = |p: &PathBuf| {
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let identity = Identity::from_pem(read(cert)?, read(key)?);
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .context("bad TLS certificate or key")?;
            "grpc+tls"
        }
        None => "grpc",
    };
    let audit = service.audit();
    let flusher = tokio::spawn(audit.clone().run(options.audit_flush));
    let reloader = {
        let service = service.clone();
        let every = options.reload;
        let refresher = options.auto_refresh.map(refresh::AutoRefresh::new);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                // First on the snapshot served at start, then after every reload.
                if let Some(r) = &refresher {
                    r.tick(&service);
                }
                tick.tick().await;
                if let Err(e) = service.reload().await {
                    tracing::warn!(
                        "cannot reload the warehouse (serving the previous snapshot): {e}"
                    );
                }
            }
        })
    };
    let sweeper = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                service.sweep();
            }
        })
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{local}")?;
        out.flush()?;
    }
    listening()?;
    tracing::info!(%local, warehouse = %warehouse.root(), "serving Flight SQL");
    // On the signal, calls in flight get SHUTDOWN_GRACE to finish. A client that holds a
    // stream open without reading it (a dashboard's pooled cursor) would otherwise keep the
    // server from stopping for as long as it lives.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server
        .add_service(FlightServiceServer::from_arc(service))
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: a response's last small frame (its trailers) goes out at once
            // instead of waiting for the client's delayed ACK (40 ms on Linux) behind Nagle.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                let _ = stopping.send(());
            },
        );
    let result = graced(serving, stopped, "calls").await;
    reloader.abort();
    sweeper.abort();
    flusher.abort();
    audit.flush().await.context("cannot write the audit log")?;
    result.context("the Flight SQL server failed")
}
