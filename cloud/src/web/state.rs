//! What the web handlers share: the state the server was started with, the auth policy, the
//! sites' zones, and the two things every handler of patient data does: a store read on a
//! blocking thread (bounded) and an audit entry written before the answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::error::ApiError;
use super::extract::ClientIp;
use crate::auth::{Auth, Principal};
use crate::clock::now_us;
use crate::config::{HttpConfig, SiteInfo};
use crate::metrics::Metrics;
use crate::store::{CloudStore, StoreError};

/// Reads running at once. A vitals page of a long ECG session decodes tens of milliseconds
/// of chunks and holds a page of samples in memory; 16 keeps a burst of dashboards from
/// taking every core and tokio's whole blocking pool away from ingest.
pub const MAX_CONCURRENT_READS: usize = 16;

/// How long a read waits for a free slot before the API answers 503.
const READ_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Storage (reads only).
    pub store: Arc<CloudStore>,
    /// The bearer token every `/api/v1` request must present.
    pub token: String,
    /// Sites from the configuration.
    pub sites: Vec<SiteInfo>,
    /// Counters rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Accepted host names and trusted proxies (`[http]` of `cloud.toml`).
    pub http: HttpConfig,
}

/// The state plus what the router derives from it once; shared with the dashboard.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: ApiState,
    /// Users, sessions, tokens, scope and the audit log.
    pub(crate) auth: Auth,
    /// Each configured site's time zone, parsed once.
    pub(crate) zones: crate::config::Zones,
    reads: Arc<Semaphore>,
}

impl Shared {
    /// What the router derives from the state once: the auth policy and the sites' zones.
    pub(crate) fn new(state: ApiState) -> Shared {
        let auth = Auth::new(state.store.clone(), state.sites.clone(), &state.token);
        let zones = crate::config::Zones::of(&state.sites);
        Shared {
            state,
            auth,
            zones,
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
        }
    }
}

/// Runs a store read on a blocking thread, at most [`MAX_CONCURRENT_READS`] at a time.
pub(crate) async fn read<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&CloudStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(READ_QUEUE_TIMEOUT, s.reads.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::busy())?
        .map_err(|_| ApiError::busy())?;
    let store = s.state.store.clone();
    tokio::task::spawn_blocking(move || {
        // The permit is held until the read is done, even if the client has gone.
        let _permit = permit;
        f(&store)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "api read task failed");
        ApiError::internal()
    })?
    .map_err(ApiError::from)
}

/// Writes an audit entry on a blocking thread; the read it records is answered only if this
/// succeeds.
pub(crate) async fn audit(
    s: &Arc<Shared>,
    p: &Principal,
    ip: &ClientIp,
    action: &str,
    target: &str,
) -> Result<(), ApiError> {
    let (shared, p, ip) = (s.clone(), p.clone(), ip.0.clone());
    let (action, target) = (action.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || shared.auth.audit(&p, &action, &target, &ip, now_us()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}
