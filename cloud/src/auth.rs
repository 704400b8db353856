//! Who is asking and what they may see: roles and scope, password hashing (argon2id), browser
//! sessions, per-user API tokens, sign-in rate limiting and the audit log.
//!
//! - An **admin** sees every site; a **regional manager** the configured sites of their region;
//!   a **clinician** one site. [`Principal::scope`] is a [`Scope`], resolved against
//!   `cloud.toml` at each request, so moving a site to another region takes effect on restart.
//!   A `Scope` is made only here, from a principal; every store read of patient data takes
//!   one, and none has a default.
//! - The `api_token` of `cloud.toml` is a service token with an admin's scope.
//! - Users' API tokens expire ([`DEFAULT_TOKEN_DAYS`] unless chosen, at most
//!   [`MAX_TOKEN_DAYS`]), record their last use, can be revoked by their owner, are all revoked
//!   when the password changes, and are made on the account page only after the password is
//!   typed again ([`Auth::mint_token`]).
//! - Sign-in (and typing the password again) is limited per (name, client): [`FREE_ATTEMPTS`],
//!   then a delay doubling from [`FIRST_DELAY_US`] to [`MAX_DELAY_US`]; and per name
//!   ([`MAX_FAILURES`]) and per client ([`MAX_ADDRESS_FAILURES`]) over
//!   [`FAILURE_WINDOW_US`]. Each attempt is reserved before argon2 runs, so parallel guesses
//!   cannot slip past a count, and a success forgives only the failures that were counted
//!   before it was reserved. The counts are in the database: every instance of the cloud
//!   counts the same attempts.
//! - Secrets are random 32 bytes from aws-lc-rs, shown once (cookie, printed token) and stored
//!   as SHA-256 digests. Passwords are argon2id PHC strings with the crate's default cost.
//!
//! This module holds policy; storage is [`CloudStore`]'s, HTTP is [`crate::web`]'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::config::SiteInfo;
use crate::store::{ApiTokenRow, AuditRow, CloudStore, LimitRow, StoreError, UserRow};

/// A browser session ends after this long without a request, µs (30 minutes, the usual limit
/// for an unattended screen showing patient data).
pub const IDLE_TIMEOUT_US: i64 = 30 * 60 * 1_000_000;

/// A browser session ends this long after sign-in whatever the activity, µs (a working day).
pub const MAX_SESSION_US: i64 = 12 * 3600 * 1_000_000;

/// How often a session's last-seen time is written, µs: often enough for the idle timeout to
/// be accurate to a minute, rarely enough that page views do not each cost a disk sync.
pub const TOUCH_EVERY_US: i64 = 60 * 1_000_000;

/// Sign-in attempts one client may make for one name without waiting. Past these, each
/// further attempt for that (name, client) waits [`FIRST_DELAY_US`], doubling with every
/// failure up to [`MAX_DELAY_US`]: a person who mistypes a few times is not slowed down, a
/// script guessing from one address gets a handful of tries an hour.
pub const FREE_ATTEMPTS: u32 = 3;

/// The wait after the first failure past [`FREE_ATTEMPTS`], µs: long enough to notice,
/// short enough for a person who is sure of their password this time.
pub const FIRST_DELAY_US: i64 = 5_000_000;

/// The longest wait between two attempts of one (name, client), µs (15 minutes). With the
/// doubling from [`FIRST_DELAY_US`], one client gets at most about a dozen evaluated attempts
/// per [`FAILURE_WINDOW_US`], well under [`MAX_FAILURES`], so that a flood from one address
/// never reaches the name's ceiling and never locks the real user out from elsewhere.
pub const MAX_DELAY_US: i64 = 15 * 60 * 1_000_000;

/// How long a (name, client) pair's failures are remembered after its last failure, µs (an
/// hour): longer than [`MAX_DELAY_US`], so a script that waits out each delay never starts
/// afresh with free attempts; it gets one guess per [`MAX_DELAY_US`].
pub const PAIR_MEMORY_US: i64 = 60 * 60 * 1_000_000;

/// Failed sign-ins allowed per user name, over all clients, within [`FAILURE_WINDOW_US`];
/// past this, attempts for that name are refused without checking until the window passes.
/// The ceiling that bounds guessing spread over many addresses (at most 20 guesses per 15
/// minutes per account).
pub const MAX_FAILURES: u32 = 20;

/// Failed sign-ins allowed per client address, over all names, within
/// [`FAILURE_WINDOW_US`]: one address spraying many names. As high as the name ceiling: a
/// whole clinic may sign in from behind one address.
pub const MAX_ADDRESS_FAILURES: u32 = 20;

/// The window failed sign-ins are counted in, µs (15 minutes).
pub const FAILURE_WINDOW_US: i64 = 15 * 60 * 1_000_000;

/// A reservation older than this no longer counts as in flight, µs: the instance that made it
/// died before deciding (checking a password takes well under a second).
const STALE_RESERVATION_US: i64 = 60 * 1_000_000;

/// An API token's lifetime when its maker names none, days.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;

/// The longest lifetime a token may be given, days: a forgotten token in a script stops
/// working within a year.
pub const MAX_TOKEN_DAYS: u32 = 365;

/// Longest token label kept, characters.
pub const MAX_TOKEN_LABEL: usize = 64;

/// Microseconds in a day.
const DAY_US: i64 = 86_400 * 1_000_000;

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

/// The sites a request may see: every site (admins, the service token) or a set of sites
/// (a regional manager's region, a clinician's site; possibly empty).
///
/// Made only here, from a [`Principal`]: there is no `Default`, no public constructor and no
/// "none means every site". Every store read of patient data takes one, so a query that forgets
/// its scope does not compile, and one cannot be conjured up in a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Reach);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    All,
    Sites(BTreeSet<String>),
}

/// What a [`Scope`] covers, for the store to turn into SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeSites<'a> {
    /// Every site.
    All,
    /// Only these sites (none when empty).
    Only(&'a BTreeSet<String>),
}

impl Scope {
    /// Whether a site is in scope.
    pub fn allows(&self, site: &str) -> bool {
        match &self.0 {
            Reach::All => true,
            Reach::Sites(s) => s.contains(site),
        }
    }

    /// The sites covered.
    pub fn sites(&self) -> ScopeSites<'_> {
        match &self.0 {
            Reach::All => ScopeSites::All,
            Reach::Sites(s) => ScopeSites::Only(s),
        }
    }

    /// Every site, for tests of the store.
    #[cfg(test)]
    pub(crate) fn all_for_tests() -> Scope {
        Scope(Reach::All)
    }
}

/// The person (or service) behind a request, with the sites they may see. Made only from a
/// stored user ([`principal`], as sessions and tokens resolve them) or for the configured
/// service token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name, or `service` for the configured token.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The region or site the role is bound to (empty for an admin).
    pub bound_to: String,
    scope: Scope,
}

impl Principal {
    /// Whether the sites' management is theirs to see — the fleet (appliances, their
    /// certificates and health) and the controlled-substance ledger: admins (every site) and
    /// regional managers (their region's); a clinician runs rooms.
    pub fn manages_sites(&self) -> bool {
        matches!(self.role, Role::Admin | Role::RegionalManager)
    }

    /// Whether a site is in scope.
    pub fn allows(&self, site: &str) -> bool {
        self.scope.allows(site)
    }

    /// The sites this principal may see, for store queries.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The configured service token's principal.
    fn service() -> Principal {
        Principal {
            username: "service".into(),
            role: Role::Admin,
            bound_to: String::new(),
            scope: Scope(Reach::All),
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
    let reach = match role {
        Role::Admin => Reach::All,
        Role::RegionalManager => Reach::Sites(
            sites
                .iter()
                .filter(|s| s.region == user.scope)
                .map(|s| s.id.clone())
                .collect(),
        ),
        Role::Clinician => Reach::Sites(BTreeSet::from([user.scope.clone()])),
    };
    Some(Principal {
        username: user.username.clone(),
        role,
        bound_to: user.scope.clone(),
        scope: Scope(reach),
    })
}

/// Random tokens, the SHA-256 stored of a secret, and constant-time comparison: one
/// implementation for both servers.
pub use vigil_web::secret::{random_token, same, sha256 as digest};

/// Hashes a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt =
        vigil_web::secret::random_salt().ok_or_else(|| AuthError::Hash("no random salt".into()))?;
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

/// Issues a new API token for a user, valid for `lifetime_days` (1 to [`MAX_TOKEN_DAYS`]),
/// and returns it (shown once). For the CLI (whoever runs it holds the database) and, after
/// the password was checked again, the account page ([`Auth::mint_token`]).
pub fn issue_api_token(
    store: &CloudStore,
    username: &str,
    label: &str,
    lifetime_days: u32,
    now_us: i64,
) -> Result<String, AuthError> {
    if !(1..=MAX_TOKEN_DAYS).contains(&lifetime_days) {
        return Err(AuthError::Invalid(format!(
            "a token lives 1 to {MAX_TOKEN_DAYS} days, not {lifetime_days}"
        )));
    }
    let user = store
        .user_by_name(username)?
        .ok_or_else(|| AuthError::Invalid(format!("no user {username:?}")))?;
    if user.disabled {
        return Err(AuthError::Invalid(format!("user {username:?} is disabled")));
    }
    let label: String = label.trim().chars().take(MAX_TOKEN_LABEL).collect();
    let token = random_token();
    let expires_us = now_us.saturating_add(i64::from(lifetime_days) * DAY_US);
    store.create_api_token(&digest(&token), user.id, &label, now_us, expires_us)?;
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
    /// Too many failures for this name, address or pair; nothing was checked.
    Limited {
        /// How long until an attempt may be checked again, seconds (at least 1).
        retry_after_s: u64,
    },
}

/// The outcome of an action that needs the password typed again (a new API token, a new
/// password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reauth<T> {
    /// The password was right and the action done.
    Done(T),
    /// The password was wrong; nothing was done.
    Refused,
    /// Too many failures; nothing was checked or done.
    Limited {
        /// Seconds until an attempt may be checked again.
        retry_after_s: u64,
    },
}

/// Failures and attempts in flight under one key of the limiter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    /// Evaluated attempts that failed within the window.
    failures: u32,
    /// Attempts reserved and being checked right now.
    in_flight: u32,
    /// The first failure of the window, µs.
    window_start_us: i64,
    /// The latest failure, µs.
    last_failure_us: i64,
    /// The latest reservation, µs.
    reserved_us: i64,
}

/// What the limiter counts under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A (lower-cased) user name, over all clients.
    Name(String),
    /// A client address, over all names.
    Client(String),
    /// One name from one client.
    Pair(String, String),
}

/// An attempt the limiter let through and counts as in flight until it is finished.
#[derive(Debug)]
struct Ticket {
    name: String,
    client: String,
    /// The pair's failures when the attempt was reserved: a success forgives those, never
    /// failures that concurrent attempts recorded meanwhile.
    pair_failures: u32,
}

/// The sign-in rate limiter: per (name, client) a growing delay, per name and per client a
/// ceiling. An attempt is reserved *before* the password is checked, so parallel attempts
/// cannot all pass a check that each of them alone would have passed. The counts live in the
/// database ([`CloudStore::update_limits`]), so every cloud instance counts the same
/// attempts; a limiter holds the three keys of one attempt while their rows are locked.
#[derive(Debug, Default)]
struct Limiter {
    entries: HashMap<Key, Count>,
}

/// The wait imposed on a pair after `failures` failures, µs (0 while within
/// [`FREE_ATTEMPTS`]).
fn pair_delay_us(failures: u32) -> i64 {
    if failures < FREE_ATTEMPTS {
        return 0;
    }
    let doublings = (failures - FREE_ATTEMPTS).min(30);
    FIRST_DELAY_US
        .saturating_mul(1_i64 << doublings)
        .min(MAX_DELAY_US)
}

fn retry_s(wait_us: i64) -> u64 {
    u64::try_from(wait_us.max(1).saturating_add(999_999) / 1_000_000).unwrap_or(1)
}

impl Limiter {
    /// The entry of `key` with an expired window reset; created if absent.
    fn entry(&mut self, key: Key, now_us: i64) -> &mut Count {
        let pair = matches!(key, Key::Pair(..));
        let c = self.entries.entry(key).or_default();
        if c.in_flight > 0 && now_us - c.reserved_us >= STALE_RESERVATION_US {
            c.in_flight = 0;
        }
        // A pair's failures are forgotten a while after the last one, so a patient script
        // does not start afresh while it keeps failing; a name's or client's a window after
        // the first, so the ceiling is per window.
        let expired = if pair {
            now_us - c.last_failure_us >= PAIR_MEMORY_US
        } else {
            now_us - c.window_start_us >= FAILURE_WINDOW_US
        };
        if c.failures > 0 && expired {
            c.failures = 0;
        }
        c
    }

    /// Reserves an attempt for `name` from `client`, or says how long to wait, µs.
    fn reserve(&mut self, name: &str, client: &str, now_us: i64) -> Result<Ticket, i64> {
        let ceilings = [
            (Key::Name(name.to_owned()), MAX_FAILURES),
            (Key::Client(client.to_owned()), MAX_ADDRESS_FAILURES),
        ];
        for (key, max) in &ceilings {
            let c = *self.entry(key.clone(), now_us);
            if c.failures + c.in_flight >= *max {
                return Err(c.window_start_us + FAILURE_WINDOW_US - now_us);
            }
        }
        let pair_key = Key::Pair(name.to_owned(), client.to_owned());
        let pair = *self.entry(pair_key.clone(), now_us);
        let attempts = pair.failures + pair.in_flight;
        if attempts >= FREE_ATTEMPTS {
            // Past the free attempts, one at a time and only after the delay.
            if pair.in_flight > 0 {
                return Err(pair_delay_us(attempts));
            }
            let wait = pair.last_failure_us + pair_delay_us(pair.failures) - now_us;
            if wait > 0 {
                return Err(wait);
            }
        }
        for key in ceilings.into_iter().map(|(k, _)| k).chain([pair_key]) {
            let c = self.entry(key, now_us);
            c.in_flight += 1;
            c.reserved_us = now_us;
        }
        Ok(Ticket {
            name: name.to_owned(),
            client: client.to_owned(),
            pair_failures: pair.failures,
        })
    }

    /// Ends an attempt: `Some(true)` succeeded, `Some(false)` failed, `None` was not decided
    /// (the store failed), which only releases the reservation.
    fn finish(&mut self, ticket: &Ticket, outcome: Option<bool>, now_us: i64) {
        let keys = [
            Key::Name(ticket.name.clone()),
            Key::Client(ticket.client.clone()),
            Key::Pair(ticket.name.clone(), ticket.client.clone()),
        ];
        for key in keys {
            let pair = matches!(key, Key::Pair(..));
            let c = self.entry(key, now_us);
            c.in_flight = c.in_flight.saturating_sub(1);
            match outcome {
                Some(false) => {
                    if c.failures == 0 {
                        c.window_start_us = now_us;
                    }
                    c.failures += 1;
                    c.last_failure_us = now_us;
                }
                Some(true) if pair => c.failures = c.failures.saturating_sub(ticket.pair_failures),
                _ => {}
            }
        }
    }
}

impl Key {
    /// The three keys an attempt of `name` from `client` counts under.
    fn of(name: &str, client: &str) -> [Key; 3] {
        [
            Key::Name(name.to_owned()),
            Key::Client(client.to_owned()),
            Key::Pair(name.to_owned(), client.to_owned()),
        ]
    }

    /// The key's row in the database (a newline cannot be in a name or an address).
    fn stored(&self) -> String {
        match self {
            Key::Name(n) => format!("name\n{n}"),
            Key::Client(c) => format!("client\n{c}"),
            Key::Pair(n, c) => format!("pair\n{n}\n{c}"),
        }
    }
}

impl Limiter {
    /// The limiter over the stored rows of `keys`.
    fn load(keys: &[Key], rows: &BTreeMap<String, LimitRow>) -> Limiter {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let entries = keys
            .iter()
            .filter_map(|k| {
                let r = rows.get(&k.stored())?;
                Some((
                    k.clone(),
                    Count {
                        failures: count(r.failures),
                        in_flight: count(r.in_flight),
                        window_start_us: r.window_start_us,
                        last_failure_us: r.last_failure_us,
                        reserved_us: r.reserved_us,
                    },
                ))
            })
            .collect();
        Limiter { entries }
    }

    /// Writes the counts back into the rows.
    fn store(&self, rows: &mut BTreeMap<String, LimitRow>) {
        for (k, c) in &self.entries {
            rows.insert(
                k.stored(),
                LimitRow {
                    failures: c.failures.into(),
                    in_flight: c.in_flight.into(),
                    window_start_us: c.window_start_us,
                    last_failure_us: c.last_failure_us,
                    reserved_us: c.reserved_us,
                },
            );
        }
    }
}

/// A reserved attempt that releases its reservation if dropped before it is finished (an
/// error or a panic between reserving and deciding).
struct Attempt<'a> {
    auth: &'a Auth,
    ticket: Option<Ticket>,
}

impl Attempt<'_> {
    fn finish(mut self, ok: bool, now_us: i64) -> Result<(), StoreError> {
        match self.ticket.take() {
            Some(t) => self.auth.finish_attempt(&t, Some(ok), now_us),
            None => Ok(()),
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take()
            && let Err(e) = self.auth.finish_attempt(&t, None, crate::clock::now_us())
        {
            // Left in flight, the reservation lapses after STALE_RESERVATION_US.
            tracing::warn!(error = %e, "cannot release a sign-in reservation");
        }
    }
}

/// The authentication service the HTTP handlers share.
#[derive(Debug)]
pub struct Auth {
    store: Arc<CloudStore>,
    sites: Vec<SiteInfo>,
    /// SHA-256 of the configured service token; `None` when it is empty.
    service_digest: Option<Vec<u8>>,
}

impl Auth {
    /// The service for a store, the configured sites and the configured service token.
    pub fn new(store: Arc<CloudStore>, sites: Vec<SiteInfo>, service_token: &str) -> Auth {
        Auth {
            store,
            sites,
            service_digest: (!service_token.is_empty()).then(|| digest(service_token)),
        }
    }

    /// The configured sites.
    pub fn sites(&self) -> &[SiteInfo] {
        &self.sites
    }

    /// The principal of a bearer token: the service token, or a user's API token that is
    /// neither expired, revoked nor its user disabled. Blocking (a database read, and a write
    /// at most once a minute per token to record its use).
    pub fn bearer(&self, token: &str, now_us: i64) -> Result<Option<Principal>, StoreError> {
        let d = digest(token);
        if self.service_digest.as_ref().is_some_and(|s| same(s, &d)) {
            return Ok(Some(Principal::service()));
        }
        let Some((row, user)) = self.store.api_token(&d)? else {
            return Ok(None);
        };
        if user.disabled || now_us >= row.expires_us {
            return Ok(None);
        }
        if row.last_used_us.is_none_or(|t| now_us - t > TOUCH_EVERY_US) {
            self.store.touch_api_token(row.id, now_us)?;
        }
        Ok(principal(&user, &self.sites))
    }

    /// Reserves an attempt of `name` from `client`, or says how many seconds to wait. The
    /// counts are in the database, shared by every cloud instance.
    fn attempt(
        &self,
        name: &str,
        client: &str,
        now_us: i64,
    ) -> Result<Result<Attempt<'_>, u64>, StoreError> {
        let name = name.to_lowercase();
        let keys = Key::of(&name, client);
        let stored: Vec<String> = keys.iter().map(Key::stored).collect();
        let reserved = self.store.update_limits(&stored, now_us, |rows| {
            let mut limiter = Limiter::load(&keys, rows);
            let reserved = limiter.reserve(&name, client, now_us);
            limiter.store(rows);
            reserved
        })?;
        Ok(reserved.map_err(retry_s).map(|ticket| Attempt {
            auth: self,
            ticket: Some(ticket),
        }))
    }

    /// Ends a reserved attempt in the database's counts.
    fn finish_attempt(
        &self,
        ticket: &Ticket,
        outcome: Option<bool>,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let keys = Key::of(&ticket.name, &ticket.client);
        let stored: Vec<String> = keys.iter().map(Key::stored).collect();
        self.store.update_limits(&stored, now_us, |rows| {
            let mut limiter = Limiter::load(&keys, rows);
            limiter.finish(ticket, outcome, now_us);
            limiter.store(rows);
        })
    }

    /// The user named, if the password is theirs and they are enabled. Runs argon2 against a
    /// decoy hash for unknown names, so that they cost the same time.
    fn check(&self, username: &str, password: &str) -> Result<Option<UserRow>, StoreError> {
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
        Ok(user.filter(|_| ok))
    }

    /// Checks a name and password from `client` (its address) and opens a session.
    /// Blocking (argon2 and the database).
    pub fn login(
        &self,
        username: &str,
        password: &str,
        client: &str,
        now_us: i64,
    ) -> Result<Login, StoreError> {
        let attempt = match self.attempt(username, client, now_us)? {
            Ok(a) => a,
            Err(retry_after_s) => return Ok(Login::Limited { retry_after_s }),
        };
        let user = self.check(username, password)?;
        attempt.finish(user.is_some(), now_us)?;
        let Some(user) = user else {
            return Ok(Login::Refused);
        };
        let cookie = random_token();
        let csrf = random_token();
        self.store
            .create_web_session(&digest(&cookie), user.id, &csrf, now_us)?;
        Ok(Login::Ok { cookie, csrf })
    }

    /// Checks a signed-in user's password again, under the same limits as sign-in, then runs
    /// `action`. Blocking.
    fn reauthenticate<T>(
        &self,
        who: &Principal,
        password: &str,
        client: &str,
        now_us: i64,
        action: impl FnOnce(&UserRow) -> Result<T, AuthError>,
    ) -> Result<Reauth<T>, AuthError> {
        let attempt = match self.attempt(&who.username, client, now_us)? {
            Ok(a) => a,
            Err(retry_after_s) => return Ok(Reauth::Limited { retry_after_s }),
        };
        let user = self.check(&who.username, password)?;
        attempt.finish(user.is_some(), now_us)?;
        match user {
            Some(u) => action(&u).map(Reauth::Done),
            None => Ok(Reauth::Refused),
        }
    }

    /// Issues an API token for a signed-in user once they typed their password again.
    /// Blocking.
    pub fn mint_token(
        &self,
        who: &Principal,
        password: &str,
        label: &str,
        lifetime_days: u32,
        client: &str,
        now_us: i64,
    ) -> Result<Reauth<String>, AuthError> {
        if !(1..=MAX_TOKEN_DAYS).contains(&lifetime_days) {
            return Err(AuthError::Invalid(format!(
                "a token lives 1 to {MAX_TOKEN_DAYS} days, not {lifetime_days}"
            )));
        }
        self.reauthenticate(who, password, client, now_us, |u| {
            issue_api_token(&self.store, &u.username, label, lifetime_days, now_us)
        })
    }

    /// Changes a signed-in user's password once they typed the current one: every browser
    /// session of theirs ends and every API token is revoked. Blocking.
    pub fn change_password(
        &self,
        who: &Principal,
        current: &str,
        new: &str,
        client: &str,
        now_us: i64,
    ) -> Result<Reauth<()>, AuthError> {
        check_password(new)?;
        self.reauthenticate(who, current, client, now_us, |u| {
            let hash = hash_password(new)?;
            self.store.set_password(&u.username, &hash)?;
            Ok(())
        })
    }

    /// The signed-in user's API tokens, newest first. Blocking.
    pub fn tokens(&self, who: &Principal) -> Result<Vec<ApiTokenRow>, StoreError> {
        match self.store.user_by_name(&who.username)? {
            Some(u) => self.store.api_tokens(u.id),
            None => Ok(Vec::new()),
        }
    }

    /// Revokes one of the signed-in user's own API tokens; `false` if they have none with
    /// that id. Blocking.
    pub fn revoke_token(&self, who: &Principal, token_id: i64) -> Result<bool, StoreError> {
        match self.store.user_by_name(&who.username)? {
            Some(u) => self.store.revoke_api_token(u.id, token_id),
            None => Ok(false),
        }
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
            tz: None,
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

    /// Reserves and finishes one attempt; `None` when the limiter refused it.
    fn attempt(l: &mut Limiter, name: &str, client: &str, ok: bool, now: i64) -> Option<()> {
        let t = l.reserve(name, client, now).ok()?;
        l.finish(&t, Some(ok), now);
        Some(())
    }

    /// Two instances on one PostgreSQL database count the same attempts: failures through one
    /// slow down the other, and a reservation an instance never finished (it died) lapses.
    #[test]
    fn every_instance_counts_the_same_sign_in_attempts() {
        let url = crate::pg_cluster::cluster().new_database();
        let open = || Arc::new(CloudStore::open_postgres(&url, None).unwrap());
        let (a, b) = (
            Auth::new(open(), sites(), "service-token-0123456789abcdef"),
            Auth::new(open(), sites(), "service-token-0123456789abcdef"),
        );
        let hash = hash_password("the right password").unwrap();
        a.store.create_user("maria", "admin", "", &hash, 0).unwrap();
        for _ in 0..FREE_ATTEMPTS {
            let login = a.login("maria", "a wrong password", "10.0.0.1", 1).unwrap();
            assert_eq!(login, Login::Refused);
        }
        // Instance b knows: the next try from that client waits.
        let limited = b
            .login("maria", "the right password", "10.0.0.1", 2)
            .unwrap();
        assert!(matches!(limited, Login::Limited { .. }), "{limited:?}");
        // Another client is not slowed down, on either instance.
        let ok = b
            .login("maria", "the right password", "10.0.0.2", 3)
            .unwrap();
        assert!(matches!(ok, Login::Ok { .. }), "{ok:?}");

        // An instance that died mid-check leaves its reservation: it holds the pair's place
        // (past the free attempts, one at a time) until it lapses.
        let later = 10 * PAIR_MEMORY_US;
        for _ in 0..FREE_ATTEMPTS - 1 {
            let login = a.login("jo", "wrong password!", "10.0.0.9", later).unwrap();
            assert_eq!(login, Login::Refused);
        }
        std::mem::forget(a.attempt("jo", "10.0.0.9", later).unwrap().unwrap());
        let held = b
            .login("jo", "wrong password!", "10.0.0.9", later + 1)
            .unwrap();
        assert!(matches!(held, Login::Limited { .. }), "{held:?}");
        let lapsed = b
            .login(
                "jo",
                "wrong password!",
                "10.0.0.9",
                later + STALE_RESERVATION_US + FIRST_DELAY_US,
            )
            .unwrap();
        assert_eq!(lapsed, Login::Refused);
    }

    #[test]
    fn a_pair_gets_free_attempts_then_a_growing_delay() {
        let mut l = Limiter::default();
        for _ in 0..FREE_ATTEMPTS {
            assert!(attempt(&mut l, "maria", "a", false, 0).is_some());
        }
        // Past the free attempts: wait the first delay, then twice as long, and so on.
        assert_eq!(l.reserve("maria", "a", 1).unwrap_err(), FIRST_DELAY_US - 1);
        let mut t = FIRST_DELAY_US;
        for k in 0..4 {
            assert!(attempt(&mut l, "maria", "a", false, t).is_some(), "at {k}");
            let delay = FIRST_DELAY_US << (k + 1);
            assert!(l.reserve("maria", "a", t + delay - 1).is_err(), "at {k}");
            t += delay;
        }
        // Another client, or another name from this client, is not slowed down.
        assert!(attempt(&mut l, "maria", "b", true, t).is_some());
        assert!(attempt(&mut l, "jo", "a", false, t).is_some());
        // Long after the last failure, the pair starts afresh.
        let later = t + PAIR_MEMORY_US;
        assert!(attempt(&mut l, "maria", "a", false, later).is_some());
        assert!(attempt(&mut l, "maria", "a", false, later).is_some());
        assert_eq!(pair_delay_us(FREE_ATTEMPTS - 1), 0);
        assert_eq!(pair_delay_us(FREE_ATTEMPTS + 40), MAX_DELAY_US);
    }

    #[test]
    fn parallel_attempts_are_reserved_before_they_are_checked() {
        let mut l = Limiter::default();
        // Sixty attempts at once, none finished: only the free ones get through.
        let tickets: Vec<Ticket> = (0..60)
            .filter_map(|_| l.reserve("maria", "a", 0).ok())
            .collect();
        assert_eq!(tickets.len(), FREE_ATTEMPTS as usize);
        // One of them was right: its success does not forgive the failures the others
        // record, before or after it.
        l.finish(&tickets[0], Some(false), 1);
        l.finish(&tickets[1], Some(true), 1);
        l.finish(&tickets[2], Some(false), 1);
        let pair = l.entries[&Key::Pair("maria".into(), "a".into())];
        assert_eq!((pair.failures, pair.in_flight), (2, 0));
        // An attempt the store failed on only releases its place.
        let t = l.reserve("maria", "a", 2).unwrap();
        l.finish(&t, None, 2);
        let pair = l.entries[&Key::Pair("maria".into(), "a".into())];
        assert_eq!((pair.failures, pair.in_flight), (2, 0));
        // A success forgives the failures that were there when it was reserved.
        let t = l.reserve("maria", "a", 3).unwrap();
        l.finish(&t, Some(true), 3);
        assert_eq!(
            l.entries[&Key::Pair("maria".into(), "a".into())].failures,
            0
        );
        // The name's and the client's failures stay.
        assert_eq!(l.entries[&Key::Name("maria".into())].failures, 2);
        assert_eq!(l.entries[&Key::Client("a".into())].failures, 2);
    }

    #[test]
    fn a_name_and_a_client_have_ceilings_over_every_pair() {
        let mut l = Limiter::default();
        // Guesses for one name from many addresses: the name's ceiling.
        for k in 0..MAX_FAILURES {
            assert!(attempt(&mut l, "maria", &format!("10.0.0.{k}"), false, 0).is_some());
        }
        let wait = l.reserve("maria", "10.9.9.9", 5).unwrap_err();
        assert_eq!(wait, FAILURE_WINDOW_US - 5);
        assert!(l.reserve("maria", "10.9.9.9", FAILURE_WINDOW_US).is_ok());
        // Many names from one address: the address's ceiling.
        let mut l = Limiter::default();
        for k in 0..MAX_ADDRESS_FAILURES {
            assert!(attempt(&mut l, &format!("user{k}"), "a", false, 0).is_some());
        }
        assert!(l.reserve("someone", "a", 1).is_err());
        assert!(l.reserve("someone", "b", 1).is_ok());
    }

    #[test]
    fn one_client_never_reaches_the_names_ceiling() {
        // A script that waits out every delay, for hours, from one address.
        let mut l = Limiter::default();
        let mut t = 0;
        let mut evaluated = 0;
        while t < 6 * 3600 * 1_000_000 {
            match l.reserve("maria", "attacker", t) {
                Ok(ticket) => {
                    l.finish(&ticket, Some(false), t);
                    evaluated += 1;
                }
                Err(wait) => t += wait.max(1),
            }
            // The real user, elsewhere, is never refused.
            assert!(l.reserve("maria", "nurse-station", t).is_ok_and(|tk| {
                l.finish(&tk, None, t);
                true
            }));
        }
        // About a dozen while the delay grows, then one per longest delay.
        let ceiling = 12 + 6 * 3600 * 1_000_000 / MAX_DELAY_US;
        assert!(evaluated <= ceiling, "{evaluated} guesses in six hours");
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
        let central = BTreeSet::from(["austin".to_owned(), "dallas".to_owned()]);
        assert_eq!(p.scope().sites(), ScopeSites::Only(&central));
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
