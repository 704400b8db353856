//! The aggregator's configuration file (`cloud.toml`): where it keeps data, where it listens,
//! which certificates it uses, the API token, the sites it serves and the names and proxies of
//! its HTTP server (`[http]`).
//!
//! Parsing is strict: unknown fields, missing fields and bad values are errors that name the
//! file and the field. Certificate files are checked when the server starts ([`crate::tls`]).
//! This module only reads and checks values; the HTTP layer applies them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_shared::zone::SiteZone;

/// Shortest API token accepted: the configured token is a service token with an admin's
/// scope, so it must not be guessable.
pub const MIN_TOKEN_LEN: usize = 24;

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
    /// The file is not valid TOML or has unknown or missing fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// A field has a value Vigil does not accept.
    #[error("config file {path}: field `{field}` {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// Longest host name accepted in `[http] hosts` (DNS's limit).
const MAX_HOST_LEN: usize = 253;

/// A site as configured in `cloud.toml` (`[[sites]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInfo {
    /// Site id, as in appliance certificates, e.g. `austin`.
    pub id: String,
    /// Display name, e.g. `Austin, TX`.
    pub name: String,
    /// Region, for regional managers' scope.
    #[serde(default)]
    pub region: String,
    /// Room ids.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// The site's time zone, an IANA name (`America/Chicago`); absent is UTC. Pages show the
    /// site's times in it, and "today" and per-day figures use the site's day; it is sent to
    /// the site's appliances in the site configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

impl SiteInfo {
    /// The site's zone (UTC when none is configured; the configuration check refuses an
    /// unknown name at start).
    pub fn zone(&self) -> SiteZone {
        SiteZone::parse_or_utc(self.tz.as_deref())
    }
}

/// Each site's zone by site id, built once for a page; a site not listed reads as UTC.
#[derive(Debug, Clone, Default)]
pub struct Zones(std::collections::BTreeMap<String, SiteZone>);

impl Zones {
    /// The zones of `sites`.
    pub fn of(sites: &[SiteInfo]) -> Zones {
        Zones(sites.iter().map(|s| (s.id.clone(), s.zone())).collect())
    }

    /// The zone of `site`.
    pub fn get(&self, site: &str) -> SiteZone {
        self.0.get(site).cloned().unwrap_or_else(SiteZone::utc)
    }

    /// The zones of the sites `keep` accepts.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> Zones {
        Zones(
            self.0
                .iter()
                .filter(|(site, _)| keep(site))
                .map(|(site, zone)| (site.clone(), zone.clone()))
                .collect(),
        )
    }

    /// Every distinct zone, with the sites in it.
    pub fn groups(&self) -> Vec<(SiteZone, Vec<&str>)> {
        let mut out: Vec<(SiteZone, Vec<&str>)> = Vec::new();
        for (site, zone) in &self.0 {
            match out.iter_mut().find(|(z, _)| z == zone) {
                Some((_, sites)) => sites.push(site),
                None => out.push((zone.clone(), vec![site])),
            }
        }
        out
    }
}

/// An address or a network (`10.0.0.0/8`, `fd00::/8`) of reverse proxies, as written in
/// `[http] trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl ProxyNet {
    /// Whether `ip` is in this network. An IPv4 address seen as IPv4-mapped IPv6 (a dual-stack
    /// listener) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(text: String) -> Result<ProxyNet, String> {
        let bad = || {
            format!("{text:?} is not an IP address or network (e.g. \"127.0.0.1\", \"10.0.0.0/8\")")
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(ProxyNet { addr, prefix_len })
    }
}

/// The HTTP server's section, `[http]`; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Names the dashboard and API answer to, e.g. `dashboard.example.org` (no scheme, no
    /// port). Loopback names and addresses and the address a request arrived on are always
    /// accepted; any other `Host` is refused, which stops DNS rebinding.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Reverse proxies in front of the server: only when a request's TCP peer is one of these
    /// is its `X-Forwarded-For` believed, for sign-in limits and the audit log.
    #[serde(default)]
    pub trusted_proxies: Vec<ProxyNet>,
}

impl HttpConfig {
    /// Lower-cases the host names and drops a trailing dot, as they are compared.
    fn normalise(&mut self) {
        for h in &mut self.hosts {
            *h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        }
    }

    /// Checks that every host is a bare DNS name or IP address.
    fn check_hosts(&self) -> Result<(), (String, String)> {
        for (i, host) in self.hosts.iter().enumerate() {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let is_name = !host.is_empty()
                && host.len() <= MAX_HOST_LEN
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !is_name && host.parse::<IpAddr>().is_err() {
                return Err((
                    format!("http.hosts[{i}]"),
                    format!(
                        "is {host:?}; write a bare host name or IP address such as \
                         \"dashboard.example.org\" (no scheme, port or path)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where the cloud keeps its data, `[store]`: SQLite (the default, one machine, no set-up) or
/// PostgreSQL (several cloud instances on one database).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the file `vigil-cloud.db` in `data_dir`) or `postgres`.
    #[serde(default)]
    pub kind: StoreKind,
    /// PostgreSQL's address, `postgres://user:password@host:port/database`. Prefer
    /// `url_file`, which keeps the password out of this file.
    pub url: Option<String>,
    /// A file holding the address (one line; readable by the cloud's user only).
    pub url_file: Option<PathBuf>,
    /// The CA certificate(s) of the PostgreSQL server's certificate, PEM. With it the
    /// connection is TLS and the server is verified; without it only a server on this
    /// machine is accepted.
    pub ca_file: Option<PathBuf>,
}

/// The storage engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file in `data_dir`.
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl StoreConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, problem: &str| Err((format!("store.{field}"), problem.to_owned()));
        match self.kind {
            StoreKind::Sqlite => {
                for (field, set) in [
                    ("url", self.url.is_some()),
                    ("url_file", self.url_file.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                ] {
                    if set {
                        return err(field, "is for kind = \"postgres\"; SQLite needs nothing");
                    }
                }
                Ok(())
            }
            StoreKind::Postgres => match (&self.url, &self.url_file) {
                (None, None) => err("url_file", "is missing: PostgreSQL needs url_file or url"),
                (Some(_), Some(_)) => err("url", "and url_file are both set; give one"),
                _ => Ok(()),
            },
        }
    }

    /// The PostgreSQL address: `url`, or the first line of `url_file`.
    pub fn postgres_url(&self) -> Result<String, String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let Some(path) = &self.url_file else {
            return Err("[store] names neither url nor url_file".into());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read store.url_file {}: {e}", path.display()))?;
        let url = text.lines().next().unwrap_or("").trim().to_owned();
        if url.is_empty() {
            return Err(format!("store.url_file {} is empty", path.display()));
        }
        Ok(url)
    }
}

/// Certificate files of the cloud.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiFiles {
    /// The private CA's certificate (appliance certificates must chain to it).
    pub ca_cert: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The CA's revocation list; re-read while running, so a revocation takes effect without
    /// a restart.
    pub crl: PathBuf,
    /// The CA's directory (`ca.pem`, `ca.key`), when this cloud issues certificates itself:
    /// to appliances enrolling with a one-time code and to appliances renewing theirs.
    /// Without it both are refused with the reason.
    #[serde(default)]
    pub ca_dir: Option<PathBuf>,
    /// How long an appliance certificate issued here lasts, seconds (a year by default).
    /// Appliances renew at a third of it remaining.
    #[serde(default)]
    pub appliance_validity_s: Option<u64>,
    /// How long a renewed certificate keeps working after its replacement is issued,
    /// seconds (a day by default), so an appliance that lost the answer can still connect.
    #[serde(default)]
    pub renewal_grace_s: Option<u64>,
}

impl PkiFiles {
    /// The files `vigil-cloud pki` writes into one directory: `ca.pem`, `server.pem`,
    /// `server.key` and `crl.pem`; the CA's key is not used (no `ca_dir`).
    pub fn in_dir(dir: &Path) -> PkiFiles {
        PkiFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            crl: dir.join("crl.pem"),
            ca_dir: None,
            appliance_validity_s: None,
            renewal_grace_s: None,
        }
    }
}

/// The `[sync]` section: what enrolment codes name, and which appliances are too old.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// The sync address appliances reach this cloud at (`host:port`), put in enrolment
    /// codes; `quic_bind` when absent (which only suits a cloud bound to a routable address).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The oldest sync protocol version accepted; older appliances are told to update.
    /// Every version this build speaks by default.
    #[serde(default)]
    pub oldest_protocol: Option<u16>,
}

/// The aggregator's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Database directory; created if missing.
    pub data_dir: PathBuf,
    /// UDP address of the QUIC sync endpoint.
    pub quic_bind: SocketAddr,
    /// TCP address of the HTTP API.
    pub http_bind: SocketAddr,
    /// The service token of the JSON API (an admin's scope); people use their own tokens.
    pub api_token: String,
    /// Certificates.
    pub pki: PkiFiles,
    /// The sites served.
    pub sites: Vec<SiteInfo>,
    /// Host names and trusted proxies of the HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// The storage engine; SQLite in `data_dir` when absent.
    #[serde(default)]
    pub store: StoreConfig,
    /// Enrolment codes' address and the oldest protocol accepted.
    #[serde(default)]
    pub sync: SyncSettings,
    /// This instance's name, when several run on one PostgreSQL database (the appliance
    /// registry records which instance holds each appliance); the host name and sync port
    /// when absent.
    pub instance: Option<String>,
}

impl CloudConfig {
    /// Reads and validates a config file. Relative paths are taken relative to the file.
    pub fn load(path: &Path) -> Result<CloudConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: CloudConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(base) = path.parent() {
            config.resolve(base);
        }
        config.http.normalise();
        config.validate(path)?;
        Ok(config)
    }

    /// The fleet settings of the sync server: the CA at work when `[pki] ca_dir` is set, and
    /// the oldest protocol accepted.
    pub fn fleet(&self) -> Result<crate::sync::FleetSettings, crate::pki::PkiError> {
        use crate::sync::certs::{CertIssuer, DEFAULT_APPLIANCE_VALIDITY};
        let issuer = match &self.pki.ca_dir {
            Some(dir) => Some(std::sync::Arc::new(CertIssuer::load(
                dir,
                self.pki
                    .appliance_validity_s
                    .map_or(DEFAULT_APPLIANCE_VALIDITY, std::time::Duration::from_secs),
                std::time::Duration::from_secs(self.pki.renewal_grace_s.unwrap_or(24 * 3600)),
            )?)),
            None => None,
        };
        Ok(crate::sync::FleetSettings {
            issuer,
            oldest_protocol: self
                .sync
                .oldest_protocol
                .unwrap_or(vigil_shared::wire::MIN_PROTOCOL_VERSION),
        })
    }

    /// The sync address enrolment codes name: `[sync] advertise`, or `quic_bind`.
    pub fn advertised_sync_addr(&self) -> String {
        self.sync
            .advertise
            .clone()
            .unwrap_or_else(|| self.quic_bind.to_string())
    }

    /// The instance's name: `instance`, or `HOST:SYNC_PORT`.
    pub fn instance_name(&self, sync_port: u16) -> String {
        if let Some(name) = &self.instance {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let host = if host.is_empty() {
            "cloud".to_owned()
        } else {
            host
        };
        format!("{host}:{sync_port}")
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.pki.ca_cert);
        fix(&mut self.pki.server_cert);
        fix(&mut self.pki.server_key);
        fix(&mut self.pki.crl);
        for p in [
            &mut self.store.url_file,
            &mut self.store.ca_file,
            &mut self.pki.ca_dir,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Checks values; `path` only names the file in messages.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            problem,
        };
        if self.api_token.len() < MIN_TOKEN_LEN {
            return Err(invalid(
                "api_token",
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        if self.sites.is_empty() {
            return Err(invalid("sites", "lists no site".into()));
        }
        self.http
            .check_hosts()
            .map_err(|(field, problem)| invalid(&field, problem))?;
        self.store
            .check()
            .map_err(|(field, problem)| invalid(&field, problem))?;
        if let Some(v) = self.sync.oldest_protocol
            && !vigil_shared::wire::PROTOCOL_VERSIONS.contains(&v)
        {
            return Err(invalid(
                "sync.oldest_protocol",
                format!(
                    "is {v}; this vigil-cloud speaks {:?}",
                    vigil_shared::wire::PROTOCOL_VERSIONS
                ),
            ));
        }
        if self.pki.appliance_validity_s == Some(0) {
            return Err(invalid("pki.appliance_validity_s", "is 0".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let ok = |s: &str| {
                !s.is_empty()
                    && s.len() <= 32
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            };
            if !ok(&site.id) {
                return Err(invalid(
                    &format!("sites[{i}].id"),
                    format!("is {:?}; use 1-32 of a-z, 0-9, '-'", site.id),
                ));
            }
            if !seen.insert(site.id.clone()) {
                return Err(invalid(
                    &format!("sites[{i}].id"),
                    format!("{:?} is listed twice", site.id),
                ));
            }
            if !ok(&site.region) {
                return Err(invalid(
                    &format!("sites[{i}].region"),
                    format!(
                        "is {:?}; every site needs a region (regional managers see the sites \
                         of theirs): use 1-32 of a-z, 0-9, '-'",
                        site.region
                    ),
                ));
            }
            if let Some(tz) = &site.tz
                && let Err(e) = SiteZone::parse(tz)
            {
                return Err(invalid(&format!("sites[{i}].tz"), e.to_string()));
            }
            if let Some(room) = site.rooms.iter().find(|r| !ok(r)) {
                return Err(invalid(
                    &format!("sites[{i}].rooms"),
                    format!("room {room:?}; use 1-32 of a-z, 0-9, '-'"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
data_dir = "data"
quic_bind = "127.0.0.1:4433"
http_bind = "127.0.0.1:8443"
api_token = "0123456789abcdef0123456789"
[pki]
ca_cert = "pki/ca.pem"
server_cert = "pki/server.pem"
server_key = "pki/server.key"
crl = "pki/crl.pem"
[[sites]]
id = "austin"
name = "Austin, TX"
region = "south"
rooms = ["1", "2"]
"#;

    fn check_err(text: &str, expected: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.toml");
        std::fs::write(&path, text).unwrap();
        let err = CloudConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("cloud.toml"), "{err}");
        for e in expected {
            assert!(err.contains(e), "expected {e:?} in {err:?}");
        }
    }

    #[test]
    fn good_config_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert_eq!(c.pki.ca_cert, dir.path().join("pki/ca.pem"));
        assert_eq!(c.sites[0].rooms, vec!["1", "2"]);
        assert_eq!(c.sites[0].zone(), SiteZone::utc(), "no tz: UTC");
    }

    #[test]
    fn a_sites_time_zone_is_an_iana_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.toml");
        let with_tz = GOOD.replace("rooms = [", "tz = \"America/Chicago\"\nrooms = [");
        std::fs::write(&path, &with_tz).unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert_eq!(c.sites[0].zone().name(), "America/Chicago");
        let zones = Zones::of(&c.sites);
        assert_eq!(zones.get("austin").name(), "America/Chicago");
        assert_eq!(zones.get("nowhere").name(), "UTC");
        check_err(
            &with_tz.replace("America/Chicago", "America/Austin"),
            &["sites[0].tz", "unknown time zone \"America/Austin\""],
        );
    }

    #[test]
    fn errors_name_the_field() {
        check_err(
            &GOOD.replace("0123456789abcdef0123456789", "short"),
            &["api_token"],
        );
        check_err(
            &GOOD.replace("id = \"austin\"", "id = \"Austin TX\""),
            &["sites[0].id"],
        );
        check_err(&GOOD.replace("crl = \"pki/crl.pem\"\n", ""), &["crl"]);
        check_err(&format!("{GOOD}\nextra = 1\n"), &["extra"]);
        check_err(
            &GOOD.replace("region = \"south\"\n", ""),
            &["sites[0].region"],
        );
        check_err(
            &GOOD.replace("region = \"south\"", "region = \"South East\""),
            &["sites[0].region"],
        );
        check_err(
            &format!("{GOOD}\n[http]\nhosts = [\"https://dash.example.org\"]\n"),
            &["http.hosts[0]", "no scheme"],
        );
        check_err(
            &format!("{GOOD}\n[http]\nhosts = [\"dash.example.org:443\"]\n"),
            &["http.hosts[0]"],
        );
        check_err(
            &format!("{GOOD}\n[http]\ntrusted_proxies = [\"proxy.local\"]\n"),
            &["trusted_proxies", "not an IP address"],
        );
        check_err(
            &format!("{GOOD}\n[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"),
            &["trusted_proxies"],
        );
        check_err(&format!("{GOOD}\n[http]\nhost = []\n"), &["host"]);
    }

    #[test]
    fn the_store_is_sqlite_unless_postgres_is_named_with_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.toml");
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(
            CloudConfig::load(&path).unwrap().store.kind,
            StoreKind::Sqlite
        );
        let pg = format!(
            "{GOOD}\n[store]\nkind = \"postgres\"\nurl_file = \"pg-url\"\nca_file = \"pg-ca.pem\"\n"
        );
        std::fs::write(&path, &pg).unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert_eq!(c.store.kind, StoreKind::Postgres);
        assert_eq!(c.store.url_file, Some(dir.path().join("pg-url")));
        assert_eq!(c.store.ca_file, Some(dir.path().join("pg-ca.pem")));
        let err = c.store.postgres_url().unwrap_err();
        assert!(
            err.contains("store.url_file") && err.contains("pg-url"),
            "{err}"
        );
        std::fs::write(dir.path().join("pg-url"), "postgres://v:secret@db/vigil\n").unwrap();
        assert_eq!(
            c.store.postgres_url().unwrap(),
            "postgres://v:secret@db/vigil"
        );

        check_err(
            &format!("{GOOD}\n[store]\nkind = \"postgres\"\n"),
            &["store.url_file", "is missing"],
        );
        check_err(
            &format!("{GOOD}\n[store]\nkind = \"postgres\"\nurl = \"a\"\nurl_file = \"b\"\n"),
            &["store.url", "give one"],
        );
        check_err(
            &format!("{GOOD}\n[store]\nurl = \"postgres://db/vigil\"\n"),
            &["store.url", "kind = \"postgres\""],
        );
        check_err(&format!("{GOOD}\n[store]\nkind = \"mysql\"\n"), &["kind"]);
    }

    #[test]
    fn the_http_section_is_optional_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert!(c.http.hosts.is_empty() && c.http.trusted_proxies.is_empty());
        let text = format!(
            "{GOOD}\n[http]\nhosts = [\"Dashboard.Example.org.\", \"10.1.2.3\"]\n\
             trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert_eq!(c.http.hosts, ["dashboard.example.org", "10.1.2.3"]);
        assert_eq!(c.http.trusted_proxies.len(), 3);
    }

    #[test]
    fn proxy_networks_contain_their_addresses() {
        let net = |s: &str| ProxyNet::try_from(s.to_owned()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("192.168.1.0/24", "::ffff:192.168.1.7", true),
            ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "127.0.0.1", false),
        ];
        for (n, a, expected) in cases {
            assert_eq!(net(n).contains(ip(a)), expected, "{n} contains {a}");
        }
        for bad in [
            "",
            "proxy",
            "10.0.0.0/",
            "10.0.0.0/40",
            "::1/129",
            "1.2.3.4:80",
        ] {
            assert!(ProxyNet::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }
}
