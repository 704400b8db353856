//! The appliance fleet: the one-time enrolment code, the health report an appliance sends the
//! cloud, and the rules that flag an appliance as needing attention. No I/O: callers hash,
//! read clocks and talk to the network.
//!
//! # Enrolment codes
//!
//! `vigil-cloud enrol` prints a code like
//!
//! ```text
//! K7QF-M2XD-9PRT-4HWA@sync.clinic.example:4433/3F2A9C0BQ1M4Z8T7W5R6Y2K8HDX4
//! ```
//!
//! - the secret: 16 characters of Crockford base32 (80 random bits), in groups of four; the
//!   cloud keeps only its hash, and it works once, within the hour;
//! - the cloud's sync address;
//! - the first 130 bits of the SHA-256 of the clinic CA's certificate (26 characters), which
//!   the appliance pins: it trusts the cloud only if the cloud's chain holds that CA;
//! - two check characters over everything before them, so a mistyped code is caught on the
//!   appliance before it connects to anything.
//!
//! Crockford's alphabet has no I, L, O or U; reading a code back, `I` and `L` count as `1`
//! and `O` as `0`, and case and spaces do not matter.

use serde::{Deserialize, Serialize};

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters of the secret (80 bits).
pub const SECRET_CHARS: usize = 16;

/// Characters of the CA fingerprint carried in a code (130 bits of its SHA-256).
pub const FINGERPRINT_CHARS: usize = 26;

/// Check characters at the end of a code.
const CHECK_CHARS: usize = 2;

/// A parsed enrolment code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolCode {
    /// The secret, normalized: 16 characters of the alphabet, no dashes.
    pub secret: String,
    /// The cloud's sync address, `host:port`.
    pub addr: String,
    /// The CA fingerprint prefix, 26 characters of the alphabet.
    pub fingerprint: String,
}

/// Why a code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The code does not have the `SECRET@HOST:PORT/FINGERPRINT` shape.
    #[error(
        "this is not an enrolment code: expected SECRET@HOST:PORT/FINGERPRINT as `vigil-cloud enrol` printed it"
    )]
    Shape,
    /// A part has the wrong length or a character outside the alphabet.
    #[error("the code's {0} is malformed; copy the whole code again")]
    Part(&'static str),
    /// The check characters do not match: a character was mistyped.
    #[error("the code is mistyped (its check characters do not match); copy it again")]
    Check,
}

impl EnrolCode {
    /// A code for `secret` (16 characters of the alphabet), the cloud at `addr`, and the CA
    /// whose certificate's SHA-256 is `ca_sha256`.
    pub fn new(secret: &str, addr: &str, ca_sha256: &[u8; 32]) -> EnrolCode {
        EnrolCode {
            secret: secret.to_owned(),
            addr: addr.to_owned(),
            fingerprint: fingerprint(ca_sha256),
        }
    }

    /// Reads a code as a person typed or pasted it.
    pub fn parse(text: &str) -> Result<EnrolCode, CodeError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (secret, rest) = text.split_once('@').ok_or(CodeError::Shape)?;
        let (addr, tail) = rest.rsplit_once('/').ok_or(CodeError::Shape)?;
        let secret = normalize(&secret.replace('-', "")).ok_or(CodeError::Part("secret"))?;
        if secret.len() != SECRET_CHARS {
            return Err(CodeError::Part("secret"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or(CodeError::Part("address"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(CodeError::Part("address"));
        }
        let tail = normalize(tail).ok_or(CodeError::Part("fingerprint"))?;
        if tail.len() != FINGERPRINT_CHARS + CHECK_CHARS {
            return Err(CodeError::Part("fingerprint"));
        }
        let (fingerprint, check) = tail.split_at(FINGERPRINT_CHARS);
        let code = EnrolCode {
            secret,
            addr: addr.to_owned(),
            fingerprint: fingerprint.to_owned(),
        };
        if code.check() != check {
            return Err(CodeError::Check);
        }
        Ok(code)
    }

    /// Whether a CA certificate whose SHA-256 is `ca_sha256` is the one this code names.
    pub fn names_ca(&self, ca_sha256: &[u8; 32]) -> bool {
        fingerprint(ca_sha256) == self.fingerprint
    }

    /// The secret as printed: four groups of four.
    pub fn secret_grouped(&self) -> String {
        let groups: Vec<&str> = (0..self.secret.len())
            .step_by(4)
            .map(|i| &self.secret[i..(i + 4).min(self.secret.len())])
            .collect();
        groups.join("-")
    }

    fn check(&self) -> String {
        // A position-weighted sum over the normalized text: any one changed character, and
        // any swap of two different neighbours, changes it.
        let text = format!("{}@{}/{}", self.secret, self.addr, self.fingerprint);
        let mut sum: u32 = 0;
        for (i, b) in text.bytes().enumerate() {
            let weight = u32::try_from(i % 1021).unwrap_or(0) + 1;
            sum = (sum + weight * u32::from(b)) % 1021;
        }
        let hi = usize::try_from(sum / 32 % 32).unwrap_or(0);
        let lo = usize::try_from(sum % 32).unwrap_or(0);
        [ALPHABET[hi] as char, ALPHABET[lo] as char]
            .iter()
            .collect()
    }
}

impl std::fmt::Display for EnrolCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}/{}{}",
            self.secret_grouped(),
            self.addr,
            self.fingerprint,
            self.check()
        )
    }
}

/// A secret from 10 random bytes: 16 characters of the alphabet.
pub fn secret_from(random: &[u8; 10]) -> String {
    base32(random).chars().take(SECRET_CHARS).collect()
}

/// The fingerprint carried in a code: the first 26 characters of the base32 of a SHA-256.
pub fn fingerprint(sha256: &[u8; 32]) -> String {
    base32(sha256).chars().take(FINGERPRINT_CHARS).collect()
}

/// Crockford base32 of `bytes`, most significant bit first, without padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0_u32, 0_u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Upper case, with the look-alikes read as Crockford says; `None` if a character is not in
/// the alphabet.
fn normalize(s: &str) -> Option<String> {
    s.chars()
        .map(|c| match c.to_ascii_uppercase() {
            'I' | 'L' => Some('1'),
            'O' => Some('0'),
            c if ALPHABET.contains(&(c as u8)) && c.is_ascii() => Some(c),
            _ => None,
        })
        .collect()
}

/// What an appliance tells the cloud about itself on the control stream (protocol 2), every
/// backlog report: the fleet page's columns that only the appliance knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplianceReport {
    /// The appliance's clock when it sent this, µs since the epoch (the cloud compares it
    /// with its own on arrival).
    pub time_us: i64,
    /// Seconds since the process started.
    pub uptime_s: u64,
    /// Why the process last started, as a sentence.
    pub last_restart: String,
    /// Bytes used on the filesystem holding the database.
    pub disk_used_bytes: u64,
    /// That filesystem's size.
    pub disk_total_bytes: u64,
    /// The database's own size.
    pub db_bytes: u64,
    /// Retention's state: `ok`, or a sentence when the database is at its cap or the disk
    /// is full.
    pub retention: String,
    /// The room's monitors and their states.
    pub monitors: Vec<MonitorReport>,
    /// When this appliance's certificate expires, µs since the epoch.
    pub cert_not_after_us: Option<i64>,
}

/// One monitor in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorReport {
    /// The monitor's name as configured.
    pub name: String,
    /// Its state in a word or two (`connected`, `searching`, ...).
    pub state: String,
}

/// How long an appliance may go unseen before it needs attention.
pub const OFFLINE_AFTER_US: i64 = 15 * 60 * 1_000_000;

/// A certificate expiring sooner than this needs attention (renewal should have happened
/// long before: at a third of its life remaining).
pub const CERT_WARN_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// A disk fuller than this needs attention.
pub const DISK_WARN_RATIO: f64 = 0.8;

/// A clock further off than this needs attention.
pub const SKEW_WARN_US: i64 = 5 * 1_000_000;

/// What the cloud knows about one appliance, for [`attention`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetFacts<'a> {
    /// Last sign of life, µs (cloud clock).
    pub last_seen_us: i64,
    /// The protocol version of its last connection.
    pub protocol: u16,
    /// Its clock minus the cloud's at its last report, µs.
    pub clock_skew_us: Option<i64>,
    /// Its last report.
    pub report: Option<&'a ApplianceReport>,
}

/// Why an appliance needs attention, one sentence each; empty when it does not.
/// `newest_protocol` is the cloud's newest version.
pub fn attention(facts: &FleetFacts<'_>, now_us: i64, newest_protocol: u16) -> Vec<String> {
    let mut out = Vec::new();
    let unseen = now_us - facts.last_seen_us;
    if unseen > OFFLINE_AFTER_US {
        out.push(format!("offline for {} min", unseen / 60_000_000));
    }
    if facts.protocol < newest_protocol {
        out.push(format!(
            "speaks sync protocol {} (this cloud speaks {newest_protocol}): update vigil-edge",
            facts.protocol
        ));
    }
    if let Some(skew) = facts.clock_skew_us
        && skew.abs() > SKEW_WARN_US
    {
        out.push(format!(
            "clock {:.1} s {} the cloud's",
            skew.unsigned_abs() as f64 / 1e6,
            if skew > 0 { "ahead of" } else { "behind" }
        ));
    }
    if let Some(r) = facts.report {
        if r.disk_total_bytes > 0 {
            let ratio = r.disk_used_bytes as f64 / r.disk_total_bytes as f64;
            if ratio > DISK_WARN_RATIO {
                out.push(format!("disk {:.0} % full", ratio * 100.0));
            }
        }
        if r.retention != "ok" && !r.retention.is_empty() {
            out.push(r.retention.clone());
        }
        if let Some(end) = r.cert_not_after_us {
            if end <= now_us {
                out.push("certificate expired".to_owned());
            } else if end - now_us < CERT_WARN_US {
                out.push(format!(
                    "certificate expires in {} days",
                    (end - now_us) / (24 * 3600 * 1_000_000)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: [u8; 32] = [7; 32];

    #[test]
    fn a_code_round_trips_and_reads_back_as_a_person_types_it() {
        let code = EnrolCode::new(&secret_from(&[0xa5; 10]), "sync.clinic.example:4433", &CA);
        let text = code.to_string();
        assert_eq!(EnrolCode::parse(&text), Ok(code.clone()));
        // Lower case, spaces, and the look-alikes O for 0 and l for 1.
        let typed = text.to_lowercase().replace('0', "o").replace('1', "l");
        let typed = format!("  {} ", typed.replacen('-', " - ", 1));
        assert_eq!(
            EnrolCode::parse(&typed).map(|c| c.secret),
            Ok(code.secret.clone())
        );
        assert!(code.names_ca(&CA));
        assert!(!code.names_ca(&[8; 32]));
    }

    #[test]
    fn every_one_character_typo_in_the_secret_or_fingerprint_is_caught() {
        let code = EnrolCode::new(&secret_from(&[0x3c; 10]), "10.0.0.5:4433", &CA).to_string();
        let mut caught = 0;
        for (i, c) in code.char_indices() {
            if !ALPHABET.contains(&(c as u8)) {
                continue;
            }
            for &other in ALPHABET {
                if other as char == c {
                    continue;
                }
                let mut typo = code.clone();
                typo.replace_range(i..=i, &(other as char).to_string());
                assert!(EnrolCode::parse(&typo).is_err(), "{typo} was accepted");
                caught += 1;
            }
        }
        assert!(caught > 40 * 31, "only {caught} typos tried");
    }

    #[test]
    fn malformed_codes_say_which_part() {
        let good = EnrolCode::new(&secret_from(&[1; 10]), "h:1", &CA).to_string();
        let cases: Vec<(String, CodeError)> = vec![
            ("hello".into(), CodeError::Shape),
            (good.replace('@', "#"), CodeError::Shape),
            (
                good.replacen("-", "", 3).replacen(&good[..2], "", 1),
                CodeError::Part("secret"),
            ),
            (good.replace("h:1", "h"), CodeError::Part("address")),
            (good.replace("h:1", "h:99999"), CodeError::Part("address")),
            (format!("{good}X"), CodeError::Part("fingerprint")),
            (good.replace('/', "/U"), CodeError::Part("fingerprint")),
        ];
        for (text, expected) in cases {
            assert_eq!(EnrolCode::parse(&text), Err(expected), "{text}");
        }
    }

    #[test]
    fn base32_matches_known_values() {
        assert_eq!(base32(&[]), "");
        assert_eq!(base32(&[0xff]), "ZW");
        assert_eq!(base32(&[0, 0, 0, 0, 0]), "00000000");
        assert_eq!(base32(&[0xff; 5]), "ZZZZZZZZ");
        assert_eq!(base32(b"f"), "CR");
    }

    #[test]
    fn attention_names_each_problem() {
        let now = 100 * 24 * 3600 * 1_000_000_i64;
        let healthy = ApplianceReport {
            disk_used_bytes: 10,
            disk_total_bytes: 100,
            retention: "ok".into(),
            cert_not_after_us: Some(now + 200 * 24 * 3600 * 1_000_000),
            ..ApplianceReport::default()
        };
        let fine = FleetFacts {
            last_seen_us: now - 1_000_000,
            protocol: 2,
            clock_skew_us: Some(-4_000_000),
            report: Some(&healthy),
        };
        assert_eq!(attention(&fine, now, 2), Vec::<String>::new());
        let full = ApplianceReport {
            disk_used_bytes: 85,
            cert_not_after_us: Some(now + 3 * 24 * 3600 * 1_000_000),
            retention: "the database is at its cap".into(),
            ..healthy.clone()
        };
        let bad = FleetFacts {
            last_seen_us: now - 20 * 60 * 1_000_000,
            protocol: 1,
            clock_skew_us: Some(7_500_000),
            report: Some(&full),
        };
        assert_eq!(
            attention(&bad, now, 2),
            vec![
                "offline for 20 min",
                "speaks sync protocol 1 (this cloud speaks 2): update vigil-edge",
                "clock 7.5 s ahead of the cloud's",
                "disk 85 % full",
                "the database is at its cap",
                "certificate expires in 3 days",
            ]
        );
        let expired = ApplianceReport {
            cert_not_after_us: Some(now - 1),
            ..healthy.clone()
        };
        let facts = FleetFacts {
            report: Some(&expired),
            clock_skew_us: Some(-6_000_000),
            ..fine
        };
        assert_eq!(
            attention(&facts, now, 2),
            vec!["clock 6.0 s behind the cloud's", "certificate expired"]
        );
    }
}
