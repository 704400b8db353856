//! The fleet side of [`CloudStore`]: one-time enrolment codes (kept as hashes), every
//! certificate the cloud issued to an appliance, and what each appliance last reported.
//!
//! A code is used with one conditional update, so two appliances racing with one code cannot
//! both win. A certificate is refused at the sync endpoint once its `revoked_us` is set or its
//! `revoke_after_us` (the grace period after a renewal) has passed, on every instance, whatever
//! the CRL file on each machine says.

use vigil_shared::zone::rfc3339_utc as rfc3339;

use super::db::{Sql, args};
use super::{CloudStore, StoreError};

/// Certificates that belong to a room's previous appliance are revoked at once when a
/// replacement enrols; a renewed one stays valid for this grace period by default.
pub const DEFAULT_RENEWAL_GRACE_US: i64 = 24 * 3600 * 1_000_000;

/// An enrolment code as stored (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolCodeRow {
    /// SHA-256 of the normalized secret, hex.
    pub code_hash: String,
    /// The site the appliance will belong to.
    pub site: String,
    /// Its room.
    pub room: String,
    /// Whether it may replace a room's active appliance (revoking it).
    pub replaces_active: bool,
    /// Who made the code.
    pub created_by: String,
    /// When, µs.
    pub created_us: i64,
    /// When it stops working, µs.
    pub expires_us: i64,
}

/// A certificate the cloud issued or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// Serial, hex.
    pub serial: String,
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// `enrol`, `renew`, or `manual` (issued by `vigil-cloud pki`, recorded when revoked).
    pub source: String,
    /// Issued, µs.
    pub issued_us: i64,
    /// End of validity, µs.
    pub not_after_us: i64,
    /// The serial it replaced.
    pub replaces: Option<String>,
    /// When a renewal superseded it: it stops working then.
    pub revoke_after_us: Option<i64>,
    /// When it was revoked.
    pub revoked_us: Option<i64>,
}

/// A certificate to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCert<'a> {
    /// Serial, hex.
    pub serial: &'a str,
    /// Site.
    pub site: &'a str,
    /// Room.
    pub room: &'a str,
    /// End of validity, µs.
    pub not_after_us: i64,
}

/// Why a code was refused; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolRefusal {
    /// No such code.
    #[error(
        "this enrolment code is unknown to the cloud: check it was copied whole, or make a new one with `vigil-cloud enrol`"
    )]
    Unknown,
    /// Used already.
    #[error(
        "this enrolment code was already used (at {at}); each code enrols one appliance: make a new one with `vigil-cloud enrol`"
    )]
    Used {
        /// When, RFC 3339.
        at: String,
    },
    /// Past its hour.
    #[error(
        "this enrolment code expired at {at}; make a new one with `vigil-cloud enrol` and use it within the hour"
    )]
    Expired {
        /// When, RFC 3339.
        at: String,
    },
    /// The room has an appliance whose certificate is still good.
    #[error(
        "room {room} of {site} already has an active appliance (certificate {serial}); to replace it, make a code with `vigil-cloud enrol --site {site} --room {room} --replace`"
    )]
    RoomActive {
        /// Site.
        site: String,
        /// Room.
        room: String,
        /// The active certificate's serial (or `issued by hand`).
        serial: String,
    },
}

/// What an appliance's connection told the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected<'a> {
    /// Site.
    pub site: &'a str,
    /// Room.
    pub room: &'a str,
    /// Its software, from its Hello.
    pub software: &'a str,
    /// The protocol version negotiated.
    pub protocol: u16,
    /// Its certificate's serial, hex.
    pub cert_serial: &'a str,
    /// Its certificate's end of validity, µs.
    pub cert_not_after_us: Option<i64>,
    /// The cloud instance holding the connection.
    pub instance: &'a str,
}

impl<'a> Connected<'a> {
    /// An appliance of this build's protocol whose certificate is not known (tests and
    /// benches).
    pub fn new(site: &'a str, room: &'a str, software: &'a str, instance: &'a str) -> Self {
        Connected {
            site,
            room,
            software,
            protocol: vigil_shared::wire::MAX_PROTOCOL_VERSION,
            cert_serial: "",
            cert_not_after_us: None,
            instance,
        }
    }
}

impl CloudStore {
    /// Records a new enrolment code (its hash).
    pub fn create_enrol_code(&self, code: &EnrolCodeRow) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO enrol_codes (code_hash, site, room, replaces_active, created_by,
                                          created_us, expires_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    code.code_hash,
                    code.site,
                    code.room,
                    code.replaces_active,
                    code.created_by,
                    code.created_us,
                    code.expires_us
                ],
            )
        })?;
        Ok(())
    }

    /// The room's active appliance, if any: the serial of a certificate the cloud issued that
    /// is neither revoked nor expired, or of one issued by hand that connected within its
    /// validity. Used before making a code and again when it is used.
    pub fn active_certificate(
        &self,
        site: &str,
        room: &str,
        now_us: i64,
    ) -> Result<Option<String>, StoreError> {
        self.read(|db| active_certificate(db, site, room, now_us))
    }

    /// Uses a code for a certificate just signed: in one transaction the code is marked used
    /// (only if unused and unexpired), the room's active appliance is checked (and revoked, for
    /// a replacing code) and the certificate recorded. The site and room come from the code.
    pub fn use_enrol_code(
        &self,
        code_hash: &str,
        cert: impl FnOnce(&str, &str) -> Result<(String, i64), StoreError>,
        now_us: i64,
    ) -> Result<Result<CertRow, EnrolRefusal>, StoreError> {
        // Sign outside the transaction: the site and room come from the stored code.
        let Some(row) = self.read(|db| {
            db.row(
                "SELECT site, room, replaces_active, used_us, expires_us FROM enrol_codes
                 WHERE code_hash = ?1",
                args![code_hash],
            )
        })?
        else {
            return Ok(Err(EnrolRefusal::Unknown));
        };
        let (site, room): (String, String) = (row.get(0)?, row.get(1)?);
        let replaces: bool = row.get(2)?;
        if let Some(at) = row.get::<Option<i64>>(3)? {
            return Ok(Err(EnrolRefusal::Used { at: rfc3339(at) }));
        }
        let expires: i64 = row.get(4)?;
        if expires <= now_us {
            return Ok(Err(EnrolRefusal::Expired {
                at: rfc3339(expires),
            }));
        }
        let (serial, not_after_us) = cert(&site, &room)?;
        self.write(|db| {
            if !replaces && let Some(active) = active_certificate(db, &site, &room, now_us)? {
                return Ok(Err(EnrolRefusal::RoomActive {
                    site: site.clone(),
                    room: room.clone(),
                    serial: active,
                }));
            }
            let taken = db.exec(
                "UPDATE enrol_codes SET used_us = ?2, serial = ?3
                 WHERE code_hash = ?1 AND used_us IS NULL AND expires_us > ?2",
                args![code_hash, now_us, serial],
            )?;
            if taken != 1 {
                return Ok(Err(EnrolRefusal::Used {
                    at: rfc3339(now_us),
                }));
            }
            if replaces {
                revoke_room(db, &site, &room, now_us)?;
            }
            let cert = NewCert {
                serial: &serial,
                site: &site,
                room: &room,
                not_after_us,
            };
            insert_cert(db, &cert, "enrol", None, now_us)?;
            Ok(Ok(cert_row(db, &serial)?.ok_or_else(|| {
                StoreError::Database(format!("certificate {serial} vanished"))
            })?))
        })
    }

    /// Records a renewal: the new certificate, and the old one's end after `grace_us`.
    pub fn renew_certificate(
        &self,
        old_serial: &str,
        old_not_after_us: i64,
        new: &NewCert<'_>,
        now_us: i64,
        grace_us: i64,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            if cert_row(db, old_serial)?.is_none() {
                // Issued by hand: recorded so that its end is enforced like any other.
                let old = NewCert {
                    serial: old_serial,
                    not_after_us: old_not_after_us,
                    ..*new
                };
                insert_cert(db, &old, "manual", None, now_us)?;
            }
            insert_cert(db, new, "renew", Some(old_serial), now_us)?;
            db.exec(
                "UPDATE certificates SET revoke_after_us = ?2
                 WHERE serial = ?1 AND revoke_after_us IS NULL AND revoked_us IS NULL",
                args![old_serial, now_us + grace_us],
            )?;
            Ok(())
        })
    }

    /// Why a certificate may no longer connect, if it may not: revoked, or superseded by a
    /// renewal whose grace period is over.
    pub fn certificate_refusal(
        &self,
        serial: &str,
        now_us: i64,
    ) -> Result<Option<String>, StoreError> {
        self.read(|db| {
            let Some(cert) = cert_row(db, serial)? else {
                return Ok(None);
            };
            // A renewal's grace period first: the sweep marks it revoked when it ends.
            if let Some(at) = cert.revoke_after_us.filter(|at| *at <= now_us) {
                return Ok(Some(format!(
                    "this appliance's certificate {serial} was renewed and stopped working at \
                     {}; the appliance should be using its new one",
                    rfc3339(at)
                )));
            }
            if let Some(at) = cert.revoked_us.filter(|at| *at <= now_us) {
                return Ok(Some(format!(
                    "this appliance's certificate {serial} was revoked at {}; enrol it again \
                     with a new code (`vigil-cloud enrol --site {} --room {} --replace`, then \
                     `vigil-edge enrol CODE`)",
                    rfc3339(at),
                    cert.site,
                    cert.room
                )));
            }
            Ok(None)
        })
    }

    /// Marks superseded certificates whose grace period is over as revoked; their serials,
    /// for the CRL.
    pub fn revoke_superseded(&self, now_us: i64) -> Result<Vec<String>, StoreError> {
        self.write(|db| {
            let serials: Vec<String> = db
                .rows(
                    "SELECT serial FROM certificates
                     WHERE revoked_us IS NULL AND revoke_after_us <= ?1 ORDER BY serial",
                    args![now_us],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_, _>>()?;
            db.exec(
                "UPDATE certificates SET revoked_us = revoke_after_us
                 WHERE revoked_us IS NULL AND revoke_after_us <= ?1",
                args![now_us],
            )?;
            Ok(serials)
        })
    }

    /// Every appliance certificate that may no longer connect at `now_us` (revoked, or
    /// superseded by a renewal whose grace period is over): its site, serial and since when.
    pub fn refused_certificates(
        &self,
        now_us: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(|db| {
            db.rows(
                "SELECT site, serial, revoked_us, revoke_after_us FROM certificates
                 WHERE revoked_us <= ?1 OR revoke_after_us <= ?1 ORDER BY site, serial",
                args![now_us],
            )?
            .iter()
            .map(|r| {
                let revoked: Option<i64> = r.get(2)?;
                let after: Option<i64> = r.get(3)?;
                let since = [revoked, after]
                    .into_iter()
                    .flatten()
                    .filter(|at| *at <= now_us)
                    .min()
                    .unwrap_or(now_us);
                Ok((r.get(0)?, r.get(1)?, since))
            })
            .collect()
        })
    }

    /// A room's certificates, newest first.
    pub fn room_certificates(&self, site: &str, room: &str) -> Result<Vec<CertRow>, StoreError> {
        self.read(|db| {
            let serials: Vec<String> = db
                .rows(
                    "SELECT serial FROM certificates WHERE site = ?1 AND room = ?2
                     ORDER BY issued_us DESC, serial",
                    args![site, room],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for serial in serials {
                out.extend(cert_row(db, &serial)?);
            }
            Ok(out)
        })
    }

    /// An appliance connected (or reconnected) to cloud instance `instance`: it is online,
    /// runs `software`, speaks `protocol` and holds this certificate.
    pub fn appliance_connected(&self, c: &Connected<'_>, now_us: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO appliances (site, room, connected, software, first_seen_us,
                                         last_seen_us, instance, protocol, cert_serial,
                                         cert_not_after_us)
                 VALUES (?1, ?2, 1, ?3, ?4, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(site, room) DO UPDATE SET
                     connected = 1, software = excluded.software,
                     last_seen_us = excluded.last_seen_us, instance = excluded.instance,
                     protocol = excluded.protocol, cert_serial = excluded.cert_serial,
                     cert_not_after_us = excluded.cert_not_after_us",
                args![
                    c.site,
                    c.room,
                    c.software,
                    now_us,
                    c.instance,
                    i64::from(c.protocol),
                    c.cert_serial,
                    c.cert_not_after_us
                ],
            )
        })?;
        Ok(())
    }

    /// An appliance's health report arrived (JSON as sent, already checked), with its clock's
    /// offset from the cloud's.
    pub fn appliance_reported(
        &self,
        site: &str,
        room: &str,
        report_json: &str,
        clock_skew_us: i64,
        now_us: i64,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE appliances SET report = ?3, clock_skew_us = ?4, last_seen_us = ?5
                 WHERE site = ?1 AND room = ?2",
                args![site, room, report_json, clock_skew_us, now_us],
            )
        })?;
        Ok(())
    }
}

fn active_certificate(
    db: &mut dyn Sql,
    site: &str,
    room: &str,
    now_us: i64,
) -> Result<Option<String>, StoreError> {
    let issued = db.row(
        "SELECT serial FROM certificates
         WHERE site = ?1 AND room = ?2 AND revoked_us IS NULL AND revoke_after_us IS NULL
               AND not_after_us > ?3
         ORDER BY issued_us DESC LIMIT 1",
        args![site, room, now_us],
    )?;
    if let Some(row) = issued {
        return Ok(Some(row.get(0)?));
    }
    // A certificate issued by hand that this room connected with and that is still valid.
    let seen = db.row(
        "SELECT a.cert_serial FROM appliances a
         WHERE a.site = ?1 AND a.room = ?2 AND a.cert_serial <> ''
               AND a.cert_not_after_us > ?3
               AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = a.cert_serial)",
        args![site, room, now_us],
    )?;
    Ok(match seen {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// Revokes every certificate of the room that still works, including one issued by hand it
/// last connected with.
fn revoke_room(db: &mut dyn Sql, site: &str, room: &str, now_us: i64) -> Result<(), StoreError> {
    db.exec(
        "UPDATE certificates SET revoked_us = ?3
         WHERE site = ?1 AND room = ?2 AND revoked_us IS NULL",
        args![site, room, now_us],
    )?;
    if let Some(row) = db.row(
        "SELECT cert_serial, cert_not_after_us FROM appliances
         WHERE site = ?1 AND room = ?2 AND cert_serial <> ''",
        args![site, room],
    )? {
        let serial: String = row.get(0)?;
        if cert_row(db, &serial)?.is_none() {
            let cert = NewCert {
                serial: &serial,
                site,
                room,
                not_after_us: row.get::<Option<i64>>(1)?.unwrap_or(now_us),
            };
            insert_cert(db, &cert, "manual", None, now_us)?;
            db.exec(
                "UPDATE certificates SET revoked_us = ?2 WHERE serial = ?1",
                args![serial, now_us],
            )?;
        }
    }
    Ok(())
}

fn insert_cert(
    db: &mut dyn Sql,
    cert: &NewCert<'_>,
    source: &str,
    replaces: Option<&str>,
    now_us: i64,
) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO certificates (serial, site, room, source, issued_us, not_after_us, replaces)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            cert.serial,
            cert.site,
            cert.room,
            source,
            now_us,
            cert.not_after_us,
            replaces
        ],
    )?;
    Ok(())
}

fn cert_row(db: &mut dyn Sql, serial: &str) -> Result<Option<CertRow>, StoreError> {
    let row = db.row(
        "SELECT serial, site, room, source, issued_us, not_after_us, replaces, revoke_after_us,
                revoked_us
         FROM certificates WHERE serial = ?1",
        args![serial],
    )?;
    row.map(|r| {
        Ok(CertRow {
            serial: r.get(0)?,
            site: r.get(1)?,
            room: r.get(2)?,
            source: r.get(3)?,
            issued_us: r.get(4)?,
            not_after_us: r.get(5)?,
            replaces: r.get(6)?,
            revoke_after_us: r.get(7)?,
            revoked_us: r.get(8)?,
        })
    })
    .transpose()
}
