//! The cloud's operational counters and gauges, rendered in Prometheus' text exposition format
//! for `GET /metrics`.
//!
//! The sync server updates them (lock-free atomics, except the small map of reject reasons);
//! the API renders them. Nothing here does I/O or names a site, room or patient: metrics are
//! served without authentication, so they carry counts only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vigil_shared::wire::RejectCode;
use vigil_web::metrics::{Exposition, Kind};

/// Distinct reject reasons counted separately; any further reason is counted as `other`. The
/// wire protocol has nine reject codes and the sync server a few reasons of its own
/// (`handshake`, …); 32 bounds the label set (and the scrape size) against a reason string
/// built from peer input.
pub const MAX_REJECT_REASONS: usize = 32;

/// The label under which reasons past [`MAX_REJECT_REASONS`] are counted.
const OTHER_REASON: &str = "other";

/// Counters and gauges of the running cloud.
#[derive(Debug, Default)]
pub struct Metrics {
    connected_appliances: AtomicU64,
    frames_received: AtomicU64,
    frames_sent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    documents_committed: AtomicU64,
    changes_committed: AtomicU64,
    /// f64 bits.
    sync_lag_seconds: AtomicU64,
    documents_waiting: AtomicU64,
    rejects: Mutex<BTreeMap<String, u64>>,
}

/// The values of [`Metrics`] at one moment, for tests and status pages.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Appliances connected now.
    pub connected_appliances: u64,
    /// Sync frames received.
    pub frames_received: u64,
    /// Sync frames sent.
    pub frames_sent: u64,
    /// Bytes received on sync streams.
    pub bytes_received: u64,
    /// Bytes sent on sync streams.
    pub bytes_sent: u64,
    /// Document commits (each made changes durable).
    pub documents_committed: u64,
    /// Automerge changes committed, as the sync server counted them.
    pub changes_committed: u64,
    /// The largest sync lag over connected appliances, seconds.
    pub sync_lag_seconds: f64,
    /// Documents the connected appliances report as waiting to sync.
    pub documents_waiting: u64,
    /// Rejects by reason.
    pub rejects: BTreeMap<String, u64>,
}

impl Metrics {
    /// An appliance connected.
    pub fn appliance_connected(&self) {
        self.connected_appliances.fetch_add(1, Ordering::Relaxed);
    }

    /// An appliance disconnected. Never goes below zero.
    pub fn appliance_disconnected(&self) {
        let _ = self
            .connected_appliances
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// One frame received.
    pub fn frame_received(&self) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
    }

    /// One frame sent.
    pub fn frame_sent(&self) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes received on a sync stream.
    pub fn bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes sent on a sync stream.
    pub fn bytes_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// One document commit.
    pub fn document_committed(&self) {
        self.documents_committed.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` Automerge changes committed.
    pub fn changes_committed(&self, n: u64) {
        self.changes_committed.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the sync lag gauge (the maximum over connected appliances, seconds). Negative or
    /// non-finite values are stored as 0.
    pub fn set_sync_lag_seconds(&self, seconds: f64) {
        let s = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        self.sync_lag_seconds.store(s.to_bits(), Ordering::Relaxed);
    }

    /// Sets the documents-waiting gauge (the sum of the connected appliances' reports).
    pub fn set_documents_waiting(&self, n: u64) {
        self.documents_waiting.store(n, Ordering::Relaxed);
    }

    /// One refusal, by reason: a [`RejectCode`] name or a reason of the sync server's own.
    pub fn reject(&self, reason: &str) {
        let mut rejects = self
            .rejects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = rejects.get_mut(reason) {
            *n += 1;
            return;
        }
        let label = if rejects.len() < MAX_REJECT_REASONS && is_label_safe(reason) {
            reason
        } else {
            OTHER_REASON
        };
        *rejects.entry(label.to_owned()).or_insert(0) += 1;
    }

    /// One refusal with a wire reject code.
    pub fn reject_code(&self, code: RejectCode) {
        self.reject(code.as_str());
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            connected_appliances: load(&self.connected_appliances),
            frames_received: load(&self.frames_received),
            frames_sent: load(&self.frames_sent),
            bytes_received: load(&self.bytes_received),
            bytes_sent: load(&self.bytes_sent),
            documents_committed: load(&self.documents_committed),
            changes_committed: load(&self.changes_committed),
            sync_lag_seconds: f64::from_bits(load(&self.sync_lag_seconds)),
            documents_waiting: load(&self.documents_waiting),
            rejects: self
                .rejects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// [`render`](Self::render), with the fleet's gauges when the database could be read.
    pub fn render_with(&self, fleet: Option<&crate::fleet::FleetGauges>) -> String {
        let s = self.snapshot();
        let mut page = Exposition::new("vigil_cloud_");
        page.gauge(
            "connected_appliances",
            "Appliances connected now.",
            s.connected_appliances as f64,
        );
        let counters = [
            (
                "frames_received_total",
                "Sync frames received from appliances.",
                s.frames_received,
            ),
            (
                "frames_sent_total",
                "Sync frames sent to appliances.",
                s.frames_sent,
            ),
            (
                "bytes_received_total",
                "Bytes received on sync streams.",
                s.bytes_received,
            ),
            (
                "bytes_sent_total",
                "Bytes sent on sync streams.",
                s.bytes_sent,
            ),
            (
                "documents_committed_total",
                "Document commits made durable.",
                s.documents_committed,
            ),
            (
                "changes_committed_total",
                "Automerge changes made durable.",
                s.changes_committed,
            ),
        ];
        for (name, help, value) in counters {
            page.counter(name, help, value);
        }
        page.gauge(
            "sync_lag_seconds",
            "Largest sync lag over connected appliances.",
            s.sync_lag_seconds,
        );
        page.gauge(
            "documents_waiting",
            "Documents connected appliances report as waiting to sync.",
            s.documents_waiting as f64,
        );
        // Every wire code is listed, zero or not, so dashboards see the series from the start.
        let mut rejects: BTreeMap<&str, u64> =
            RejectCode::ALL.iter().map(|c| (c.as_str(), 0)).collect();
        for (reason, n) in &s.rejects {
            rejects.insert(reason, *n);
        }
        page.labelled(
            "rejects_total",
            Kind::Counter,
            "Refusals sent to appliances, by reason.",
            "reason",
            rejects.into_iter().map(|(reason, n)| (reason, n as f64)),
        );
        if let Some(f) = fleet {
            fleet_gauges(&mut page, f);
        }
        page.finish()
    }
}

/// The fleet's gauges (the alert rules in `packaging/cloud/vigil-alerts.yml` read them). An
/// extreme with no appliance reporting it is left out rather than shown as zero.
fn fleet_gauges(page: &mut Exposition, f: &crate::fleet::FleetGauges) {
    let counts = [
        (
            "fleet_appliances",
            "Appliances the cloud knows.",
            f.appliances,
        ),
        (
            "fleet_offline_appliances",
            "Appliances unseen for more than 15 minutes.",
            f.offline,
        ),
        (
            "fleet_attention_appliances",
            "Appliances that need attention (the fleet page says why).",
            f.attention,
        ),
        (
            "fleet_protocol_behind_appliances",
            "Appliances speaking an older sync protocol than this cloud's newest.",
            f.protocol_behind,
        ),
        (
            "fleet_backlog_bytes",
            "Bytes waiting to sync over every appliance, as they report.",
            f.backlog_bytes,
        ),
    ];
    for (name, help, value) in counts {
        page.gauge(name, help, value as f64);
    }
    let extremes = [
        (
            "fleet_certificate_expiry_seconds",
            "Seconds until the soonest appliance certificate ends (negative: expired).",
            f.certificate_expiry_s,
        ),
        (
            "fleet_disk_used_ratio",
            "The fullest appliance disk, 0 to 1.",
            f.disk_used_ratio,
        ),
        (
            "fleet_clock_skew_seconds",
            "The largest appliance clock offset from the cloud's, seconds, either way.",
            f.clock_skew_s,
        ),
    ];
    for (name, help, value) in extremes {
        if let Some(v) = value {
            page.gauge(name, help, v);
        }
    }
}

/// Whether a reason can be a label value as is: short, lowercase letters, digits and `_`
/// (so it never needs escaping).
fn is_label_safe(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one sample line in `text`.
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn render_lists_every_metric_with_help_and_type() {
        let m = Metrics::default();
        m.appliance_connected();
        m.appliance_connected();
        m.appliance_disconnected();
        m.frame_received();
        m.bytes_received(100);
        m.frame_sent();
        m.frame_sent();
        m.bytes_sent(7);
        m.document_committed();
        m.changes_committed(3);
        m.set_sync_lag_seconds(2.5);
        m.reject("forbidden");
        m.reject_code(RejectCode::Forbidden);
        m.reject("handshake");
        let text = m.render();
        let cases = [
            ("vigil_cloud_connected_appliances", "1"),
            ("vigil_cloud_frames_received_total", "1"),
            ("vigil_cloud_frames_sent_total", "2"),
            ("vigil_cloud_bytes_received_total", "100"),
            ("vigil_cloud_bytes_sent_total", "7"),
            ("vigil_cloud_documents_committed_total", "1"),
            ("vigil_cloud_changes_committed_total", "3"),
            ("vigil_cloud_sync_lag_seconds", "2.5"),
            ("vigil_cloud_rejects_total{reason=\"forbidden\"}", "2"),
            ("vigil_cloud_rejects_total{reason=\"handshake\"}", "1"),
            ("vigil_cloud_rejects_total{reason=\"replay\"}", "0"),
        ];
        for (series, expected) in cases {
            assert_eq!(
                value(&text, series).as_deref(),
                Some(expected),
                "{series} in\n{text}"
            );
        }
        for name in [
            "connected_appliances",
            "frames_received_total",
            "sync_lag_seconds",
            "rejects_total",
        ] {
            assert!(
                text.contains(&format!("# HELP vigil_cloud_{name} ")),
                "{name}"
            );
            assert!(
                text.contains(&format!("# TYPE vigil_cloud_{name} ")),
                "{name}"
            );
        }
    }

    #[test]
    fn gauges_never_go_negative_or_nan() {
        let m = Metrics::default();
        m.appliance_disconnected();
        m.set_sync_lag_seconds(f64::NAN);
        let s = m.snapshot();
        assert_eq!(s.connected_appliances, 0);
        assert_eq!(s.sync_lag_seconds, 0.0);
        m.set_sync_lag_seconds(-3.0);
        assert_eq!(m.snapshot().sync_lag_seconds, 0.0);
        assert_eq!(
            value(&m.render(), "vigil_cloud_sync_lag_seconds").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn reject_reasons_are_bounded_and_safe() {
        let m = Metrics::default();
        let cases = [
            ("forbidden", "forbidden"),
            ("Bad Reason\"}\n", OTHER_REASON),
            ("", OTHER_REASON),
        ];
        for (reason, label) in cases {
            m.reject(reason);
            assert!(m.snapshot().rejects.contains_key(label), "{reason:?}");
        }
        for i in 0..(2 * MAX_REJECT_REASONS) {
            m.reject(&format!("reason_{i}"));
        }
        let rejects = m.snapshot().rejects;
        assert!(rejects.len() <= MAX_REJECT_REASONS + 1, "{}", rejects.len());
        assert!(rejects[OTHER_REASON] > MAX_REJECT_REASONS as u64);
    }

    #[test]
    fn every_series_the_alert_rules_read_is_rendered() {
        let rules = include_str!("../../packaging/cloud/vigil-alerts.yml");
        let mut names: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("vigil_cloud_"))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 6, "{names:?}");
        let fleet = crate::fleet::FleetGauges {
            certificate_expiry_s: Some(1.0),
            disk_used_ratio: Some(0.5),
            clock_skew_s: Some(0.1),
            ..Default::default()
        };
        let text = Metrics::default().render_with(Some(&fleet));
        for name in names {
            assert!(
                text.contains(&format!("# TYPE {name} gauge")),
                "{name} is not rendered:\n{text}"
            );
        }
        // Without the database the sync counters still render, the fleet's do not.
        assert!(!Metrics::default().render().contains("fleet_"));
    }
}
