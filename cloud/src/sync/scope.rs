//! The sync server's scope rules, as plain functions: which document ids an appliance may
//! use, which documents it may see, and which changes it may make. Site and room always come
//! from the appliance's certificate ([`ApplianceIdentity`]), never from a message.
//!
//! - **Ids.** A document id is a UUID in its canonical form, or, for the site configuration,
//!   the site's own id. Nothing else: an appliance cannot squat the id of a site that does not
//!   exist yet, or of a configuration.
//! - **Site configuration.** Appliances receive it and never write it: any change to one from
//!   an appliance is refused. Only the cloud's staff and limits commands write it.
//! - **Rooms.** A session or audit document belongs to the room its root `room` names; only
//!   that room's appliance may read or change it, and a change may not move it to another room.
//! - **Patients.** A session's `patient_id` names a patient document registered to the
//!   appliance's site. The caller looks the patient up in the store and passes what it found
//!   to [`check_patient`]; a patient the cloud does not know yet is refused, and the appliance
//!   retries on its next connection (it sends patients before sessions, so the patient is then
//!   there).
//! - **Audit documents.** Only entries are added; see [`vigil_shared::audit::check_append_only`].
//!
//! This module does no I/O and keeps no state; `sync.rs` calls it before it commits anything,
//! and sends the error's [`RejectCode`] and message to the appliance.

use automerge::{AutoCommit, ChangeHash};
use vigil_shared::audit::{AuditEntry, check_append_only};
use vigil_shared::doc::{DocError, DocKind, read_session_meta, room_of};
use vigil_shared::ids::is_canonical_uuid;
use vigil_shared::ledger::doc::{check_append_only as ledger_append_only, ledger_id};
use vigil_shared::wire::RejectCode;

use crate::pki::ApplianceIdentity;

/// Why an appliance may not use, see or change a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A document id that is neither a UUID nor, for a site configuration, the site's id.
    #[error(
        "document id {id:?} is not a UUID; appliances may only use lowercase hyphenated UUIDs as document ids"
    )]
    NotUuid {
        /// The refused id.
        id: String,
    },
    /// A ledger other than the appliance's own site's.
    #[error("ledger {id:?} is not the ledger of this appliance's site {site}")]
    OtherLedger {
        /// The refused id.
        id: String,
        /// The appliance's site.
        site: String,
    },
    /// A ledger change that edits or removes an entry, or a malformed entry.
    #[error("ledger {id}: {reason}")]
    Ledger {
        /// The ledger's id.
        id: String,
        /// Malformed (schema) rather than a rewrite (forbidden).
        malformed: bool,
        /// What is wrong.
        reason: String,
    },
    /// A site configuration other than the appliance's own site's.
    #[error("site configuration {id:?} is not the configuration of this appliance's site {site}")]
    OtherSiteConfig {
        /// The refused id.
        id: String,
        /// The appliance's site.
        site: String,
    },
    /// A change to a site configuration.
    #[error(
        "appliances may not change site configuration {id}; staff and limits are changed with vigil-cloud's staff and limits commands, and reach every room from the cloud"
    )]
    SiteConfigWrite {
        /// The site configuration's id.
        id: String,
    },
    /// A session or audit document of another room (or that a change moves to another room).
    #[error(
        "{kind} document {id} is of room {doc_room:?}; this appliance is room {room} of {site}"
    )]
    OtherRoom {
        /// The document's kind.
        kind: DocKind,
        /// The document's id.
        id: String,
        /// The room the document names (empty when it names none).
        doc_room: String,
        /// The appliance's site.
        site: String,
        /// The appliance's room.
        room: String,
    },
    /// A session whose patient is not a patient document of the appliance's site.
    #[error("session {id} names patient {patient_id:?}, which {why}")]
    PatientNotOfSite {
        /// The session's id.
        id: String,
        /// The patient id the session names.
        patient_id: String,
        /// What the cloud knows of that id, and what to do.
        why: String,
    },
    /// A change to an audit document that does more than add entries, or a malformed one.
    #[error("audit document {id}: {reason}")]
    Audit {
        /// The audit document's id.
        id: String,
        /// What is wrong.
        reason: String,
        /// Whether the document is malformed (rather than rewritten).
        malformed: bool,
    },
}

impl ScopeError {
    /// The code the appliance is sent: the document is out of its scope, or (for a malformed
    /// audit document) breaks the schema.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            ScopeError::Audit {
                malformed: true, ..
            }
            | ScopeError::Ledger {
                malformed: true, ..
            } => RejectCode::SchemaInvalid,
            _ => RejectCode::Forbidden,
        }
    }
}

/// What a change needs checked against the store before it may be committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Nothing more.
    Nothing,
    /// The session's patient must be registered to the appliance's site ([`check_patient`]).
    Patient(String),
    /// An audit document's change; these entries are new.
    AuditEntries(Vec<AuditEntry>),
    /// A ledger's change; these entries are new.
    LedgerEntries(Vec<vigil_shared::ledger::Entry>),
}

/// May the appliance use this id for a document of this kind?
pub fn check_id(doc_id: &str, kind: DocKind, who: &ApplianceIdentity) -> Result<(), ScopeError> {
    match kind {
        DocKind::SiteConfig if doc_id == who.site.as_str() => Ok(()),
        DocKind::SiteConfig => Err(ScopeError::OtherSiteConfig {
            id: doc_id.to_owned(),
            site: who.site.to_string(),
        }),
        // One ledger per site, its id derived from the site: a room cannot start another, nor
        // touch another site's.
        DocKind::Ledger if doc_id == ledger_id(who.site.as_str()) => Ok(()),
        DocKind::Ledger => Err(ScopeError::OtherLedger {
            id: doc_id.to_owned(),
            site: who.site.to_string(),
        }),
        DocKind::Session | DocKind::Patient | DocKind::Audit => {
            if is_canonical_uuid(doc_id) {
                Ok(())
            } else {
                Err(ScopeError::NotUuid {
                    id: doc_id.to_owned(),
                })
            }
        }
    }
}

/// May an appliance change a document of this kind at all? Never a site configuration.
pub fn check_writable(doc_id: &str, kind: DocKind) -> Result<(), ScopeError> {
    match kind {
        DocKind::SiteConfig => Err(ScopeError::SiteConfigWrite {
            id: doc_id.to_owned(),
        }),
        DocKind::Session | DocKind::Patient | DocKind::Audit | DocKind::Ledger => Ok(()),
    }
}

/// May the appliance see this document as the cloud holds it (`doc`, empty when new)?
/// Sessions and audit documents are their room's alone.
pub fn check_read(
    doc_id: &str,
    kind: DocKind,
    doc: &mut AutoCommit,
    who: &ApplianceIdentity,
) -> Result<(), ScopeError> {
    match kind {
        DocKind::Session | DocKind::Audit if !doc.get_heads().is_empty() => {
            check_room(doc_id, kind, doc, who)
        }
        _ => Ok(()),
    }
}

/// May the appliance make the change that turned the document (at heads `before`, empty for
/// a new document) into `doc`? `doc` has passed `validate_document` for `kind`. Returns what
/// is left to check against the store.
pub fn check_change(
    doc_id: &str,
    kind: DocKind,
    doc: &AutoCommit,
    before: &[ChangeHash],
    who: &ApplianceIdentity,
) -> Result<Pending, ScopeError> {
    match kind {
        DocKind::SiteConfig => Err(ScopeError::SiteConfigWrite {
            id: doc_id.to_owned(),
        }),
        DocKind::Patient => Ok(Pending::Nothing),
        DocKind::Session => {
            check_room(doc_id, kind, doc, who)?;
            let patient_id = read_session_meta(doc).map(|m| m.patient_id).map_err(|e| {
                ScopeError::PatientNotOfSite {
                    id: doc_id.to_owned(),
                    patient_id: String::new(),
                    why: format!("cannot be read: {e}"),
                }
            })?;
            Ok(Pending::Patient(patient_id))
        }
        DocKind::Audit => {
            check_room(doc_id, kind, doc, who)?;
            let added = check_append_only(doc, before).map_err(|e| ScopeError::Audit {
                id: doc_id.to_owned(),
                malformed: !matches!(e, DocError::LogRewritten { .. }),
                reason: e.to_string(),
            })?;
            Ok(Pending::AuditEntries(added))
        }
        // Any room of the site adds entries; none edits or removes one. The balance rules are
        // not applied here: rooms offline may each draw what only one could, and the ledger
        // must record what happened (a count then shows the discrepancy).
        DocKind::Ledger => {
            let added = ledger_append_only(doc, before).map_err(|e| ScopeError::Ledger {
                id: doc_id.to_owned(),
                malformed: !matches!(e, DocError::LogRewritten { .. }),
                reason: e.to_string(),
            })?;
            Ok(Pending::LedgerEntries(added))
        }
    }
}

/// Is the patient a session names registered to the appliance's site? `owner` is the store's
/// registry entry for `patient_id` (kind and site), `None` when the cloud has no such document.
pub fn check_patient(
    session_id: &str,
    patient_id: &str,
    owner: Option<(DocKind, String)>,
    who: &ApplianceIdentity,
) -> Result<(), ScopeError> {
    let refuse = |why: String| ScopeError::PatientNotOfSite {
        id: session_id.to_owned(),
        patient_id: patient_id.to_owned(),
        why,
    };
    match owner {
        Some((DocKind::Patient, site)) if site == who.site.as_str() => Ok(()),
        Some((DocKind::Patient, _)) => {
            Err(refuse(format!("belongs to another site, not {}", who.site)))
        }
        Some((kind, _)) => Err(refuse(format!("is a {kind} document, not a patient"))),
        None => Err(refuse(format!(
            "the cloud does not hold for site {}; the appliance sends the patient first and retries the session on its next connection",
            who.site
        ))),
    }
}

fn check_room(
    doc_id: &str,
    kind: DocKind,
    doc: &AutoCommit,
    who: &ApplianceIdentity,
) -> Result<(), ScopeError> {
    let doc_room = room_of(doc).unwrap_or_default();
    if doc_room == who.room.as_str() {
        return Ok(());
    }
    Err(ScopeError::OtherRoom {
        kind,
        id: doc_id.to_owned(),
        doc_room,
        site: who.site.to_string(),
        room: who.room.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc;
    use vigil_shared::audit::AuditDoc;
    use vigil_shared::doc::{
        CoursePlan, PatientDoc, PatientRecord, Protocol, Screening, SessionDoc, SessionMeta,
        SessionState,
    };

    const UUID_A: &str = "0b7c2a51-8d3e-4f60-9a1b-2c3d4e5f6a7b";
    const UUID_B: &str = "1c8d3b62-9e4f-4071-8b2c-3d4e5f6a7b8c";

    fn who(site: &str, room: &str) -> ApplianceIdentity {
        ApplianceIdentity::new(&site.into(), &room.into()).unwrap()
    }

    fn session(id: &str, room: &str, patient_id: &str) -> SessionDoc {
        SessionDoc::create(&SessionMeta {
            id: id.into(),
            site: "austin".into(),
            room: room.into(),
            patient_id: patient_id.into(),
            protocol: Protocol {
                drug: "ketamine".into(),
                route: "iv".into(),
                dose_mg_per_kg: 0.5,
                weight_kg: 70.0,
                planned_minutes: 40,
            },
            state: SessionState::InProgress,
            created_us: 1,
            started_us: Some(1),
            ended_us: None,
            dose_events: vec![],
            advisories: vec![],
            observations: vec![],
            scores: vec![],
            discharge: None,
        })
        .unwrap()
    }

    fn patient(id: &str) -> PatientDoc {
        PatientDoc::create(&PatientRecord {
            id: id.into(),
            site: "austin".into(),
            given_name: "Pat".into(),
            family_name: "Doe".into(),
            birth_date: "1970-01-01".into(),
            sex: "female".into(),
            phone: None,
            screening: Screening::default(),
            medications: vec![],
            course: CoursePlan::default(),
            outcome_scores: vec![],
        })
        .unwrap()
    }

    #[test]
    fn ids_are_uuids_or_the_sites_own_configuration() {
        let austin = who("austin", "1");
        let cases: [(&str, DocKind, bool); 12] = [
            (UUID_A, DocKind::Session, true),
            (UUID_A, DocKind::Patient, true),
            (UUID_A, DocKind::Audit, true),
            ("austin", DocKind::SiteConfig, true),
            ("florida", DocKind::SiteConfig, false),
            (UUID_A, DocKind::SiteConfig, false),
            ("austin", DocKind::Patient, false),
            ("s-1", DocKind::Session, false),
            ("patient-austin", DocKind::Patient, false),
            (
                "0B7C2A51-8D3E-4F60-9A1B-2C3D4E5F6A7B",
                DocKind::Session,
                false,
            ),
            (
                "{0b7c2a51-8d3e-4f60-9a1b-2c3d4e5f6a7b}",
                DocKind::Session,
                false,
            ),
            ("", DocKind::Audit, false),
        ];
        for (id, kind, ok) in cases {
            assert_eq!(check_id(id, kind, &austin).is_ok(), ok, "{kind} {id:?}");
        }
        assert!(matches!(
            check_id("florida", DocKind::SiteConfig, &austin),
            Err(ScopeError::OtherSiteConfig { .. })
        ));
        assert!(matches!(
            check_id("nowhere", DocKind::Patient, &austin),
            Err(ScopeError::NotUuid { .. })
        ));
    }

    #[test]
    fn sessions_and_audit_documents_are_their_rooms_alone() {
        let room1 = who("austin", "1");
        let room2 = who("austin", "2");
        let mut s = session(UUID_A, "1", UUID_B);
        let mut a = AuditDoc::create(UUID_B, "austin", "1").unwrap();
        for (kind, doc) in [
            (DocKind::Session, s.automerge()),
            (DocKind::Audit, a.automerge()),
        ] {
            assert_eq!(check_read(UUID_A, kind, doc, &room1), Ok(()), "{kind}");
            let err = check_read(UUID_A, kind, doc, &room2).unwrap_err();
            assert_eq!(err.reject_code(), RejectCode::Forbidden);
            assert!(
                err.to_string()
                    .contains("is of room \"1\"; this appliance is room 2 of austin"),
                "{err}"
            );
        }
        // Patients are the whole site's; a document not yet held is anyone's to create.
        let mut p = patient(UUID_B);
        assert_eq!(
            check_read(UUID_B, DocKind::Patient, p.automerge(), &room2),
            Ok(())
        );
        assert_eq!(
            check_read(UUID_A, DocKind::Session, &mut AutoCommit::new(), &room2),
            Ok(())
        );
    }

    #[test]
    fn changes_are_checked_per_kind() {
        let room1 = who("austin", "1");
        let room2 = who("austin", "2");
        assert!(matches!(
            check_change(
                "austin",
                DocKind::SiteConfig,
                &AutoCommit::new(),
                &[],
                &room1
            ),
            Err(ScopeError::SiteConfigWrite { .. })
        ));

        let mut s = session(UUID_A, "1", UUID_B);
        assert_eq!(
            check_change(UUID_A, DocKind::Session, s.automerge_ref(), &[], &room1),
            Ok(Pending::Patient(UUID_B.into()))
        );
        // Room 2 writing room 1's session, and room 1 moving its session to room 2.
        assert!(matches!(
            check_change(UUID_A, DocKind::Session, s.automerge_ref(), &[], &room2),
            Err(ScopeError::OtherRoom { .. })
        ));
        let before = s.automerge().get_heads();
        s.update_meta(|m| m.room = "2".into()).unwrap();
        assert!(matches!(
            check_change(UUID_A, DocKind::Session, s.automerge_ref(), &before, &room1),
            Err(ScopeError::OtherRoom { .. })
        ));

        let mut a = AuditDoc::create(UUID_B, "austin", "1").unwrap();
        let e = AuditEntry {
            id: UUID_A.into(),
            at_us: 1,
            actor: "nurse-a".into(),
            action: "screen view session".into(),
            target: UUID_A.into(),
            client: "10.1.2.3".into(),
        };
        a.append(std::slice::from_ref(&e)).unwrap();
        assert_eq!(
            check_change(UUID_B, DocKind::Audit, a.automerge_ref(), &[], &room1),
            Ok(Pending::AuditEntries(vec![e]))
        );
        assert!(matches!(
            check_change(UUID_B, DocKind::Audit, a.automerge_ref(), &[], &room2),
            Err(ScopeError::OtherRoom { .. })
        ));
        let before = a.automerge().get_heads();
        let list = match a
            .automerge()
            .get(automerge::ROOT, vigil_shared::audit::ENTRIES_KEY)
            .unwrap()
        {
            Some((_, id)) => id,
            None => panic!("the entry list exists"),
        };
        automerge::transaction::Transactable::delete(a.automerge(), &list, 0).unwrap();
        let err =
            check_change(UUID_B, DocKind::Audit, a.automerge_ref(), &before, &room1).unwrap_err();
        assert_eq!(err.reject_code(), RejectCode::Forbidden);
        assert!(err.to_string().contains("may only be added"), "{err}");
    }

    #[test]
    fn a_sessions_patient_is_a_patient_of_the_appliances_site() {
        let austin = who("austin", "1");
        /// The patient's registration, and a part of the refusal's reason (none: accepted).
        type Case = (Option<(DocKind, &'static str)>, Option<&'static str>);
        let cases: [Case; 5] = [
            (Some((DocKind::Patient, "austin")), None),
            (
                Some((DocKind::Patient, "florida")),
                Some("belongs to another site"),
            ),
            (
                Some((DocKind::Session, "austin")),
                Some("is a session document"),
            ),
            (Some((DocKind::SiteConfig, "austin")), Some("not a patient")),
            (None, Some("does not hold for site austin")),
        ];
        for (owner, refusal) in cases {
            let got = check_patient(
                UUID_A,
                UUID_B,
                owner.map(|(k, s)| (k, s.to_owned())),
                &austin,
            );
            match (got, refusal) {
                (Ok(()), None) => {}
                (Err(e), Some(why)) => {
                    assert_eq!(e.reject_code(), RejectCode::Forbidden);
                    assert!(e.to_string().contains(why), "{owner:?}: {e}");
                    assert!(e.to_string().contains(UUID_B), "{e}");
                }
                (got, _) => panic!("{owner:?}: got {got:?}"),
            }
        }
    }
}
