//! The appliance's configuration file (`edge.toml`): what site and room it serves, where it
//! keeps its data, which vital-sign sources it reads and where its local API listens, and with
//! which certificate it serves HTTPS to the room network (`[http_tls]`). Plain HTTP is
//! accepted on loopback only: any other `http_bind` without `[http_tls]` is refused here.
//!
//! Parsing is strict: an unknown field, a missing required field or a value out of range is an
//! error that names the file, the field and what is wrong. Nothing here opens sockets or
//! databases; [`crate::app`] does that with the values checked here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vigil_hardware::ble::Measures;
use vigil_hardware::ble::collector::{CollectorSettings, MonitorSpec};
use vigil_hardware::sim::{EcgRate, Scenario};
use vigil_shared::vitals::Channel;

/// The shortest chunk period accepted: shorter chunks make documents grow per-chunk overhead
/// faster than they save latency.
pub const MIN_CHUNK_PERIOD_S: u64 = 1;
/// The longest chunk period accepted: the open chunk lives in the staging table until it
/// closes, and the cloud sees a chunk only once it is closed.
pub const MAX_CHUNK_PERIOD_S: u64 = 300;
/// Group commits may be no further apart than this: DESIGN.md promises a sample reaches the
/// disk within a second.
pub const MAX_GROUP_COMMIT_MS: u64 = 1_000;
/// Longest retention accepted (ten years): beyond that a typo is likelier than a policy.
pub const MAX_RETENTION_DAYS: u32 = 3_650;
/// The fastest simulated clock: beyond this a 2-core machine can no longer keep up with 250 Hz
/// ECG for four rooms and the demo would fall behind its own clock.
pub const MAX_TIME_FACTOR: f64 = 10_000.0;

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the field and line.
        message: String,
    },
    /// A field has a value outside what Vigil accepts.
    #[error("config file {path}: field `{field}` {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, dotted (`source.time_factor`).
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

/// The appliance configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Site id, e.g. `austin`.
    pub site: String,
    /// Room id within the site, e.g. `1`.
    pub room: String,
    /// Directory for the database and other state; created if missing.
    pub data_dir: PathBuf,
    /// Where the room screen and the local API listen. Port 0 picks a free port (printed at
    /// start-up). Without [`EdgeConfig::http_tls`] it must be a loopback address.
    #[serde(default = "default_http_bind")]
    pub http_bind: SocketAddr,
    /// Host names (or addresses) tablets use for this appliance on the room network, e.g.
    /// `["room1.austin.clinic"]`. Requests naming any other host are refused (DNS rebinding);
    /// loopback and the bound address are always accepted.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// The certificate the room screen and the API are served with over HTTPS; required
    /// unless `http_bind` is on loopback.
    #[serde(default)]
    pub http_tls: Option<HttpTls>,
    /// Seconds of samples per vitals chunk.
    #[serde(default = "default_chunk_period_s")]
    pub chunk_period_s: u64,
    /// Milliseconds between group commits (at most 1000).
    #[serde(default = "default_group_commit_ms")]
    pub group_commit_ms: u64,
    /// Days a finished session stays on the appliance after the cloud has confirmed all of
    /// it. Sessions the cloud has not confirmed are kept, however old.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Largest size the database may grow to, MiB. When it is reached the appliance behaves
    /// as on a full disk (a storage advisory, samples held in memory, the oldest sessions the
    /// cloud holds deleted to make room). Default: no cap besides the disk.
    #[serde(default)]
    pub max_db_mb: Option<u64>,
    /// Seconds this appliance's clock is shifted from the system clock, for recording and for
    /// checking the cloud's certificate. For tests of a wrong clock; leave it at 0.
    #[serde(default)]
    pub clock_offset_s: i64,
    /// Vital-sign sources. Today: one simulator; the BLE collector joins later.
    #[serde(default)]
    pub source: SourceConfig,
    /// The cloud to sync with; without it the appliance records locally only.
    #[serde(default)]
    pub cloud: Option<crate::sync::CloudSettings>,
    /// Where this appliance listens for its site's other rooms (UDP), e.g. `0.0.0.0:4434`.
    #[serde(default)]
    pub peer_bind: Option<SocketAddr>,
    /// The site's other appliances to sync with on the LAN, e.g. `["10.1.2.4:4434"]`.
    #[serde(default)]
    pub peers: Vec<crate::sync::CloudAddr>,
    /// Announce this appliance on the LAN and find the site's others by mDNS (`_vigil._udp`).
    #[serde(default)]
    pub mdns: bool,
    /// The network interface mDNS announces and looks on, e.g. `eth0` for the room network;
    /// default: every interface.
    #[serde(default)]
    pub mdns_interface: Option<String>,
}

/// `[http_tls]`: the room screen's certificate, from `vigil-cloud pki issue-appliance …
/// --screen-dns NAME --screen-ip ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// The certificate (PEM; the leaf first if it holds a chain): `screen-SITE-ROOM.pem`.
    pub cert: PathBuf,
    /// Its private key (PEM): `screen-SITE-ROOM.key`.
    pub key: PathBuf,
}

/// Whether browsers on `ip` are on this machine: 127.0.0.0/8 and ::1 (also written as the
/// IPv4-mapped `::ffff:127.x.y.z`). The wildcard addresses are not: they listen on every
/// network the appliance is on.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Why the appliance may not serve plain HTTP on `bind` for `site`/`room`, with what to do
/// instead; `None` on loopback. The message is for the installer: it names the fields and the
/// command that issues the certificate.
pub fn plain_http_refusal(bind: SocketAddr, site: &str, room: &str) -> Option<String> {
    if is_loopback(bind.ip()) {
        return None;
    }
    let screen_ip = if bind.ip().is_unspecified() {
        "ADDRESS".to_owned()
    } else {
        bind.ip().to_string()
    };
    Some(format!(
        "is {bind}, which is not a loopback address, and there is no [http_tls] section: the \
         room network may reach the appliance over HTTPS only (PINs, cookies and patient data \
         cross it). Issue the room screen's certificate with `vigil-cloud pki issue-appliance \
         --dir CA_DIR --site {site} --room {room} --screen-dns NAME --screen-ip {screen_ip}` \
         and add to this file:\n[http_tls]\ncert = \"CA_DIR/screen-{site}-{room}.pem\"\n\
         key = \"CA_DIR/screen-{site}-{room}.key\"\n\
         or set http_bind to 127.0.0.1:PORT to serve only the appliance's own display"
    ))
}

/// Where vitals come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Simulated monitors driven by the physiology simulator.
    Simulator {
        /// Seed of the room's virtual patients; each session derives its own from it.
        #[serde(default)]
        seed: u64,
        /// Scenario used when a session doesn't name one.
        #[serde(default = "default_scenario")]
        scenario: Scenario,
        /// ECG sample rate: 130 or 250.
        #[serde(default = "default_ecg_hz")]
        ecg_hz: u32,
        /// How much faster than real time the appliance's clock runs (1 = real time).
        #[serde(default = "default_time_factor")]
        time_factor: f64,
    },
    /// The room's bedside monitors over Bluetooth Low Energy, through BlueZ. The clock runs at
    /// real time.
    Ble {
        /// The Bluetooth adapter (`hci0`); the first one BlueZ lists when absent.
        #[serde(default)]
        adapter: Option<String>,
        /// The monitors assigned to this room, as `[[source.monitor]]` tables.
        #[serde(default, rename = "monitor")]
        monitors: Vec<MonitorConfig>,
    },
    /// No monitors (the appliance records events only).
    None,
}

/// One monitor assigned to the room, found by its address or by the name it advertises.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The name the room's advisories and status use (`hr-strap`, `oximeter`, …).
    pub device: String,
    /// Its Bluetooth address, `AA:BB:CC:DD:EE:FF` (the surest way to pick one monitor).
    #[serde(default)]
    pub address: Option<String>,
    /// Or the name it advertises (e.g. `Polar H10 12345678`).
    #[serde(default)]
    pub name: Option<String>,
    /// What it measures: `heart_rate`, `ecg`, `pulse_oximetry`, `blood_pressure`,
    /// `temperature`.
    pub measures: Vec<Measures>,
    /// Seconds a connected monitor may stay silent before the link is restarted; defaults to
    /// 15 for straps and oximeters, 900 for cuffs and thermometers (they speak once per
    /// reading).
    #[serde(default)]
    pub silence_s: Option<u32>,
}

/// Longest silence allowance a monitor can be given.
pub const MAX_SILENCE_S: u32 = 3_600;
/// Most monitors one room can be assigned.
pub const MAX_MONITORS: usize = 16;

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Simulator {
            seed: 0,
            scenario: default_scenario(),
            ecg_hz: default_ecg_hz(),
            time_factor: default_time_factor(),
        }
    }
}

impl SourceConfig {
    /// The clock's speed-up: 1 except for a simulator running faster than real time.
    pub fn time_factor(&self) -> f64 {
        match self {
            SourceConfig::Simulator { time_factor, .. } => *time_factor,
            SourceConfig::Ble { .. } | SourceConfig::None => 1.0,
        }
    }

    /// The ECG rate as the simulator's enum (validated at load time).
    pub fn ecg_rate(&self) -> EcgRate {
        match self {
            SourceConfig::Simulator { ecg_hz: 130, .. } => EcgRate::Hz130,
            _ => EcgRate::Hz250,
        }
    }
}

fn default_http_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_chunk_period_s() -> u64 {
    10
}
fn default_group_commit_ms() -> u64 {
    1_000
}
fn default_retention_days() -> u32 {
    30
}
fn default_scenario() -> Scenario {
    Scenario::Baseline
}
fn default_ecg_hz() -> u32 {
    250
}
fn default_time_factor() -> f64 {
    1.0
}

impl EdgeConfig {
    /// The peer settings (`peer_bind`, `peers`, `mdns`).
    pub fn peer_settings(&self) -> crate::peer::PeerSettings {
        crate::peer::PeerSettings {
            bind: self.peer_bind,
            addrs: self.peers.clone(),
            mdns: self.mdns,
            mdns_interface: self.mdns_interface.clone(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        EdgeConfig::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<EdgeConfig, ConfigError> {
        let config: EdgeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks ranges and formats; `path` is only used in messages.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            problem,
        };
        check_id(&self.site).map_err(|p| invalid("site", p))?;
        check_id(&self.room).map_err(|p| invalid("room", p))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "is empty; give a directory path".into(),
            ));
        }
        if !(MIN_CHUNK_PERIOD_S..=MAX_CHUNK_PERIOD_S).contains(&self.chunk_period_s) {
            return Err(invalid(
                "chunk_period_s",
                format!(
                    "is {}, must be between {MIN_CHUNK_PERIOD_S} and {MAX_CHUNK_PERIOD_S} seconds",
                    self.chunk_period_s
                ),
            ));
        }
        if !(1..=MAX_GROUP_COMMIT_MS).contains(&self.group_commit_ms) {
            return Err(invalid(
                "group_commit_ms",
                format!(
                    "is {}, must be between 1 and {MAX_GROUP_COMMIT_MS}",
                    self.group_commit_ms
                ),
            ));
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            return Err(invalid(
                "retention_days",
                format!(
                    "is {}, must be at most {MAX_RETENTION_DAYS}",
                    self.retention_days
                ),
            ));
        }
        match &self.http_tls {
            None => {
                if let Some(problem) = plain_http_refusal(self.http_bind, &self.site, &self.room) {
                    return Err(invalid("http_bind", problem));
                }
            }
            Some(tls) => {
                if tls.cert.as_os_str().is_empty() {
                    return Err(invalid(
                        "http_tls.cert",
                        "is empty; give the room screen's certificate file (screen-SITE-ROOM.pem)"
                            .into(),
                    ));
                }
                if tls.key.as_os_str().is_empty() {
                    return Err(invalid(
                        "http_tls.key",
                        "is empty; give the room screen's private key file (screen-SITE-ROOM.key)"
                            .into(),
                    ));
                }
            }
        }
        if self.clock_offset_s.abs() > crate::clock::MAX_CLOCK_OFFSET_S {
            return Err(invalid(
                "clock_offset_s",
                format!(
                    "is {}, must be between -{max} and {max} seconds",
                    self.clock_offset_s,
                    max = crate::clock::MAX_CLOCK_OFFSET_S
                ),
            ));
        }
        if let Some(cloud) = &self.cloud
            && cloud.targets().is_empty()
        {
            return Err(invalid(
                "cloud.addr",
                "is missing; give the cloud's sync address (addr = \"host:4433\") or several \
                 (addrs = [\"…\", \"…\"])"
                    .into(),
            ));
        }
        if let Some(cloud) = &self.cloud
            && cloud.server_name.is_empty()
        {
            return Err(invalid(
                "cloud.server_name",
                "is empty; give the name on the cloud's certificate".into(),
            ));
        }
        if self.peer_settings().enabled() && self.cloud.is_none() {
            return Err(invalid(
                "peers",
                "need this appliance's certificate: enrol it first (the [cloud] section names \
                 the certificate, key and CA that peers use too)"
                    .into(),
            ));
        }
        if self.mdns && self.peer_bind.is_none() {
            return Err(invalid(
                "mdns",
                format!(
                    "announces the port peers call: set peer_bind too (e.g. \"0.0.0.0:{}\")",
                    crate::peer::DEFAULT_PEER_PORT
                ),
            ));
        }
        if let SourceConfig::Simulator {
            ecg_hz,
            time_factor,
            ..
        } = &self.source
        {
            if *ecg_hz != 130 && *ecg_hz != 250 {
                return Err(invalid(
                    "source.ecg_hz",
                    format!("is {ecg_hz}, must be 130 or 250"),
                ));
            }
            if !time_factor.is_finite() || *time_factor < 1.0 || *time_factor > MAX_TIME_FACTOR {
                return Err(invalid(
                    "source.time_factor",
                    format!("is {time_factor}, must be between 1 and {MAX_TIME_FACTOR}"),
                ));
            }
        }
        if let SourceConfig::Ble { adapter, monitors } = &self.source {
            check_ble(adapter.as_deref(), monitors).map_err(|(field, p)| invalid(field, p))?;
        }
        Ok(())
    }
}

impl SourceConfig {
    /// The channels the room's monitors deliver (for "no data" advisories).
    pub fn expected_channels(&self) -> Vec<Channel> {
        match self {
            SourceConfig::Simulator { .. } => Channel::ALL.to_vec(),
            SourceConfig::Ble { monitors, .. } => Channel::ALL
                .into_iter()
                .filter(|c| {
                    monitors
                        .iter()
                        .flat_map(|m| &m.measures)
                        .any(|k| k.channels().contains(c))
                })
                .collect(),
            SourceConfig::None => Vec::new(),
        }
    }

    /// The collector's settings, for a `ble` source.
    pub fn collector_settings(&self) -> Option<CollectorSettings> {
        let SourceConfig::Ble { adapter, monitors } = self else {
            return None;
        };
        Some(CollectorSettings {
            adapter: adapter.clone(),
            monitors: monitors
                .iter()
                .map(|m| MonitorSpec {
                    device: m.device.clone(),
                    address: m.address.clone(),
                    name: m.name.clone(),
                    measures: m.measures.clone(),
                    silence: Duration::from_secs(u64::from(m.silence_s.unwrap_or_else(|| {
                        m.measures
                            .iter()
                            .map(|k| k.default_silence_s())
                            .max()
                            .unwrap_or(15)
                    }))),
                })
                .collect(),
        })
    }
}

/// Checks a `ble` source: which field is wrong, and how.
fn check_ble(
    adapter: Option<&str>,
    monitors: &[MonitorConfig],
) -> Result<(), (&'static str, String)> {
    if let Some(a) = adapter
        && (a.is_empty() || a.len() > 32 || !a.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err((
            "source.adapter",
            format!("is {a:?}; give a name like \"hci0\""),
        ));
    }
    if monitors.is_empty() {
        return Err((
            "source.monitor",
            "is missing; assign at least one monitor with a [[source.monitor]] table".into(),
        ));
    }
    if monitors.len() > MAX_MONITORS {
        return Err((
            "source.monitor",
            format!("has {} monitors, at most {MAX_MONITORS}", monitors.len()),
        ));
    }
    for (i, m) in monitors.iter().enumerate() {
        let n = i + 1;
        if m.device.is_empty() || m.device.len() > 64 {
            return Err((
                "source.monitor.device",
                format!("monitor {n}: is {:?}, must be 1 to 64 characters", m.device),
            ));
        }
        if monitors[..i].iter().any(|o| o.device == m.device) {
            return Err((
                "source.monitor.device",
                format!("monitor {n}: {:?} is used twice", m.device),
            ));
        }
        match (&m.address, &m.name) {
            (Some(a), None) => {
                let ok = a.len() == 17
                    && a.split(':').count() == 6
                    && a.split(':')
                        .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
                if !ok {
                    return Err((
                        "source.monitor.address",
                        format!(
                            "monitor {n} ({}): is {a:?}, must look like AA:BB:CC:DD:EE:FF",
                            m.device
                        ),
                    ));
                }
            }
            (None, Some(name)) if !name.is_empty() => {}
            _ => {
                return Err((
                    "source.monitor.address",
                    format!(
                        "monitor {n} ({}): give exactly one of address or name",
                        m.device
                    ),
                ));
            }
        }
        if m.measures.is_empty() {
            return Err((
                "source.monitor.measures",
                format!("monitor {n} ({}): is empty; say what it measures", m.device),
            ));
        }
        if let Some(s) = m.silence_s
            && !(1..=MAX_SILENCE_S).contains(&s)
        {
            return Err((
                "source.monitor.silence_s",
                format!(
                    "monitor {n} ({}): is {s}, must be between 1 and {MAX_SILENCE_S}",
                    m.device
                ),
            ));
        }
    }
    Ok(())
}

/// Site and room ids end up in URLs, certificate names and file names: keep them plain.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("is {id:?}, must be 1 to 64 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!("is {id:?}, may only hold a-z, 0-9, '-' and '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(text: &str, expected: &[&str]) {
        let err = EdgeConfig::parse(Path::new("/etc/vigil/edge.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/vigil/edge.toml"), "{err}");
        for e in expected {
            assert!(err.contains(e), "expected {e:?} in {err:?}");
        }
    }

    #[test]
    fn peers_need_the_certificate_and_mdns_the_port() {
        let base = "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/var/lib/vigil\"\n";
        check_err(
            &format!("{base}peers = [\"10.1.2.4:4434\"]\n"),
            &["peers", "enrol it first"],
        );
        let cloud = "[cloud]\naddr = \"10.0.0.5:4433\"\nserver_name = \"s\"\nca_cert = \"/c\"\ncert = \"/a\"\nkey = \"/k\"\n";
        check_err(
            &format!("{base}mdns = true\n{cloud}"),
            &["mdns", "set peer_bind too"],
        );
        check_err(&format!("{base}peers = [\"nowhere\"]\n{cloud}"), &["peers"]);
        let c = EdgeConfig::parse(
            Path::new("edge.toml"),
            &format!("{base}peer_bind = \"0.0.0.0:4434\"\nmdns = true\n{cloud}"),
        )
        .unwrap();
        let p = c.peer_settings();
        assert!(p.enabled() && p.mdns && p.addrs.is_empty());
        assert!(
            !EdgeConfig::parse(Path::new("edge.toml"), base)
                .unwrap()
                .peer_settings()
                .enabled()
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = EdgeConfig::parse(
            Path::new("edge.toml"),
            "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/var/lib/vigil\"\n",
        )
        .unwrap();
        assert_eq!(c.chunk_period_s, 10);
        assert_eq!(c.group_commit_ms, 1000);
        assert_eq!(c.http_bind.port(), 8080);
        assert_eq!(c.source.time_factor(), 1.0);
    }

    #[test]
    fn ble_source_assigns_monitors_by_address_or_name() {
        let c = EdgeConfig::parse(
            Path::new("edge.toml"),
            r#"
site = "austin"
room = "1"
data_dir = "/d"
[source]
kind = "ble"
adapter = "hci0"
[[source.monitor]]
device = "hr-strap"
name = "Polar H10 1234"
measures = ["heart_rate", "ecg"]
[[source.monitor]]
device = "bp-cuff"
address = "00:00:00:00:00:04"
measures = ["blood_pressure"]
silence_s = 400
"#,
        )
        .unwrap();
        assert_eq!(c.source.time_factor(), 1.0);
        assert_eq!(
            c.source.expected_channels(),
            [Channel::Hr, Channel::Rr, Channel::Nibp, Channel::Ecg]
        );
        let s = c.source.collector_settings().unwrap();
        assert_eq!(s.adapter.as_deref(), Some("hci0"));
        assert_eq!(s.monitors[0].silence, Duration::from_secs(15));
        assert_eq!(s.monitors[1].silence, Duration::from_secs(400));
        assert_eq!(s.monitors[1].address.as_deref(), Some("00:00:00:00:00:04"));
    }

    #[test]
    fn ble_source_errors_name_the_monitor_and_field() {
        let base = "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/d\"\n[source]\nkind = \"ble\"\n";
        check_err(base, &["source.monitor", "at least one"]);
        let monitor = |body: &str| format!("{base}[[source.monitor]]\n{body}\n");
        check_err(
            &monitor("device = \"ox\"\nmeasures = [\"pulse_oximetry\"]"),
            &["source.monitor.address", "ox", "exactly one"],
        );
        check_err(
            &monitor("device = \"ox\"\naddress = \"00:11\"\nmeasures = [\"pulse_oximetry\"]"),
            &["source.monitor.address", "AA:BB"],
        );
        check_err(
            &monitor("device = \"ox\"\nname = \"x\"\nmeasures = []"),
            &["source.monitor.measures"],
        );
        check_err(
            &monitor("device = \"ox\"\nname = \"x\"\nmeasures = [\"spo3\"]"),
            &["spo3"],
        );
        check_err(
            &monitor("device = \"ox\"\nname = \"x\"\nmeasures = [\"ecg\"]\nsilence_s = 0"),
            &["source.monitor.silence_s"],
        );
        check_err(
            &format!(
                "{}[[source.monitor]]\ndevice = \"ox\"\nname = \"y\"\nmeasures = [\"ecg\"]\n",
                monitor("device = \"ox\"\nname = \"x\"\nmeasures = [\"ecg\"]")
            ),
            &["used twice"],
        );
    }

    #[test]
    fn errors_name_file_field_and_problem() {
        let base = "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/d\"\n";
        check_err("room = \"1\"\ndata_dir = \"/d\"\n", &["site"]);
        check_err(
            &format!("{base}chunk_period_s = 0\n"),
            &["chunk_period_s", "between"],
        );
        check_err(
            &format!("{base}group_commit_ms = 5000\n"),
            &["group_commit_ms"],
        );
        check_err(&format!("{base}colour = 3\n"), &["colour"]);
        check_err(
            &format!("{base}clock_offset_s = 99999999\n"),
            &["clock_offset_s", "between"],
        );
        check_err(&format!("{base}http_bind = \"nowhere\"\n"), &["http_bind"]);
        check_err(
            &format!("{base}[source]\nkind = \"simulator\"\necg_hz = 100\n"),
            &["source.ecg_hz", "130 or 250"],
        );
        check_err(
            &format!("{base}[source]\nkind = \"simulator\"\ntime_factor = 0.5\n"),
            &["source.time_factor"],
        );
        check_err(
            &format!("{base}[source]\nkind = \"simulator\"\nscenario = \"volcano\"\n"),
            &["volcano"],
        );
        check_err(
            "site = \"Austin TX\"\nroom = \"1\"\ndata_dir = \"/d\"\n",
            &["`site`", "a-z"],
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let base = "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/d\"\n";
        let tls =
            "[http_tls]\ncert = \"/pki/screen-austin-1.pem\"\nkey = \"/pki/screen-austin-1.key\"\n";
        let parse = |text: &str| EdgeConfig::parse(Path::new("edge.toml"), text);
        // (bind, accepted without TLS)
        let cases = [
            ("127.0.0.1:8080", true),
            ("127.5.6.7:0", true),
            ("[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", true),
            ("0.0.0.0:8443", false),
            ("[::]:8443", false),
            ("10.1.2.3:8443", false),
            ("192.168.0.10:80", false),
            ("[fe80::1]:8443", false),
            ("[::ffff:10.1.2.3]:8443", false),
        ];
        for (bind, plain_ok) in cases {
            let plain = format!("{base}http_bind = \"{bind}\"\n");
            assert_eq!(parse(&plain).is_ok(), plain_ok, "{bind} without TLS");
            let with_tls = parse(&format!("{plain}{tls}")).unwrap();
            assert_eq!(
                with_tls.http_tls,
                Some(HttpTls {
                    cert: "/pki/screen-austin-1.pem".into(),
                    key: "/pki/screen-austin-1.key".into(),
                }),
                "{bind} with TLS"
            );
        }
        // The refusal says what to configure and how to get the certificate.
        check_err(
            &format!("{base}http_bind = \"10.1.2.3:8443\"\n"),
            &[
                "`http_bind`",
                "10.1.2.3:8443",
                "not a loopback address",
                "[http_tls]",
                "cert = ",
                "key = ",
                "vigil-cloud pki issue-appliance",
                "--site austin --room 1",
                "--screen-ip 10.1.2.3",
                "screen-austin-1.pem",
                "127.0.0.1",
            ],
        );
        check_err(
            &format!("{base}http_bind = \"0.0.0.0:8443\"\n"),
            &["0.0.0.0:8443", "--screen-ip ADDRESS"],
        );
    }

    #[test]
    fn http_tls_is_parsed_strictly() {
        let base =
            "site = \"austin\"\nroom = \"1\"\ndata_dir = \"/d\"\nhttp_bind = \"10.1.2.3:8443\"\n";
        check_err(
            &format!("{base}[http_tls]\ncert = \"/c.pem\"\n"),
            &["missing field `key`"],
        );
        check_err(
            &format!("{base}[http_tls]\nkey = \"/k.pem\"\n"),
            &["missing field `cert`"],
        );
        check_err(
            &format!("{base}[http_tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nca = \"/ca.pem\"\n"),
            &["unknown field `ca`"],
        );
        check_err(
            &format!("{base}[http_tls]\ncert = \"\"\nkey = \"/k.pem\"\n"),
            &["`http_tls.cert`", "is empty"],
        );
        check_err(
            &format!("{base}[http_tls]\ncert = \"/c.pem\"\nkey = \"\"\n"),
            &["`http_tls.key`", "is empty"],
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let err = EdgeConfig::load(Path::new("/nonexistent/edge.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/edge.toml"), "{err}");
    }
}
