//! The appliance fleet as the cloud's operators see it: making enrolment codes, and every
//! appliance's state for `GET /api/v1/appliances` and the dashboard's fleet page.

use serde::Serialize;
use vigil_shared::fleet::{ApplianceReport, EnrolCode, FleetFacts, attention, secret_from};
use vigil_shared::wire::MAX_PROTOCOL_VERSION;

use crate::config::CloudConfig;
use crate::sites::ONLINE_WINDOW_US;
use crate::store::{ApplianceRow, CloudStore, EnrolCodeRow, StoreError};
use crate::sync::certs::{CODE_LIFETIME_US, code_hash, sha256};

/// Why no code was made.
#[derive(Debug, thiserror::Error)]
pub enum CodeRefusal {
    /// The site is not in cloud.toml, or the room not among its rooms.
    #[error("{0}")]
    Unknown(String),
    /// The room has an active appliance and `--replace` was not given.
    #[error(
        "room {room} of {site} already has an active appliance (certificate {serial}); pass --replace to enrol a new one in its place (the old one is revoked when the new one enrols)"
    )]
    RoomActive {
        /// Site.
        site: String,
        /// Room.
        room: String,
        /// Its certificate.
        serial: String,
    },
    /// The cloud does not issue certificates.
    #[error(
        "this cloud does not issue certificates: set [pki] ca_dir in its configuration to the CA's directory, then restart it"
    )]
    NoCa,
    /// The CA certificate could not be read.
    #[error("cannot read the CA certificate: {0}")]
    Ca(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A code just made, with what it names.
#[derive(Debug, Clone)]
pub struct NewCode {
    /// The code to type on the appliance.
    pub code: EnrolCode,
    /// When it stops working, µs.
    pub expires_us: i64,
    /// The CA certificate's SHA-256, hex.
    pub ca_sha256: String,
}

/// Makes a one-time enrolment code for `site`'s room `room`, keeping only its hash.
pub fn make_code(
    store: &CloudStore,
    config: &CloudConfig,
    site: &str,
    room: &str,
    replace: bool,
    by: &str,
    now_us: i64,
) -> Result<NewCode, CodeRefusal> {
    let info = config.sites.iter().find(|s| s.id == site).ok_or_else(|| {
        CodeRefusal::Unknown(format!("site {site:?} is not in the configuration"))
    })?;
    if !info.rooms.is_empty() && !info.rooms.iter().any(|r| r == room) {
        return Err(CodeRefusal::Unknown(format!(
            "room {room:?} is not among {site}'s rooms ({}); add it to the configuration first",
            info.rooms.join(", ")
        )));
    }
    if config.pki.ca_dir.is_none() {
        return Err(CodeRefusal::NoCa);
    }
    if !replace && let Some(serial) = store.active_certificate(site, room, now_us)? {
        return Err(CodeRefusal::RoomActive {
            site: site.to_owned(),
            room: room.to_owned(),
            serial,
        });
    }
    let ca_der = crate::pki::read_cert_file(&config.pki.ca_cert)
        .map_err(|e| CodeRefusal::Ca(e.to_string()))?;
    let digest = sha256(&ca_der);
    let mut random = [0_u8; 10];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| CodeRefusal::Ca("no randomness".into()))?;
    let code = EnrolCode::new(
        &secret_from(&random),
        &config.advertised_sync_addr(),
        &digest,
    );
    let expires_us = now_us + CODE_LIFETIME_US;
    store.create_enrol_code(&EnrolCodeRow {
        code_hash: code_hash(&code.secret).ok_or_else(|| CodeRefusal::Ca("bad secret".into()))?,
        site: site.to_owned(),
        room: room.to_owned(),
        replaces_active: replace,
        created_by: by.to_owned(),
        created_us: now_us,
        expires_us,
    })?;
    Ok(NewCode {
        code,
        expires_us,
        ca_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// One appliance on the fleet page and in `GET /api/v1/appliances`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplianceView {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Connected and seen recently.
    pub online: bool,
    /// Software and version, from its Hello.
    pub software: String,
    /// The sync protocol version of its last connection.
    pub protocol: u16,
    /// Its certificate's serial.
    pub cert_serial: String,
    /// When its certificate expires, µs.
    pub cert_not_after_us: Option<i64>,
    /// Its clock minus the cloud's, seconds, at its last report.
    pub clock_skew_s: Option<f64>,
    /// Disk used on the database's filesystem, percent.
    pub disk_used_percent: Option<f64>,
    /// Retention's state.
    pub retention: Option<String>,
    /// Monitors and their states.
    pub monitors: Vec<vigil_shared::fleet::MonitorReport>,
    /// Last sign of life, µs.
    pub last_seen_us: i64,
    /// Last completed sync round, µs.
    pub last_sync_us: Option<i64>,
    /// Documents waiting to sync on the appliance.
    pub backlog_docs: u64,
    /// Their size.
    pub backlog_bytes: u64,
    /// Seconds since the appliance process started, at its last report.
    pub uptime_s: Option<u64>,
    /// Why it last started.
    pub last_restart: Option<String>,
    /// The cloud instance holding its connection.
    pub instance: String,
    /// Why it needs attention, one sentence each; empty when it does not.
    pub attention: Vec<String>,
}

/// Every appliance, as views, in site and room order.
pub fn views(rows: &[ApplianceRow], now_us: i64) -> Vec<ApplianceView> {
    rows.iter().map(|r| view(r, now_us)).collect()
}

fn view(row: &ApplianceRow, now_us: i64) -> ApplianceView {
    let report: Option<&ApplianceReport> = row.report.as_ref();
    // Expiry from the certificate the appliance last connected with; the report's own
    // figure (the certificate it holds now) when newer, after a renewal.
    let cert_end = match (
        row.cert_not_after_us,
        report.and_then(|r| r.cert_not_after_us),
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let with_cert = report.map(|r| ApplianceReport {
        cert_not_after_us: cert_end,
        ..r.clone()
    });
    let facts = FleetFacts {
        last_seen_us: row.last_seen_us,
        protocol: row.protocol,
        clock_skew_us: row.clock_skew_us,
        report: with_cert.as_ref(),
    };
    let mut reasons = attention(&facts, now_us, MAX_PROTOCOL_VERSION);
    if report.is_none()
        && let Some(end) = cert_end
        && end - now_us < vigil_shared::fleet::CERT_WARN_US
    {
        reasons.push(if end <= now_us {
            "certificate expired".to_owned()
        } else {
            format!(
                "certificate expires in {} days",
                (end - now_us) / (24 * 3600 * 1_000_000)
            )
        });
    }
    ApplianceView {
        site: row.site.clone(),
        room: row.room.clone(),
        online: row.connected && now_us - row.last_seen_us <= ONLINE_WINDOW_US,
        software: row.software.clone(),
        protocol: row.protocol,
        cert_serial: row.cert_serial.clone(),
        cert_not_after_us: cert_end,
        clock_skew_s: row.clock_skew_us.map(|us| us as f64 / 1e6),
        disk_used_percent: report
            .filter(|r| r.disk_total_bytes > 0)
            .map(|r| r.disk_used_bytes as f64 * 100.0 / r.disk_total_bytes as f64),
        retention: report.map(|r| r.retention.clone()),
        monitors: report.map(|r| r.monitors.clone()).unwrap_or_default(),
        last_seen_us: row.last_seen_us,
        last_sync_us: row.last_sync_us,
        backlog_docs: row.backlog_docs,
        backlog_bytes: row.backlog_bytes,
        uptime_s: report.map(|r| r.uptime_s),
        last_restart: report.map(|r| r.last_restart.clone()),
        instance: row.instance.clone(),
        attention: reasons,
    }
}
