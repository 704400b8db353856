//! Who is asking, at the appliance's HTTP server: credentials and what they may do, the
//! signed-in room-screen browsers, the client's address and the `Host` header.
//!
//! Three credentials reach the appliance:
//! - a **site token** (`vgt_<site>_…`), issued by the cloud for an integration and sent down in
//!   the site's configuration document as a SHA-256 hash with an expiry and a revoked flag;
//! - the **local token** (`vgl_…`), made at first start and kept in the data directory
//!   ([`LOCAL_TOKEN_FILE`], mode 0600) for the IT person, `vigil demo` and tests;
//! - a **signed-in room screen** (the `vigil_room` cookie), for a nurse, clinician or the front
//!   desk who signed in with their PIN.
//!
//! Each becomes a [`Principal`] whose `id` is what documents record as `by`: a request body
//! never says who acted. This module decides nothing about clinical rules (the recorder does)
//! and holds no HTTP routes (the API and the screen do).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vigil_shared::doc::SiteApiToken;

/// The local token's file in the data directory.
pub const LOCAL_TOKEN_FILE: &str = "api-token";

/// Prefix of the local token.
pub const LOCAL_TOKEN_PREFIX: &str = "vgl_";

/// Prefix of a site token, followed by the site id and `_` (as the cloud issues them).
pub const SITE_TOKEN_PREFIX: &str = "vgt_";

/// A signed-in tablet is signed out after this long without a request: long enough for an
/// infusion watched without touching the screen, short enough that a tablet left in a room
/// overnight is not signed in the next morning.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Signed-in browsers kept; the least recently used is signed out past this. A room has a few
/// tablets; the bound keeps a flood of sign-ins from growing memory.
pub const MAX_SIGNED_IN: usize = 64;

/// What a principal is, for what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A clinician: everything a nurse does, and overriding a contraindication.
    Clinician,
    /// A nurse: records the infusion.
    Nurse,
    /// The front desk: registers patients and records screening answers.
    FrontDesk,
    /// An integration holding a site token.
    Integration,
    /// The holder of the appliance's local token (its IT person, the demo, tests).
    Local,
}

impl Role {
    /// The role of a staff member as the site configuration names it; `None` for a name
    /// Vigil does not know (that person cannot sign in).
    pub fn from_staff(name: &str) -> Option<Role> {
        use vigil_shared::clinical::StaffRole;
        match StaffRole::parse(name).ok()? {
            StaffRole::Clinician => Some(Role::Clinician),
            StaffRole::Nurse => Some(Role::Nurse),
            StaffRole::FrontDesk => Some(Role::FrontDesk),
        }
    }

    /// As a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::FrontDesk => "front desk",
            Role::Integration => "integration",
            Role::Local => "appliance operator",
        }
    }

    /// Whether this role may record the infusion itself (start, dose, side effects, scores,
    /// advisories, discharge). The front desk registers patients and screens them.
    pub fn may_treat(self) -> bool {
        !matches!(self, Role::FrontDesk)
    }

    /// Whether this role may override a contraindication: clinicians only, in person.
    pub fn is_clinician(self) -> bool {
        self == Role::Clinician
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What documents record as `by`: a staff id, `token:LABEL` or `local`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential at all.
    #[error(
        "this needs a credential: an API token (Authorization: Bearer …) or a signed-in room screen"
    )]
    Missing,
    /// A credential that is unknown, expired or revoked.
    #[error("the credential is not valid here (unknown, expired, revoked or signed out)")]
    Invalid,
    /// A site token of another site.
    #[error("this token belongs to site {0}; this appliance serves another site")]
    OtherSite(String),
}

/// The local token, made at first start: read from the data directory or written there.
pub fn local_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(LOCAL_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().starts_with(LOCAL_TOKEN_PREFIX) => return Ok(t.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a local API token; delete it to make a new one",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = format!("{LOCAL_TOKEN_PREFIX}{}", random_token());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// Random tokens, the SHA-256 the cloud stores of a site token, and constant-time comparison:
/// one implementation for both servers.
pub use vigil_web::secret::{random_token, same, sha256_hex as token_sha256};

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The site a site token names, if `token` has a site token's shape.
pub fn token_site(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(SITE_TOKEN_PREFIX)?;
    let (site, secret) = rest.rsplit_once('_')?;
    (!site.is_empty() && !secret.is_empty()).then_some(site)
}

/// Checks a bearer token: the local one (by its hash), or one of `site`'s tokens from its
/// configuration, valid at `now_us` on the appliance's clock.
pub fn check_token(
    token: &str,
    local_sha256: &str,
    site: &str,
    site_tokens: &[SiteApiToken],
    now_us: i64,
) -> Result<Principal, Refusal> {
    let digest = token_sha256(token);
    if token.starts_with(LOCAL_TOKEN_PREFIX) {
        return if same(&digest, local_sha256) {
            Ok(Principal {
                id: "local".into(),
                name: "Appliance operator".into(),
                role: Role::Local,
            })
        } else {
            Err(Refusal::Invalid)
        };
    }
    match token_site(token) {
        Some(other) if other != site => return Err(Refusal::OtherSite(other.to_owned())),
        Some(_) => {}
        None => return Err(Refusal::Invalid),
    }
    let found = site_tokens
        .iter()
        .find(|t| same(&t.sha256, &digest))
        .filter(|t| !t.revoked && now_us < t.expires_us)
        .ok_or(Refusal::Invalid)?;
    Ok(Principal {
        id: format!("token:{}", found.label),
        name: format!("Integration {}", found.label),
        role: Role::Integration,
    })
}

/// One signed-in browser of the room screen.
#[derive(Debug, Clone)]
pub struct ScreenSession {
    /// The person.
    pub principal: Principal,
    /// The CSRF token of this sign-in.
    pub csrf: String,
    last_seen: Instant,
}

/// The room screen's signed-in browsers, by cookie token. In memory: a restart signs everyone
/// out, which is the safe way round for a device in a shared room.
#[derive(Debug, Default)]
pub struct ScreenSessions {
    map: Mutex<HashMap<String, ScreenSession>>,
}

impl ScreenSessions {
    /// Signs a person in; returns the cookie token.
    pub fn sign_in(&self, principal: Principal) -> String {
        let token = random_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SIGNED_IN
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            token.clone(),
            ScreenSession {
                principal,
                csrf: random_token(),
                last_seen: Instant::now(),
            },
        );
        token
    }

    /// The session of a cookie token, marked as used now; `None` if unknown or idle too long.
    pub fn touch(&self, token: &str) -> Option<ScreenSession> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, v| now.duration_since(v.last_seen) < IDLE_TIMEOUT);
        map.get_mut(token).map(|v| {
            v.last_seen = now;
            v.clone()
        })
    }

    /// Whether a cookie token is still signed in (without marking it used): a live stream
    /// ends when this turns false.
    pub fn is_signed_in(&self, token: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token)
            .is_some_and(|v| v.last_seen.elapsed() < IDLE_TIMEOUT)
    }

    /// Signs a browser out.
    pub fn sign_out(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// The names a browser may use for this appliance in its `Host` header: loopback names and
/// addresses always, the address it listens on, and the names configured for the room network
/// (`http_hosts`). A page on any other name is a DNS-rebinding attempt, or a mistake.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// Loopback, the bound address (unless it is a wildcard) and `configured`.
    pub fn new(bind: SocketAddr, configured: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if !bind.ip().is_unspecified() {
            names.push(bind.ip().to_string());
        }
        names.extend(configured.iter().map(|h| h.to_ascii_lowercase()));
        AllowedHosts { names }
    }

    /// Whether a `Host` header value (with or without a port) names this appliance.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = if let Some(rest) = host.strip_prefix('[') {
            // [v6]:port
            rest.split(']').next().unwrap_or("")
        } else if host.matches(':').count() == 1 {
            host.split(':').next().unwrap_or("")
        } else {
            host.as_str()
        };
        let loopback = name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback || self.names.iter().any(|n| n == name)
    }
}

/// Whether `pin` matches a staff member's argon2id hash; a malformed hash matches nothing.
pub(crate) fn pin_matches(pin: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(pin.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_token(label: &str, token: &str, expires_us: i64, revoked: bool) -> SiteApiToken {
        SiteApiToken {
            label: label.into(),
            sha256: token_sha256(token),
            created_us: 0,
            expires_us,
            revoked,
        }
    }

    #[test]
    fn tokens_become_principals_or_refusals() {
        let local = "vgl_abc";
        let good = "vgt_austin_0123";
        let tokens = [
            site_token("ehr", good, 100, false),
            site_token("old", "vgt_austin_old", 100, true),
            site_token("late", "vgt_austin_late", 10, false),
        ];
        let check = |t: &str| check_token(t, &token_sha256(local), "austin", &tokens, 50);
        type Expected = Result<(&'static str, Role), Refusal>;
        let cases: &[(&str, Expected)] = &[
            ("vgl_abc", Ok(("local", Role::Local))),
            ("vgl_abd", Err(Refusal::Invalid)),
            ("vgt_austin_0123", Ok(("token:ehr", Role::Integration))),
            ("vgt_austin_old", Err(Refusal::Invalid)),
            ("vgt_austin_late", Err(Refusal::Invalid)),
            ("vgt_austin_0124", Err(Refusal::Invalid)),
            (
                "vgt_florida_0123",
                Err(Refusal::OtherSite("florida".into())),
            ),
            ("vgt_austin", Err(Refusal::Invalid)),
            ("hunter2", Err(Refusal::Invalid)),
            ("", Err(Refusal::Invalid)),
        ];
        for (token, expected) in cases {
            let got = check(token).map(|p| (p.id, p.role));
            let expected = expected.clone().map(|(id, role)| (id.to_owned(), role));
            assert_eq!(got, expected, "{token}");
        }
    }

    #[test]
    fn bearer_headers_are_parsed() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn hosts_are_checked_with_and_without_ports() {
        let bind: SocketAddr = "10.1.2.3:8443".parse().unwrap();
        let hosts = AllowedHosts::new(bind, &["Room1.Austin.Clinic".into()]);
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:8443",
            "10.1.2.3:8443",
            "room1.austin.clinic",
            "ROOM1.austin.clinic:8443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8443",
            "10.1.2.4",
            "room1.austin.clinic.attacker.example",
            "",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let wildcard = AllowedHosts::new("0.0.0.0:80".parse().unwrap(), &[]);
        assert!(!wildcard.allows("0.0.0.0"));
    }

    #[test]
    fn screen_sessions_sign_in_touch_and_out() {
        let s = ScreenSessions::default();
        let p = Principal {
            id: "nurse-ana".into(),
            name: "Ana".into(),
            role: Role::Nurse,
        };
        let t = s.sign_in(p.clone());
        assert_eq!(s.touch(&t).map(|v| v.principal), Some(p));
        assert!(s.is_signed_in(&t));
        s.sign_out(&t);
        assert!(!s.is_signed_in(&t));
        assert!(s.touch(&t).is_none());
    }

    #[test]
    fn the_local_token_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = local_token(dir.path()).unwrap();
        let b = local_token(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with(LOCAL_TOKEN_PREFIX) && a.len() == 4 + 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LOCAL_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(LOCAL_TOKEN_FILE), "garbage").unwrap();
        assert!(local_token(dir.path()).is_err());
    }
}
