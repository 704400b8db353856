//! The room screens' part of a site's configuration document: the staff list (who may sign
//! in, with their role and a hash of their PIN) and the infusion limits the screens check
//! orders against, and the integration tokens of the appliances' JSON API (hashes only).
//!
//! The cloud owns site configuration documents ([`crate::app`] creates them); this module
//! adds or replaces one person in one, and the sync server offers the document to the site's
//! appliances when they connect. Appliances verify PINs against the hashes offline, so a room
//! keeps working when the network is down. PINs are hashed with argon2id
//! ([`crate::auth::hash_password`]); the clear PIN is never stored or logged.

use vigil_shared::doc::{DocKind, SiteApiToken, SiteConfigDoc, StaffMember};

use crate::auth::hash_password;
use crate::store::{CloudStore, StoreError};

/// Shortest PIN accepted for a new PIN. Six digits (a million choices) with the appliance's
/// growing delay after wrong PINs keeps guessing at months, while a nurse still types it with
/// a glove on. PINs set before this rule stay valid until changed.
pub const MIN_PIN_LEN: usize = 6;

/// Longest PIN accepted.
pub const MAX_PIN_LEN: usize = 12;

/// Roles a staff member may have at the room screen.
pub const ROLES: [&str; 3] = ["nurse", "clinician", "front_desk"];

/// Errors changing the staff list.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// The site has no configuration document (not in `cloud.toml`, or the cloud never ran).
    #[error(
        "site {0} has no configuration document; list it in cloud.toml and start the cloud once"
    )]
    NoSite(String),
    /// The PIN is not 6-12 digits.
    #[error("the PIN must be {MIN_PIN_LEN}-{MAX_PIN_LEN} digits")]
    Pin,
    /// The role is not one of [`ROLES`].
    #[error("role {0:?} is not one of nurse, clinician, front_desk")]
    Role(String),
    /// The id is not 1-32 of a-z, 0-9, '-'.
    #[error("staff id {0:?}: use 1-32 of a-z, 0-9, '-'")]
    Id(String),
    /// The name is empty or longer than 100 characters.
    #[error("the name must be 1-100 characters")]
    Name,
    /// An API token request that cannot be met.
    #[error("{0}")]
    Token(String),
    /// Infusion limits that make no sense.
    #[error("infusion limits: {0}")]
    Limits(String),
    /// Discharge rules that make no sense.
    #[error("discharge rules: {0}")]
    Discharge(String),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] crate::auth::AuthError),
    /// The document could not be read or written.
    #[error("site configuration document: {0}")]
    Doc(Box<vigil_shared::doc::DocError>),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A person to add, with their PIN in clear (hashed here).
#[derive(Debug, Clone)]
pub struct NewStaff<'a> {
    /// Staff id, e.g. `nurse-ana`; what documents record as `by`.
    pub id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// One of [`ROLES`].
    pub role: &'a str,
    /// The PIN, digits.
    pub pin: &'a str,
}

/// Checks a new staff member's fields.
pub fn validate(s: &NewStaff<'_>) -> Result<(), StaffError> {
    let id_ok = !s.id.is_empty()
        && s.id.len() <= 32
        && s.id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        return Err(StaffError::Id(s.id.to_owned()));
    }
    if s.name.trim().is_empty() || s.name.chars().count() > 100 {
        return Err(StaffError::Name);
    }
    if !ROLES.contains(&s.role) {
        return Err(StaffError::Role(s.role.to_owned()));
    }
    if !(MIN_PIN_LEN..=MAX_PIN_LEN).contains(&s.pin.len())
        || !s.pin.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(StaffError::Pin);
    }
    Ok(())
}

/// Adds a staff member to a site's configuration, or replaces the one with the same id
/// (a new PIN, a new role), and commits the document. Appliances receive it when they next
/// connect.
pub fn set_staff_member(
    store: &CloudStore,
    site: &str,
    new: &NewStaff<'_>,
    now_us: i64,
) -> Result<(), StaffError> {
    validate(new)?;
    let member = StaffMember {
        id: new.id.to_owned(),
        name: new.name.trim().to_owned(),
        role: new.role.to_owned(),
        pin_hash: hash_password(new.pin)?,
    };
    edit_site_config(store, site, now_us, |doc| {
        doc.update(|c| match c.staff.iter_mut().find(|m| m.id == member.id) {
            Some(m) => *m = member,
            None => c.staff.push(member),
        })?;
        Ok(())
    })
}

/// Loads a site's configuration document, lets `edit` change it and commits the change. The
/// cloud is the only writer of site configurations: the sync server refuses them from
/// appliances.
fn edit_site_config<R>(
    store: &CloudStore,
    site: &str,
    now_us: i64,
    edit: impl FnOnce(&mut SiteConfigDoc) -> Result<R, StaffError>,
) -> Result<R, StaffError> {
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    if stored.kind != DocKind::SiteConfig {
        return Err(StaffError::NoSite(site.to_owned()));
    }
    let mut stored_doc = stored.doc;
    let mut doc = SiteConfigDoc::load(&stored_doc.save())?;
    let out = edit(&mut doc)?;
    // Merge into the stored document so the commit carries only the new change.
    stored_doc.merge(doc.automerge())?;
    store.commit_document(site, DocKind::SiteConfig, site, &mut stored_doc, now_us)?;
    Ok(out)
}

/// Sets a site's infusion limits (the medical director's), replacing any set before, and
/// commits the document. Appliances receive it when they next connect.
pub fn set_infusion_limits(
    store: &CloudStore,
    site: &str,
    limits: &vigil_shared::clinical::InfusionLimits,
    now_us: i64,
) -> Result<(), StaffError> {
    limits.validate().map_err(StaffError::Limits)?;
    edit_site_config(store, site, now_us, |doc| {
        Ok(doc.set_infusion_limits(limits)?)
    })
}

/// Sets a site's discharge rules (the medical director's: observation time after the stop,
/// CADSS limit, blood-pressure limits), replacing any set before, and commits the document.
/// Appliances receive it when they next connect.
pub fn set_discharge_rules(
    store: &CloudStore,
    site: &str,
    rules: &vigil_shared::clinical::discharge::DischargeRules,
    now_us: i64,
) -> Result<(), StaffError> {
    rules.validate().map_err(StaffError::Discharge)?;
    edit_site_config(store, site, now_us, |doc| {
        Ok(doc.set_discharge_rules(rules)?)
    })
}

/// Sets a site's time zone (from `cloud.toml`) in its configuration document, so the site's
/// appliances show local times; commits only when it changes.
pub fn set_time_zone(
    store: &CloudStore,
    site: &str,
    zone: &vigil_shared::zone::SiteZone,
    now_us: i64,
) -> Result<(), StaffError> {
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    let current = SiteConfigDoc::from_automerge(stored.doc)?.time_zone_name()?;
    if current.as_deref() == Some(zone.name())
        || (current.is_none() && zone.name() == vigil_shared::zone::DEFAULT_ZONE)
    {
        return Ok(());
    }
    edit_site_config(store, site, now_us, |doc| Ok(doc.set_time_zone(zone)?))
}

/// Adds revoked certificates (serial and when) to a site's configuration, so its appliances
/// refuse them as peers; commits, and returns `true`, only when one is new to the site.
pub fn add_revoked_certificates(
    store: &CloudStore,
    site: &str,
    revoked: &std::collections::BTreeMap<String, i64>,
    now_us: i64,
) -> Result<bool, StaffError> {
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    let current = SiteConfigDoc::from_automerge(stored.doc)?.revoked_certificates()?;
    if revoked.keys().all(|serial| current.contains_key(serial)) {
        return Ok(false);
    }
    edit_site_config(store, site, now_us, |doc| {
        Ok(doc.add_revoked_certificates(revoked)?)
    })
}

/// Default lifetime of an appliance API token: a quarter, so a forgotten integration stops
/// on its own.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;

/// Longest lifetime of an appliance API token.
pub const MAX_TOKEN_DAYS: u32 = 365;

/// Prefix of a site's appliance API tokens; the site id follows, so an appliance can tell a
/// token of another site (403) from a wrong one (401) without a database.
pub const SITE_TOKEN_PREFIX: &str = "vgt_";

/// Issues an API token for a site's appliances: 256 random bits, of which only the SHA-256
/// goes into the site's configuration document. Returns the token, shown once.
pub fn issue_site_token(
    store: &CloudStore,
    site: &str,
    label: &str,
    days: u32,
    now_us: i64,
) -> Result<String, StaffError> {
    let label_ok = !label.is_empty()
        && label.len() <= 32
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !label_ok {
        return Err(StaffError::Id(label.to_owned()));
    }
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(StaffError::Token(format!(
            "a token lives 1-{MAX_TOKEN_DAYS} days, not {days}"
        )));
    }
    let token = format!("{SITE_TOKEN_PREFIX}{site}_{}", crate::auth::random_token());
    let entry = SiteApiToken {
        label: label.to_owned(),
        sha256: hex(&crate::auth::digest(&token)),
        created_us: now_us,
        expires_us: now_us.saturating_add(i64::from(days) * 86_400 * 1_000_000),
        revoked: false,
    };
    edit_site_config(store, site, now_us, |doc| {
        let mut tokens = doc.api_tokens()?;
        if tokens.iter().any(|t| t.label == entry.label) {
            return Err(StaffError::Token(format!(
                "site {site} already has a token labelled {label}; choose another label"
            )));
        }
        tokens.push(entry);
        doc.set_api_tokens(&tokens)?;
        Ok(())
    })?;
    Ok(token)
}

/// Revokes a site's API token by its label. Appliances refuse it once they have the change.
pub fn revoke_site_token(
    store: &CloudStore,
    site: &str,
    label: &str,
    now_us: i64,
) -> Result<(), StaffError> {
    edit_site_config(store, site, now_us, |doc| {
        let mut tokens = doc.api_tokens()?;
        let Some(t) = tokens.iter_mut().find(|t| t.label == label) else {
            return Err(StaffError::Token(format!(
                "site {site} has no token labelled {label}"
            )));
        };
        t.revoked = true;
        doc.set_api_tokens(&tokens)?;
        Ok(())
    })
}

/// A site's API tokens, revoked ones included.
pub fn site_tokens(store: &CloudStore, site: &str) -> Result<Vec<SiteApiToken>, StaffError> {
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    let mut stored_doc = stored.doc;
    Ok(SiteConfigDoc::load(&stored_doc.save())?.api_tokens()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<vigil_shared::doc::DocError> for StaffError {
    fn from(e: vigil_shared::doc::DocError) -> Self {
        StaffError::Doc(Box::new(e))
    }
}

impl From<automerge::AutomergeError> for StaffError {
    fn from(e: automerge::AutomergeError) -> Self {
        StaffError::Doc(Box::new(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits an empty configuration document for austin, as the cloud makes at start.
    fn add_austin(store: &CloudStore) {
        let mut doc = SiteConfigDoc::create(&vigil_shared::doc::SiteConfig {
            site: "austin".into(),
            name: "Austin".into(),
            region: "central".into(),
            rooms: vec![],
            thresholds: vigil_shared::advisory::Thresholds::default(),
            staff: vec![],
        })
        .unwrap();
        store
            .commit_document("austin", DocKind::SiteConfig, "austin", doc.automerge(), 1)
            .unwrap();
    }

    #[test]
    fn staff_fields_are_checked() {
        let ok = NewStaff {
            id: "nurse-ana",
            name: "Ana Ruiz",
            role: "nurse",
            pin: "246810",
        };
        assert!(validate(&ok).is_ok());
        let cases: &[(NewStaff<'_>, &str)] = &[
            (
                NewStaff {
                    pin: "12345",
                    ..ok.clone()
                },
                "PIN",
            ),
            (
                NewStaff {
                    pin: "12a456",
                    ..ok.clone()
                },
                "PIN",
            ),
            (
                NewStaff {
                    pin: "1234567890123",
                    ..ok.clone()
                },
                "PIN",
            ),
            (
                NewStaff {
                    role: "admin",
                    ..ok.clone()
                },
                "role",
            ),
            (
                NewStaff {
                    id: "Nurse Ana",
                    ..ok.clone()
                },
                "staff id",
            ),
            (
                NewStaff {
                    name: "  ",
                    ..ok.clone()
                },
                "name",
            ),
        ];
        for (s, expected) in cases {
            let err = validate(s).unwrap_err().to_string();
            assert!(err.contains(expected), "{s:?}: {err}");
        }
    }

    #[test]
    fn a_staff_member_lands_in_the_site_config_with_a_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("c.db")).unwrap();
        let new = NewStaff {
            id: "dr-kim",
            name: "Dr Kim",
            role: "clinician",
            pin: "135799",
        };
        assert!(matches!(
            set_staff_member(&store, "austin", &new, 1),
            Err(StaffError::NoSite(_))
        ));
        add_austin(&store);
        set_staff_member(&store, "austin", &new, 2).unwrap();
        set_staff_member(
            &store,
            "austin",
            &NewStaff {
                pin: "975311",
                ..new.clone()
            },
            3,
        )
        .unwrap();
        let mut stored = store.load_document("austin").unwrap().unwrap().doc;
        let config = SiteConfigDoc::load(&stored.save())
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.staff.len(), 1, "replaced, not added twice");
        let m = &config.staff[0];
        assert_eq!((m.id.as_str(), m.role.as_str()), ("dr-kim", "clinician"));
        assert!(!m.pin_hash.contains("975311") && m.pin_hash.starts_with("$argon2id$"));
        assert!(crate::auth::verify_password("975311", &m.pin_hash));
        assert!(!crate::auth::verify_password("135799", &m.pin_hash));

        // The infusion limits sit beside the staff list; nonsense is refused.
        let strict = vigil_shared::clinical::InfusionLimits {
            max_dose_mg_per_kg: 0.6,
            ..Default::default()
        };
        set_infusion_limits(&store, "austin", &strict, 4).unwrap();
        let bad = vigil_shared::clinical::InfusionLimits {
            min_minutes: 0,
            ..strict
        };
        assert!(matches!(
            set_infusion_limits(&store, "austin", &bad, 5),
            Err(StaffError::Limits(_))
        ));
        let mut stored = store.load_document("austin").unwrap().unwrap().doc;
        let doc = SiteConfigDoc::load(&stored.save()).unwrap();
        assert_eq!(doc.infusion_limits().unwrap(), Some(strict));
        assert_eq!(doc.config().unwrap().staff.len(), 1);
    }

    #[test]
    fn site_tokens_are_hashed_unique_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("c.db")).unwrap();
        add_austin(&store);
        let token = issue_site_token(&store, "austin", "ehr", 30, 10).unwrap();
        assert!(token.starts_with("vgt_austin_"), "{token}");
        let again = issue_site_token(&store, "austin", "ehr", 30, 11).unwrap_err();
        assert!(again.to_string().contains("already has a token"), "{again}");
        for (label, days) in [("Bad Label", 30), ("ok", 0), ("ok", MAX_TOKEN_DAYS + 1)] {
            assert!(issue_site_token(&store, "austin", label, days, 12).is_err());
        }
        let tokens = site_tokens(&store, "austin").unwrap();
        assert_eq!(tokens.len(), 1);
        let t = &tokens[0];
        assert_eq!(t.sha256, hex(&crate::auth::digest(&token)));
        assert!(
            !t.sha256.contains(&token[11..]),
            "no clear token in the document"
        );
        assert_eq!(t.expires_us, 10 + 30 * 86_400 * 1_000_000);
        assert!(!t.revoked);
        revoke_site_token(&store, "austin", "ehr", 13).unwrap();
        assert!(site_tokens(&store, "austin").unwrap()[0].revoked);
        assert!(revoke_site_token(&store, "austin", "nope", 14).is_err());
        assert!(matches!(
            issue_site_token(&store, "florida", "ehr", 30, 15),
            Err(StaffError::NoSite(_))
        ));
    }
}
