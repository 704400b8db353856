//! The room screens' part of a site's configuration document: the staff list (who may sign
//! in, with their role and a hash of their PIN) and the infusion limits the screens check
//! orders against.
//!
//! The cloud owns site configuration documents ([`crate::app`] creates them); this module
//! adds or replaces one person in one, and the sync server offers the document to the site's
//! appliances when they connect. Appliances verify PINs against the hashes offline, so a room
//! keeps working when the network is down. PINs are hashed with argon2id
//! ([`crate::auth::hash_password`]); the clear PIN is never stored or logged.

use vigil_shared::doc::{DocKind, SiteConfigDoc, StaffMember};

use crate::auth::hash_password;
use crate::store::{CloudStore, StoreError};

/// Shortest PIN accepted. Four digits is what a nurse types with a glove on; the appliance
/// locks a name after a few wrong PINs, which is what makes a short PIN acceptable.
pub const MIN_PIN_LEN: usize = 4;

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
    /// The PIN is not 4-12 digits.
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
    /// Infusion limits that make no sense.
    #[error("infusion limits: {0}")]
    Limits(String),
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
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    if stored.kind != DocKind::SiteConfig {
        return Err(StaffError::NoSite(site.to_owned()));
    }
    let mut stored_doc = stored.doc;
    let mut doc = SiteConfigDoc::load(&stored_doc.save())?;
    doc.update(|c| match c.staff.iter_mut().find(|m| m.id == member.id) {
        Some(m) => *m = member,
        None => c.staff.push(member),
    })?;
    // Merge into the stored document so the commit carries only the new change.
    stored_doc.merge(doc.automerge())?;
    store.commit_document(site, DocKind::SiteConfig, site, &mut stored_doc, now_us)?;
    Ok(())
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
    let Some(stored) = store.load_document(site)? else {
        return Err(StaffError::NoSite(site.to_owned()));
    };
    if stored.kind != DocKind::SiteConfig {
        return Err(StaffError::NoSite(site.to_owned()));
    }
    let mut stored_doc = stored.doc;
    let mut doc = SiteConfigDoc::load(&stored_doc.save())?;
    doc.set_infusion_limits(limits)?;
    stored_doc.merge(doc.automerge())?;
    store.commit_document(site, DocKind::SiteConfig, site, &mut stored_doc, now_us)?;
    Ok(())
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

    #[test]
    fn staff_fields_are_checked() {
        let ok = NewStaff {
            id: "nurse-ana",
            name: "Ana Ruiz",
            role: "nurse",
            pin: "2468",
        };
        assert!(validate(&ok).is_ok());
        let cases: &[(NewStaff<'_>, &str)] = &[
            (
                NewStaff {
                    pin: "123",
                    ..ok.clone()
                },
                "PIN",
            ),
            (
                NewStaff {
                    pin: "12a4",
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
            pin: "13579",
        };
        assert!(matches!(
            set_staff_member(&store, "austin", &new, 1),
            Err(StaffError::NoSite(_))
        ));
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
        set_staff_member(&store, "austin", &new, 2).unwrap();
        set_staff_member(
            &store,
            "austin",
            &NewStaff {
                pin: "97531",
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
        assert!(!m.pin_hash.contains("97531") && m.pin_hash.starts_with("$argon2id$"));
        assert!(crate::auth::verify_password("97531", &m.pin_hash));
        assert!(!crate::auth::verify_password("13579", &m.pin_hash));

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
}
