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

/// The fleet in numbers, for `/metrics` and the alert rules shipped with the cloud. Counts and
/// extremes only: `/metrics` is served without a credential and names no site or room (the
/// fleet page, behind sign-in, says which appliance).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetGauges {
    /// Appliances known.
    pub appliances: u64,
    /// Appliances unseen for longer than [`OFFLINE_AFTER_US`](vigil_shared::fleet::OFFLINE_AFTER_US).
    pub offline: u64,
    /// Appliances that need attention for any reason.
    pub attention: u64,
    /// Appliances whose last connection spoke an older protocol than this cloud's newest.
    pub protocol_behind: u64,
    /// Seconds until the soonest certificate end (negative: one has expired).
    pub certificate_expiry_s: Option<f64>,
    /// The fullest appliance disk, 0 to 1.
    pub disk_used_ratio: Option<f64>,
    /// The largest clock offset from the cloud's, seconds, either way.
    pub clock_skew_s: Option<f64>,
    /// Bytes waiting to sync over every appliance.
    pub backlog_bytes: u64,
}

/// The gauges of a fleet.
pub fn gauges(views: &[ApplianceView], now_us: i64) -> FleetGauges {
    let max = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.max(b)));
    let mut g = FleetGauges::default();
    for v in views {
        g.appliances += 1;
        if now_us - v.last_seen_us > vigil_shared::fleet::OFFLINE_AFTER_US {
            g.offline += 1;
        }
        if !v.attention.is_empty() {
            g.attention += 1;
        }
        if v.protocol < MAX_PROTOCOL_VERSION {
            g.protocol_behind += 1;
        }
        if let Some(end) = v.cert_not_after_us {
            let left = (end - now_us) as f64 / 1e6;
            g.certificate_expiry_s = Some(g.certificate_expiry_s.map_or(left, |s| s.min(left)));
        }
        if let Some(p) = v.disk_used_percent {
            g.disk_used_ratio = max(g.disk_used_ratio, p / 100.0);
        }
        if let Some(s) = v.clock_skew_s {
            g.clock_skew_s = max(g.clock_skew_s, s.abs());
        }
        g.backlog_bytes = g.backlog_bytes.saturating_add(v.backlog_bytes);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        room: &str,
        last_seen_us: i64,
        protocol: u16,
        report: Option<ApplianceReport>,
    ) -> ApplianceRow {
        ApplianceRow {
            site: "austin".into(),
            room: room.into(),
            connected: true,
            software: "vigil-edge 0.1.0".into(),
            first_seen_us: 0,
            last_seen_us,
            last_sync_us: None,
            backlog_docs: 1,
            backlog_bytes: 100,
            instance: "a".into(),
            protocol,
            cert_serial: "01".into(),
            cert_not_after_us: Some(last_seen_us + 40 * 86_400_000_000),
            clock_skew_us: Some(-6_000_000),
            report,
        }
    }

    #[test]
    fn the_gauges_count_and_take_the_extremes() {
        let now = 1_000 * 86_400_000_000_i64;
        let report = ApplianceReport {
            disk_used_bytes: 90,
            disk_total_bytes: 100,
            retention: "ok".into(),
            cert_not_after_us: Some(now + 10 * 86_400_000_000),
            ..ApplianceReport::default()
        };
        let rows = [
            row("1", now, 2, Some(report)),
            row("2", now - 20 * 60_000_000, 1, None),
        ];
        let views = views(&rows, now);
        assert_eq!(
            views[0].cert_not_after_us,
            Some(now + 40 * 86_400_000_000),
            "the newer end"
        );
        assert_eq!(
            views[0].attention,
            vec!["clock 6.0 s behind the cloud's", "disk 90 % full"]
        );
        assert!(
            views[1]
                .attention
                .iter()
                .any(|a| a.starts_with("offline for 20 min"))
        );
        let g = gauges(&views, now);
        assert_eq!(
            (
                g.appliances,
                g.offline,
                g.attention,
                g.protocol_behind,
                g.backlog_bytes
            ),
            (2, 1, 2, 1, 200)
        );
        assert_eq!(g.disk_used_ratio, Some(0.9));
        assert_eq!(g.clock_skew_s, Some(6.0));
        let soonest = (now - 20 * 60_000_000 + 40 * 86_400_000_000 - now) as f64 / 1e6;
        assert_eq!(g.certificate_expiry_s, Some(soonest));
        assert_eq!(gauges(&[], now), FleetGauges::default());
    }
}
