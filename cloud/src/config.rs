//! The aggregator's configuration file (`cloud.toml`): where it keeps data, where it listens,
//! which certificates it uses, the API token and the sites it serves.
//!
//! Parsing is strict: unknown fields, missing fields and bad values are errors that name the
//! file and the field. Certificate files are checked when the server starts ([`crate::tls`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::SiteInfo;

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
        config.validate(path)?;
        Ok(config)
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
    }
}
