//! Who is asking and what they may see: roles and scope, password hashing (argon2id), browser
//! sessions, per-user API tokens, sign-in rate limiting and the audit log.
//!
//! - An **admin** sees every site; a **regional manager** the configured sites of their region;
//!   a **clinician** one site. [`Principal::scope`] is the list of site ids, resolved against
//!   `cloud.toml` at each request, so moving a site to another region takes effect on restart.
//! - The `api_token` of `cloud.toml` is a service token with an admin's scope.
//! - Secrets are random 32 bytes from aws-lc-rs, shown once (cookie, printed token) and stored
//!   as SHA-256 digests. Passwords are argon2id PHC strings with the crate's default cost.
//!
//! This module holds policy; storage is [`CloudStore`]'s, HTTP is [`crate::api`]'s and
//! [`crate::dashboard`]'s.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::api::SiteInfo;
use crate::store::{AuditRow, CloudStore, StoreError, UserRow};

/// A browser session ends after this long without a request, µs (30 minutes, the usual limit
/// for an unattended screen showing patient data).
pub const IDLE_TIMEOUT_US: i64 = 30 * 60 * 1_000_000;

/// A browser session ends this long after sign-in whatever the activity, µs (a working day).
pub const MAX_SESSION_US: i64 = 12 * 3600 * 1_000_000;

/// How often a session's last-seen time is written, µs: often enough for the idle timeout to
/// be accurate to a minute, rarely enough that page views do not each cost a disk sync.
pub const TOUCH_EVERY_US: i64 = 60 * 1_000_000;

/// Failed sign-ins allowed per user name within [`FAILURE_WINDOW_US`] before further attempts
/// for that name are refused without checking.
pub const MAX_FAILURES: u32 = 5;

/// Failed sign-ins allowed per client address within [`FAILURE_WINDOW_US`]. Higher than per
/// name: a whole clinic may sign in from behind one address.
pub const MAX_ADDRESS_FAILURES: u32 = 20;

/// The window failed sign-ins are counted in, µs (15 minutes).
pub const FAILURE_WINDOW_US: i64 = 15 * 60 * 1_000_000;

/// Names and addresses tracked by the rate limiter; past this, expired entries are dropped
/// and, if it is still full, the oldest window. Bounds memory under a spray of names.
const MAX_TRACKED: usize = 10_000;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Longest password accepted (argon2 takes any length; this bounds work per request).
pub const MAX_PASSWORD_LEN: usize = 256;

/// The one message for a wrong password, an unknown user and a disabled user alike, so the
/// answer does not tell which names exist.
pub const BAD_LOGIN: &str = "wrong user name or password";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every site, the audit log.
    Admin,
    /// The sites of one region.
    RegionalManager,
    /// One site.
    Clinician,
}

impl Role {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::RegionalManager => "regional_manager",
            Role::Clinician => "clinician",
        }
    }

    /// Parses a stored or typed name (`regional-manager` is accepted too).
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "regional_manager" | "regional-manager" => Some(Role::RegionalManager),
            "clinician" => Some(Role::Clinician),
            _ => None,
        }
    }
}

/// Errors of user administration.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A value a person typed is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed (argon2 refused its parameters; not expected).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The person (or service) behind a request, with the sites they may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name, or `service` for the configured token.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The region or site the role is bound to (empty for an admin).
    pub bound_to: String,
    /// Site ids in scope; `None`: every site (admins).
    pub sites: Option<BTreeSet<String>>,
}

impl Principal {
    /// Whether a site is in scope.
    pub fn allows(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|s| s.contains(site))
    }

    /// The scope as a list for store queries.
    pub fn scope(&self) -> Option<Vec<String>> {
        self.sites.as_ref().map(|s| s.iter().cloned().collect())
    }

    /// The configured service token's principal.
    pub fn service() -> Principal {
        Principal {
            username: "service".into(),
            role: Role::Admin,
            bound_to: String::new(),
            sites: None,
        }
    }

    /// `admin`, `regional manager (central)`, `clinician (austin)`.
    pub fn describe(&self) -> String {
        match self.role {
            Role::Admin => "admin".into(),
            Role::RegionalManager => format!("regional manager ({})", self.bound_to),
            Role::Clinician => format!("clinician ({})", self.bound_to),
        }
    }
}

/// The principal of a stored user, scoped against the configured sites.
pub fn principal(user: &UserRow, sites: &[SiteInfo]) -> Option<Principal> {
    let role = Role::from_name(&user.role)?;
    let in_scope = match role {
        Role::Admin => None,
        Role::RegionalManager => Some(
            sites
                .iter()
                .filter(|s| s.region == user.scope)
                .map(|s| s.id.clone())
                .collect(),
        ),
        Role::Clinician => Some(BTreeSet::from([user.scope.clone()])),
    };
    Some(Principal {
        username: user.username.clone(),
        role,
        bound_to: user.scope.clone(),
        sites: in_scope,
    })
}

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    // aws-lc-rs's system random fails only if the OS has no entropy source at all; a token
    // of zeros would be guessable, so that case must stop the request instead.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the operating system's random source failed");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a secret, as stored.
pub fn digest(secret: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Equal in constant time.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Hashes a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0_u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| AuthError::Hash("no random salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches a PHC string; a malformed string matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so an unknown name costs the same
/// time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never valid").unwrap_or_default())
}

/// Checks a user name: 1-64 of a-z, 0-9, `. _ -`.
pub fn check_username(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "user name {name:?}: use 1-64 of a-z, 0-9, '.', '_', '-'"
        )))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "a password has {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )))
    }
}

/// Checks that a role's region or site exists in the configuration and returns what to store.
pub fn check_binding(
    role: Role,
    region: Option<&str>,
    site: Option<&str>,
    sites: &[SiteInfo],
) -> Result<String, AuthError> {
    match (role, region, site) {
        (Role::Admin, None, None) => Ok(String::new()),
        (Role::Admin, _, _) => Err(AuthError::Invalid(
            "an admin sees every site: give neither --region nor --site".into(),
        )),
        (Role::RegionalManager, Some(r), None) => {
            if sites.iter().any(|s| s.region == r) {
                Ok(r.to_owned())
            } else {
                let known: BTreeSet<&str> = sites.iter().map(|s| s.region.as_str()).collect();
                Err(AuthError::Invalid(format!(
                    "no configured site is in region {r:?}; regions: {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )))
            }
        }
        (Role::RegionalManager, _, _) => Err(AuthError::Invalid(
            "a regional manager needs --region (and no --site)".into(),
        )),
        (Role::Clinician, None, Some(s)) => {
            if sites.iter().any(|c| c.id == s) {
                Ok(s.to_owned())
            } else {
                Err(AuthError::Invalid(format!("site {s:?} is not configured")))
            }
        }
        (Role::Clinician, _, _) => Err(AuthError::Invalid(
            "a clinician needs --site (and no --region)".into(),
        )),
    }
}

/// A user to create, as an admin typed it.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// Login name.
    pub username: &'a str,
    /// Role.
    pub role: Role,
    /// A regional manager's region.
    pub region: Option<&'a str>,
    /// A clinician's site.
    pub site: Option<&'a str>,
    /// The password.
    pub password: &'a str,
}

/// Creates a user after checking every value against the configured sites.
pub fn add_user(
    store: &CloudStore,
    sites: &[SiteInfo],
    user: &NewUser<'_>,
    now_us: i64,
) -> Result<(), AuthError> {
    check_username(user.username)?;
    check_password(user.password)?;
    let scope = check_binding(user.role, user.region, user.site, sites)?;
    let hash = hash_password(user.password)?;
    store.create_user(user.username, user.role.name(), &scope, &hash, now_us)?;
    Ok(())
}

/// Issues a new API token for a user and returns it (shown once).
pub fn issue_api_token(
    store: &CloudStore,
    username: &str,
    label: &str,
    now_us: i64,
) -> Result<String, AuthError> {
    let user = store
        .user_by_name(username)?
        .ok_or_else(|| AuthError::Invalid(format!("no user {username:?}")))?;
    if user.disabled {
        return Err(AuthError::Invalid(format!("user {username:?} is disabled")));
    }
    let token = random_token();
    store.create_api_token(&digest(&token), user.id, label, now_us)?;
    Ok(token)
}

/// The outcome of a sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Signed in: the cookie value and the session's CSRF token.
    Ok {
        /// The session cookie's value.
        cookie: String,
        /// The session's CSRF token.
        csrf: String,
    },
    /// Wrong name or password (one message for both).
    Refused,
    /// Too many failures for this name or address; nothing was checked.
    Limited,
}

/// Failed sign-ins per key within a window.
#[derive(Debug, Default)]
struct Limiter {
    /// key → (failures, window start µs)
    entries: HashMap<String, (u32, i64)>,
}

impl Limiter {
    fn limited(&self, key: &str, max: u32, now_us: i64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|(n, start)| now_us - start < FAILURE_WINDOW_US && *n >= max)
    }

    fn fail(&mut self, key: &str, now_us: i64) {
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(key) {
            self.entries
                .retain(|_, (_, start)| now_us - *start < FAILURE_WINDOW_US);
            if self.entries.len() >= MAX_TRACKED
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, start))| *start)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let e = self.entries.entry(key.to_owned()).or_insert((0, now_us));
        if now_us - e.1 >= FAILURE_WINDOW_US {
            *e = (0, now_us);
        }
        e.0 += 1;
    }

    fn clear(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// The authentication service the HTTP handlers share.
#[derive(Debug)]
pub struct Auth {
    store: Arc<CloudStore>,
    sites: Vec<SiteInfo>,
    /// SHA-256 of the configured service token; `None` when it is empty.
    service_digest: Option<Vec<u8>>,
    limiter: Mutex<Limiter>,
}

impl Auth {
    /// The service for a store, the configured sites and the configured service token.
    pub fn new(store: Arc<CloudStore>, sites: Vec<SiteInfo>, service_token: &str) -> Auth {
        Auth {
            store,
            sites,
            service_digest: (!service_token.is_empty()).then(|| digest(service_token)),
            limiter: Mutex::new(Limiter::default()),
        }
    }

    /// The configured sites.
    pub fn sites(&self) -> &[SiteInfo] {
        &self.sites
    }

    /// The principal of a bearer token: the service token or a user's API token.
    /// Blocking (a database read).
    pub fn bearer(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let d = digest(token);
        if self.service_digest.as_ref().is_some_and(|s| same(s, &d)) {
            return Ok(Some(Principal::service()));
        }
        Ok(self
            .store
            .api_token_user(&d)?
            .filter(|u| !u.disabled)
            .and_then(|u| principal(&u, &self.sites)))
    }

    /// Checks a name and password and opens a session. Blocking (argon2 and the database).
    pub fn login(
        &self,
        username: &str,
        password: &str,
        ip: &str,
        now_us: i64,
    ) -> Result<Login, StoreError> {
        let user_key = format!("user:{}", username.to_lowercase());
        let ip_key = format!("ip:{ip}");
        {
            let limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            if limiter.limited(&user_key, MAX_FAILURES, now_us)
                || limiter.limited(&ip_key, MAX_ADDRESS_FAILURES, now_us)
            {
                return Ok(Login::Limited);
            }
        }
        let user = if check_username(username).is_ok() && password.len() <= MAX_PASSWORD_LEN {
            self.store.user_by_name(username)?
        } else {
            None
        };
        let ok = match &user {
            Some(u) => verify_password(password, &u.password_hash) && !u.disabled,
            None => {
                let _ = verify_password(password, decoy_hash());
                false
            }
        };
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let Some(user) = user.filter(|_| ok) else {
            limiter.fail(&user_key, now_us);
            limiter.fail(&ip_key, now_us);
            return Ok(Login::Refused);
        };
        limiter.clear(&user_key);
        drop(limiter);
        let cookie = random_token();
        let csrf = random_token();
        self.store
            .create_web_session(&digest(&cookie), user.id, &csrf, now_us)?;
        Ok(Login::Ok { cookie, csrf })
    }

    /// The principal and CSRF token of a session cookie, if the session is live; an expired
    /// session is deleted. Blocking.
    pub fn session(
        &self,
        cookie: &str,
        now_us: i64,
    ) -> Result<Option<(Principal, String)>, StoreError> {
        let d = digest(cookie);
        let Some((session, user)) = self.store.web_session(&d)? else {
            return Ok(None);
        };
        if user.disabled
            || now_us - session.last_seen_us > IDLE_TIMEOUT_US
            || now_us - session.created_us > MAX_SESSION_US
        {
            self.store.delete_web_session(&d)?;
            return Ok(None);
        }
        if now_us - session.last_seen_us > TOUCH_EVERY_US {
            self.store.touch_web_session(&d, now_us)?;
        }
        Ok(principal(&user, &self.sites).map(|p| (p, session.csrf)))
    }

    /// Ends a session. Blocking.
    pub fn logout(&self, cookie: &str) -> Result<(), StoreError> {
        self.store.delete_web_session(&digest(cookie))
    }

    /// Records a read of patient data. Blocking. A failure is logged, and the caller refuses
    /// the read: data is not shown without its audit entry.
    pub fn audit(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        ip: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.store
            .audit(&AuditRow::cloud(now_us, &who.username, action, target, ip))
            .inspect_err(|e| tracing::error!(error = %e, "cannot write the audit log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<SiteInfo> {
        let site = |id: &str, region: &str| SiteInfo {
            id: id.into(),
            name: id.into(),
            region: region.into(),
            rooms: vec!["1".into()],
        };
        vec![
            site("austin", "central"),
            site("dallas", "central"),
            site("florida", "southeast"),
        ]
    }

    fn user(role: &str, scope: &str) -> UserRow {
        UserRow {
            id: 1,
            username: "u".into(),
            role: role.into(),
            scope: scope.into(),
            password_hash: String::new(),
            disabled: false,
            created_us: 0,
        }
    }

    #[test]
    fn scope_by_role() {
        let cases = [
            (
                "admin",
                "",
                vec!["austin", "dallas", "florida", "elsewhere"],
                vec![],
            ),
            (
                "regional_manager",
                "central",
                vec!["austin", "dallas"],
                vec!["florida"],
            ),
            (
                "regional_manager",
                "nowhere",
                vec![],
                vec!["austin", "florida"],
            ),
            (
                "clinician",
                "florida",
                vec!["florida"],
                vec!["austin", "dallas"],
            ),
        ];
        for (role, scope, allowed, refused) in cases {
            let p = principal(&user(role, scope), &sites()).unwrap();
            for s in allowed {
                assert!(p.allows(s), "{role} {scope} should see {s}");
            }
            for s in refused {
                assert!(!p.allows(s), "{role} {scope} must not see {s}");
            }
        }
        assert!(principal(&user("root", ""), &sites()).is_none());
    }

    #[test]
    fn bindings_are_checked_against_the_configuration() {
        let s = sites();
        assert_eq!(check_binding(Role::Admin, None, None, &s).unwrap(), "");
        assert!(check_binding(Role::Admin, Some("central"), None, &s).is_err());
        assert_eq!(
            check_binding(Role::RegionalManager, Some("central"), None, &s).unwrap(),
            "central"
        );
        assert!(check_binding(Role::RegionalManager, Some("west"), None, &s).is_err());
        assert!(check_binding(Role::RegionalManager, None, Some("austin"), &s).is_err());
        assert_eq!(
            check_binding(Role::Clinician, None, Some("austin"), &s).unwrap(),
            "austin"
        );
        assert!(check_binding(Role::Clinician, None, Some("paris"), &s).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("anything", "not a phc string"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn limiter_counts_failures_in_a_window() {
        let mut l = Limiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(!l.limited("k", MAX_FAILURES, 0));
            l.fail("k", 0);
        }
        assert!(l.limited("k", MAX_FAILURES, 1));
        assert!(!l.limited("k", MAX_FAILURES + 1, 1), "a higher limit");
        assert!(
            !l.limited("k", MAX_FAILURES, FAILURE_WINDOW_US + 1),
            "the window passes"
        );
        assert!(!l.limited("other", MAX_FAILURES, 1));
        l.clear("k");
        assert!(!l.limited("k", MAX_FAILURES, 1));
    }

    fn auth_with_user() -> (tempfile::TempDir, Arc<CloudStore>, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CloudStore::open(&dir.path().join("c.db")).unwrap());
        let user = NewUser {
            username: "maria",
            role: Role::RegionalManager,
            region: Some("central"),
            site: None,
            password: "a long enough password",
        };
        add_user(&store, &sites(), &user, 0).unwrap();
        let auth = Auth::new(store.clone(), sites(), "");
        (dir, store, auth)
    }

    #[test]
    fn sessions_end_when_idle_too_long_or_too_old_or_disabled() {
        let (_dir, store, auth) = auth_with_user();
        let t0 = 1_000_000_000_000;
        let Login::Ok { cookie, csrf } = auth
            .login("maria", "a long enough password", "ip", t0)
            .unwrap()
        else {
            panic!("sign-in refused");
        };
        let (p, token) = auth
            .session(&cookie, t0 + 1)
            .unwrap()
            .expect("live session");
        assert_eq!((p.username.as_str(), token), ("maria", csrf));
        assert_eq!(
            p.scope(),
            Some(vec!["austin".to_owned(), "dallas".to_owned()])
        );
        // Used every 20 minutes, the session lives on past the idle timeout…
        let mut t = t0;
        for _ in 0..5 {
            t += 20 * 60 * 1_000_000;
            assert!(auth.session(&cookie, t).unwrap().is_some(), "at {t}");
        }
        // …until idle for longer than the timeout; then it is gone for good.
        assert!(
            auth.session(&cookie, t + IDLE_TIMEOUT_US + 1)
                .unwrap()
                .is_none()
        );
        assert!(
            auth.session(&cookie, t + 1).unwrap().is_none(),
            "deleted, not just refused"
        );

        let Login::Ok { cookie, .. } = auth
            .login("maria", "a long enough password", "ip", t0)
            .unwrap()
        else {
            panic!("sign-in refused");
        };
        let mut t = t0;
        while t < t0 + MAX_SESSION_US {
            assert!(auth.session(&cookie, t).unwrap().is_some());
            t += 25 * 60 * 1_000_000;
        }
        assert!(
            auth.session(&cookie, t0 + MAX_SESSION_US + 1)
                .unwrap()
                .is_none(),
            "too old"
        );

        let Login::Ok { cookie, .. } = auth
            .login("maria", "a long enough password", "ip", t0)
            .unwrap()
        else {
            panic!("sign-in refused");
        };
        assert!(store.set_disabled("maria", true).unwrap());
        assert!(auth.session(&cookie, t0 + 1).unwrap().is_none(), "disabled");
        assert_eq!(
            auth.login("maria", "a long enough password", "ip", t0)
                .unwrap(),
            Login::Refused
        );
        assert!(auth.session("not a cookie", t0).unwrap().is_none());
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_username("maria.alvarez").is_ok());
        assert!(check_username("Maria").is_err());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough pass").is_ok());
        assert_eq!(random_token().len(), 64);
        assert_ne!(random_token(), random_token());
    }
}
