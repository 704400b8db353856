//! The appliance's HTTP server: one accept loop for the room screen and the local API, over
//! HTTPS when `edge.toml` has an `[http_tls]` section (rustls with aws-lc-rs, TLS 1.2 and 1.3,
//! ALPN `http/1.1`), plain HTTP otherwise — which [`crate::config`] allows on loopback only.
//!
//! What every route can count on, whichever way the request came:
//! - the request's extensions hold a [`Transport`] (TLS or plain: the screen's cookies carry
//!   `Secure` over TLS) and axum's [`ConnectInfo`]`<SocketAddr>` (the client's address);
//! - over TLS, every response carries `Strict-Transport-Security` ([`http::HSTS`]).
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections at once (past that, clients wait in the
//! kernel's backlog, not in the appliance's memory), a TLS handshake must finish within
//! [`HANDSHAKE_TIMEOUT`] and a request's headers arrive within [`HEADER_READ_TIMEOUT`]. On
//! shutdown it stops accepting, lets requests in flight finish for [`SHUTDOWN_GRACE`], then
//! closes what is left (the screen's live streams never end by themselves).
//!
//! Not here: the routes ([`crate::web`]) and the certificate's names (the
//! clinic CA's `vigil-cloud pki issue-appliance --screen-dns … --screen-ip …`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use vigil_web::http;

pub use vigil_web::http::Transport;

use crate::config::HttpTls;

/// Connections served at once. A room has a few tablets and the appliance's own display; a
/// browser keeps up to six connections to a host, and every open session page holds one more
/// for its live stream, so 128 leaves room for a dozen tablets and API clients while bounding
/// what a flood of connections can make the appliance hold (a TLS connection costs tens of KB).
pub const MAX_CONNECTIONS: usize = 128;

/// Longest a TLS handshake may take. A tablet on the room's Wi-Fi finishes one in well under a
/// second; ten seconds covers a congested network and frees the slot of a client that
/// connects and says nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may take to send a request's headers, so a connection trickling bytes
/// cannot hold its slot for ever. hyper counts it from the end of the previous response on a
/// kept-alive connection, so it is also how long an idle connection stays open: it must be
/// longer than clients keep idle connections (reqwest 90 s, Firefox 115 s), or the
/// appliance closes a connection just as a client sends its next request on it and the
/// request fails (seen: a `POST …/stop` lost that way after a 30-second wait).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// How long requests in flight may finish after shutdown begins. Pages and API calls answer
/// in milliseconds; the live streams never end by themselves and are cut after this.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin
/// while the condition lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The one application protocol offered: HTTP/1.1 (the server speaks no HTTP/2).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What the server needs besides the routes: the TLS configuration, if any, and its limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Serve HTTPS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// At most this many connections at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    /// The production limits, over TLS when `tls` is given.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> ServerSettings {
        ServerSettings {
            tls,
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }

    /// How browsers reach this server.
    pub fn transport(&self) -> Transport {
        if self.tls.is_some() {
            Transport::Tls
        } else {
            Transport::Plain
        }
    }
}

/// The room screen's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or holds no PEM block of the right kind.
    #[error(
        "cannot read the room screen's {what} {} (edge.toml field `{field}`): {reason}; issue \
         it with `vigil-cloud pki issue-appliance --dir CA_DIR --site SITE --room ROOM \
         --screen-dns NAME --screen-ip ADDRESS` (screen-SITE-ROOM.pem and .key)",
        path.display()
    )]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The configuration field that names it.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration (e.g. the key is another's).
    #[error(
        "the room screen's certificate {} and key {} (edge.toml [http_tls]) cannot be used \
         together: {reason}; give the key issued with that certificate",
        cert.display(),
        key.display()
    )]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// Builds the HTTPS configuration from `[http_tls]`: the certificate chain and key from their
/// PEM files, TLS 1.2 and 1.3 with rustls's default (aws-lc-rs) suites, ALPN `http/1.1`, no
/// client certificates (people sign in; the API takes tokens). Every error names the file and
/// the field.
pub fn server_config(files: &HttpTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_err = |what, field, path: &Path, reason: String| TlsError::File {
        what,
        field,
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| file_err("certificate", "http_tls.cert", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(
            "certificate",
            "http_tls.cert",
            &files.cert,
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_err("private key", "http_tls.key", &files.key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains connections (at most
/// [`ServerSettings::shutdown_grace`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = settings.tls.clone().map(TlsAcceptor::from);
    // A server that may hold no connection would never answer: one at least.
    let max_connections = settings.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then a connection: past the limit, clients wait in the backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            app: app.clone(),
            acceptor: acceptor.clone(),
            peer,
            settings: settings.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            connection.run(tcp).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back within the grace period (or its handshake's end).
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// One accepted connection.
struct Connection {
    app: Router,
    acceptor: Option<TlsAcceptor>,
    peer: SocketAddr,
    settings: ServerSettings,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        // Pages and events are small writes that should leave at once.
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = self.acceptor.take() else {
            return self.http(tcp, Transport::Plain).await;
        };
        let handshake = tokio::time::timeout(self.settings.handshake_timeout, acceptor.accept(tcp));
        let stream = tokio::select! {
            result = handshake => result,
            _ = self.stop.wait_for(|stop| *stop) => return,
        };
        match stream {
            Ok(Ok(stream)) => self.http(stream, Transport::Tls).await,
            // A browser that does not trust the clinic CA yet, a port scanner, plain HTTP sent
            // to the HTTPS port: the client's problem, worth a debug line only.
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn http<S>(self, stream: S, transport: Transport)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            peer,
            settings,
            mut stop,
            ..
        } = self;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(transport);
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let mut res = app.oneshot(req).await?;
                if transport.is_tls() {
                    res.headers_mut().insert(
                        HeaderName::from_static(http::HSTS.0),
                        HeaderValue::from_static(http::HSTS.1),
                    );
                }
                Ok::<_, Infallible>(res)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop) => {}
        }
        // Shutting down: finish the request in flight, then close.
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(settings.shutdown_grace, conn)
            .await
            .is_err()
        {
            tracing::debug!(peer = %peer, "connection still busy at shutdown; closed");
        }
    }
}

#[cfg(test)]
mod tests;
