//! The aggregator assembled: storage, the QUIC sync endpoint and the HTTP API, started from a
//! [`CloudConfig`] and stopped cleanly; and the revocation list watched while running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{CloudConfig, StoreKind};
use crate::metrics::Metrics;
use crate::store::CloudStore;
use crate::sync::{self, SyncServer};
use crate::tls;
use crate::web::{self, ApiState};

/// The database file inside the data directory.
pub const DB_FILE: &str = "vigil-cloud.db";

/// How often the CRL file is checked for a new revocation.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// Errors starting the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the cloud database ({store}): {reason}")]
    Database {
        /// Which: the SQLite file, or PostgreSQL's `host:port/database`.
        store: String,
        /// Why.
        reason: String,
    },
    /// A certificate file is missing or wrong.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens the configured store: the SQLite file in `data_dir` (created with the directory if
/// missing), or the PostgreSQL database of `[store]`, with TLS when `ca_file` is given.
pub fn open_store(config: &CloudConfig) -> Result<CloudStore, StartError> {
    match config.store.kind {
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
            let db = config.data_dir.join(DB_FILE);
            CloudStore::open(&db).map_err(|e| StartError::Database {
                store: format!("sqlite {}", db.display()),
                reason: e.to_string(),
            })
        }
        StoreKind::Postgres => {
            let failed = |reason: String| StartError::Database {
                store: "postgres".into(),
                reason,
            };
            let url = config.store.postgres_url().map_err(failed)?;
            let ca = match &config.store.ca_file {
                Some(path) => Some(tls::read_certs(path, "PostgreSQL CA certificate")?),
                None => None,
            };
            CloudStore::open_postgres(&url, ca.as_deref()).map_err(|e| failed(e.to_string()))
        }
    }
}

/// A running aggregator.
#[derive(Debug)]
pub struct Cloud {
    /// Where the sync endpoint listens (UDP).
    pub sync_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// This instance's name (in the appliance registry).
    pub instance: String,
    /// The storage.
    pub store: Arc<CloudStore>,
    _watch: Option<crate::store::ChangeWatch>,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Cloud {
    /// Opens storage, checks certificates, binds both endpoints. Inside a tokio runtime.
    pub async fn start(config: CloudConfig) -> Result<Cloud, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        // The store is synchronous (PostgreSQL's client blocks): opened, migrated and given the
        // site configurations on a blocking thread.
        let store = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let store = open_store(&config)?;
                ensure_site_configs(&store, &config).map_err(|reason| StartError::Database {
                    store: store.describe(),
                    reason,
                })?;
                Ok::<_, StartError>(Arc::new(store))
            })
            .await
            .map_err(|e| StartError::Database {
                store: "(opening)".into(),
                reason: e.to_string(),
            })??
        };
        let metrics = Arc::new(Metrics::default());
        let server_config = tls::server_config(&config.pki)?;
        let endpoint =
            sync::bind(config.quic_bind, server_config).map_err(|source| StartError::Bind {
                addr: config.quic_bind,
                source,
            })?;
        let sync_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.quic_bind,
            source,
        })?;
        let instance = config.instance_name(sync_addr.port());
        let fleet = config
            .fleet()
            .map_err(|e| tls::TlsError::Config(format!("[pki] ca_dir: {e}")))?;
        let server = SyncServer::new(store.clone(), metrics.clone(), &instance, fleet);
        // On PostgreSQL, patients and site configurations changed through another instance
        // (or a `vigil-cloud staff` command) reach the appliances connected here.
        let watch = store.watch_changes({
            let server = server.clone();
            let runtime = tokio::runtime::Handle::current();
            move |change| {
                let server = server.clone();
                runtime.spawn(async move { server.changed_elsewhere(change).await });
            }
        });
        let mut tasks = vec![
            tokio::spawn(server.clone().serve(endpoint.clone())),
            tokio::spawn(server.clone().sweep_certificates(CERTIFICATE_SWEEP)),
            tokio::spawn(server.clone().publish_revocations(
                CERTIFICATE_SWEEP,
                config.pki.crl.clone(),
                config.sites.iter().map(|s| s.id.clone()).collect(),
            )),
        ];
        tasks.push(tokio::spawn(watch_crl(
            config.clone(),
            endpoint.clone(),
            server,
        )));

        let listener = tokio::net::TcpListener::bind(config.http_bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_bind,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.http_bind,
            source,
        })?;
        let app = web::router(ApiState {
            store: store.clone(),
            token: config.api_token.clone(),
            sites: config.sites.clone(),
            metrics,
            http: config.http.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            // Connection info gives the audit log each request's client address and the Host
            // check the address the request arrived on.
            let app = app.into_make_service_with_connect_info::<web::ClientConn>();
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http server failed");
            }
        }));
        tracing::info!(
            sync = %sync_addr, api = %api_addr, store = %store.describe(), %instance,
            "cloud started"
        );
        Ok(Cloud {
            sync_addr,
            api_addr,
            instance,
            _watch: watch,
            store,
            endpoint,
            tasks,
            shutdown: Some(tx),
        })
    }

    /// The API's base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Stops accepting, closes connections (appliances reconnect later) and waits for quiet.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.endpoint.close(0_u32.into(), b"cloud shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Creates the site configuration document of every configured site that has none yet, so
/// it flows down to the site's appliances. The document's id is the site id. Existing
/// documents are left alone: once created, a site's configuration is edited in the document.
fn ensure_site_configs(store: &CloudStore, config: &CloudConfig) -> Result<(), String> {
    use vigil_shared::doc::{DocKind, RoomConfig, SiteConfig, SiteConfigDoc};
    for site in &config.sites {
        if store
            .document_owner(&site.id)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            // A zone added or changed in cloud.toml reaches the site's existing document (and
            // from there its appliances); an unchanged one writes nothing.
            crate::staff::set_time_zone(store, &site.id, &site.zone(), crate::clock::now_us())
                .map_err(|e| format!("time zone of {}: {e}", site.id))?;
            continue;
        }
        let mut doc = SiteConfigDoc::create(&SiteConfig {
            site: site.id.clone(),
            name: site.name.clone(),
            region: site.region.clone(),
            rooms: site
                .rooms
                .iter()
                .map(|r| RoomConfig {
                    id: r.clone(),
                    name: format!("Room {r}"),
                    monitors: Vec::new(),
                })
                .collect(),
            thresholds: vigil_shared::advisory::Thresholds::default(),
            staff: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
        doc.set_time_zone(&site.zone()).map_err(|e| e.to_string())?;
        let now = crate::clock::now_us();
        store
            .commit_document(
                &site.id,
                DocKind::SiteConfig,
                &site.id,
                doc.automerge(),
                now,
            )
            .map_err(|e| format!("site config of {}: {e}", site.id))?;
        tracing::info!(site = %site.id, "created the site configuration document");
    }
    Ok(())
}

/// Re-reads the CRL when it changes: new handshakes use it at once, and every open connection
/// is closed so that a revoked appliance has to handshake again (and fails).
/// How often superseded appliance certificates are looked for and revoked.
const CERTIFICATE_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

async fn watch_crl(config: CloudConfig, endpoint: quinn::Endpoint, server: Arc<SyncServer>) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Option<SystemTime> = modified(&config.pki.crl);
    loop {
        tokio::time::sleep(CRL_POLL).await;
        let now = modified(&config.pki.crl);
        if now == last {
            continue;
        }
        last = now;
        match tls::server_config(&config.pki) {
            Ok(c) => {
                endpoint.set_server_config(Some(c));
                server.close_all("certificate revocation list changed; reconnect");
                tracing::info!(crl = %config.pki.crl.display(), "revocation list reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the revocation list; keeping the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::doc::SiteConfigDoc;

    fn config(dir: &std::path::Path, tz: Option<&str>) -> CloudConfig {
        let tz = tz.map_or(String::new(), |tz| format!("tz = \"{tz}\"\n"));
        let text = format!(
            "data_dir = \"data\"\nquic_bind = \"127.0.0.1:4433\"\nhttp_bind = \"127.0.0.1:8443\"\n\
             api_token = \"0123456789abcdef0123456789\"\n[pki]\nca_cert = \"ca.pem\"\n\
             server_cert = \"s.pem\"\nserver_key = \"s.key\"\ncrl = \"crl.pem\"\n\
             [[sites]]\nid = \"austin\"\nname = \"Austin, TX\"\nregion = \"central\"\n{tz}rooms = [\"1\"]\n"
        );
        let path = dir.join("cloud.toml");
        std::fs::write(&path, text).unwrap();
        CloudConfig::load(&path).unwrap()
    }

    fn zone_in_store(store: &CloudStore) -> (Option<String>, usize) {
        let mut stored = store.load_document("austin").unwrap().unwrap().doc;
        let changes = stored.get_changes(&[]).len();
        let name = SiteConfigDoc::from_automerge(stored)
            .unwrap()
            .time_zone_name()
            .unwrap();
        (name, changes)
    }

    #[test]
    fn a_sites_zone_reaches_its_configuration_also_when_added_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
        // First start without a zone: the new document says UTC.
        ensure_site_configs(&store, &config(dir.path(), None)).unwrap();
        let (name, _) = zone_in_store(&store);
        assert_eq!(name.as_deref(), Some("UTC"));
        // The zone added to cloud.toml reaches the existing document at the next start.
        ensure_site_configs(&store, &config(dir.path(), Some("America/Chicago"))).unwrap();
        let (name, changes) = zone_in_store(&store);
        assert_eq!(name.as_deref(), Some("America/Chicago"));
        // Starting again with the same zone writes nothing.
        ensure_site_configs(&store, &config(dir.path(), Some("America/Chicago"))).unwrap();
        assert_eq!(zone_in_store(&store), (name.clone(), changes));
        // A changed zone is written.
        ensure_site_configs(&store, &config(dir.path(), Some("America/New_York"))).unwrap();
        assert_eq!(zone_in_store(&store).0.as_deref(), Some("America/New_York"));
    }
}
