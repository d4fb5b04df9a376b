//! rxcube's pages in the browser: score cards and the reports behind them, served by
//! `rxcube serve --http ADDR` next to the Flight SQL service, from the same snapshot, users and
//! scopes.
//!
//! - [`auth`]: sign-in at `/login` (the directory's accounts and argon2 hashes, the Flight SQL
//!   service's throttle and audit log), the session cookie (HttpOnly, SameSite=Strict, Secure
//!   under TLS) bound to the account, sign-out with a per-session CSRF token.
//! - [`data`]: the cube relations read through the signed-in user's scoped session, exactly as
//!   its SQL would be, under the server's limits ([`rxcube_server::Service::collect`]).
//! - [`card`]: the score card, `/card/<level>/<node>?period=YYYY-MM-DD`.
//! - [`rankings`]: the rankings report and its CSV.
//! - [`diagnostics`]: a day by hour, a week by day, six months by week, each with its CSV.
//! - [`bonus`]: target attainment and the bonus per tier, the budget estimator, with CSVs.
//! - [`chart`]: the inline SVG graphs; [`page`]: the layout and the (print) stylesheet.
//!
//! Every page is server-rendered HTML with inline SVG: no JavaScript, no request to another
//! host. A node outside the user's scope and a node that does not exist answer the same 404.

pub mod alerts;
pub mod auth;
pub mod bonus;
pub mod card;
pub mod chart;
pub mod data;
pub mod diagnostics;
pub mod page;
pub mod rankings;
pub mod search;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use rxcube_server::Service;

/// The web front end of one server.
pub struct Web {
    pub(crate) service: Arc<Service>,
    pub(crate) sessions: auth::Sessions,
    /// Signs the sign-in forms' CSRF tokens.
    pub(crate) login_key: auth::LoginKey,
    /// Pages are served over TLS: the cookie is `Secure`.
    pub(crate) secure: bool,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Web {
    /// Pages over `service`: sessions last `session_ttl`; `secure` when served over TLS.
    pub fn new(service: Arc<Service>, session_ttl: Duration, secure: bool) -> Arc<Self> {
        let per_user = service.limits().max_sessions_per_user.max(1);
        Arc::new(Self {
            service,
            sessions: auth::Sessions::new(session_ttl, per_user),
            login_key: auth::LoginKey::generate(),
            secure,
        })
    }
}

impl Web {
    /// How many page sessions are open (expired or ended ones are not counted once noticed).
    pub fn sessions_open(&self) -> usize {
        self.sessions.len()
    }
}

/// Every route of the pages.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(auth::home))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/style.css", get(page::style))
        .route("/card/{level}/{node}", get(card::card))
        .route("/search", get(search::page))
        .route("/alerts", get(alerts::page))
        .route("/report/rankings", get(rankings::page))
        .route("/report/rankings.csv", get(rankings::csv))
        // The diagnostics, `attainment` and `budget` (and their `.csv`).
        .route("/report/{kind}/{level}/{node}", get(diagnostics::report))
        .fallback(page::not_found_route)
        .method_not_allowed_fallback(page::method_not_allowed)
        .layer(axum::middleware::map_response(headers))
        .layer(axum::middleware::from_fn(gzip))
        .with_state(web)
}

/// Whether a request's `Accept-Encoding` takes gzip (not refused with `q=0`).
fn accepts_gzip(request: &axum::extract::Request) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Pages, stylesheet and CSVs gzipped for a client that accepts it (every body is a whole
/// rendered page, so it is compressed at once).
async fn gzip(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wanted = accepts_gzip(&request);
    let response = next.run(request).await;
    let textual = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/"));
    if !wanted || !textual || response.headers().contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    if bytes.len() < 512 {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zipped = std::io::Write::write_all(&mut encoder, &bytes).and_then(|()| encoder.finish());
    match zipped {
        Ok(z) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            Response::from_parts(parts, axum::body::Body::from(z))
        }
        Err(_) => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// What every response carries: no script, no other host, no framing, no caching of pages.
async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The pages' own forms carry their origin (checked on POSTs); no other host learns a
    // page's address.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The TLS configuration of the pages: the certificate chain and key of the Flight SQL port.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("bad TLS certificate or key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the pages on `listener` (over TLS with `tls`) until `shutdown` completes; requests
/// in flight then get [`rxcube_server::SHUTDOWN_GRACE`] to finish (a client that sends half a
/// request, or stops reading a response, does not keep the server from stopping).
pub async fn serve(
    web: Arc<Web>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(web);
    let Some(tls) = tls else {
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping.send(());
        });
        return rxcube_server::graced(serving.into_future(), stopped, "page requests")
            .await
            .context("the web server failed");
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Each connection watches `stop`: once it turns true the connection finishes the request in
    // flight, then closes (HTTP/1.1 keep-alive ends; HTTP/2 sends GOAWAY).
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("web: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stopping = stop_seen.clone();
        connections.spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let stream = tokio::select! {
                accepted = handshake => match accepted {
                    Ok(Ok(stream)) => stream,
                    _ => return,
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            let service = tower::ServiceExt::map_request(
                app,
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    request
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let _ = stopping.send(());
    let drained = async move {
        while connections.join_next().await.is_some() {}
        Ok::<(), std::convert::Infallible>(())
    };
    // Past the grace the JoinSet is dropped with the future, which aborts what is left.
    let _ = rxcube_server::graced(drained, stopped, "page requests").await;
    Ok(())
}
