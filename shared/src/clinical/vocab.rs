//! The clinical vocabulary as types: the scored instruments with their ranges, a score's
//! phase, the course phase, a side effect's severity and the staff roles.
//!
//! Documents keep these as strings (a newer appliance may write a term an older cloud does
//! not know, and the merge must not fail), so each type has a stable `code` for documents and
//! APIs, a `label` for people, and `parse` at the boundary: a form, an API body, a page
//! reading a document. Everything past the boundary matches on the enum, never on a string.

use std::ops::RangeInclusive;

pub use crate::advisory::Priority;

/// A term that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownTerm {
    /// What was being parsed, e.g. `instrument`.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
    /// The codes that would have been accepted, comma-separated.
    pub expected: String,
}

/// Declares a closed vocabulary: the enum, its codes and labels, `ALL`, `parse`, `FromStr`
/// and `Display` (the label).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $kind:literal pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $label:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every term, in the order people see them.
            pub const ALL: &[$name] = &[$( $name::$variant ),+];

            /// The stable name in documents and APIs.
            pub fn code(self) -> &'static str {
                match self {
                    $( $name::$variant => $code, )+
                }
            }

            /// The name people read.
            pub fn label(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// The term whose [`Self::code`] is `code`.
            pub fn parse(code: &str) -> Result<$name, $crate::clinical::UnknownTerm> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|t| t.code() == code)
                    .ok_or_else(|| $crate::clinical::UnknownTerm {
                        kind: $kind,
                        value: code.to_owned(),
                        expected: Self::ALL
                            .iter()
                            .map(|t| t.code())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::clinical::UnknownTerm;
            fn from_str(s: &str) -> Result<$name, $crate::clinical::UnknownTerm> {
                $name::parse(s)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

vocabulary! {
    /// What an infusion treats, as the prescriber ordered it.
    "indication" pub enum Indication {
        /// Treatment-resistant depression.
        Depression = "depression", "Depression";
        /// Post-traumatic stress disorder.
        Ptsd = "ptsd", "PTSD";
        /// Anxiety.
        Anxiety = "anxiety", "Anxiety";
        /// Anything else; the order's note says what.
        Other = "other", "Other";
    }
}

vocabulary! {
    /// A scored questionnaire or scale.
    "instrument" pub enum Instrument {
        /// Patient Health Questionnaire-9: depression, 0–27.
        Phq9 = "phq9", "PHQ-9";
        /// Generalised Anxiety Disorder-7: anxiety, 0–21.
        Gad7 = "gad7", "GAD-7";
        /// Clinician-Administered Dissociative States Scale: dissociation, 0–92.
        Cadss = "cadss", "CADSS";
        /// Modified Aldrete: recovery for discharge, 0–10.
        Aldrete = "aldrete", "Modified Aldrete";
    }
}

impl Instrument {
    /// The totals the instrument can give.
    pub fn range(self) -> RangeInclusive<i64> {
        match self {
            Instrument::Phq9 => 0..=27,
            Instrument::Gad7 => 0..=21,
            Instrument::Cadss => 0..=92,
            Instrument::Aldrete => 0..=10,
        }
    }

    /// `PHQ-9 (0–27)`: the label with its range, as a form field reads.
    pub fn label_with_range(self) -> String {
        let r = self.range();
        format!("{} ({}–{})", self.label(), r.start(), r.end())
    }

    /// Checks a total against [`Self::range`].
    pub fn check(self, value: i64) -> Result<(), String> {
        let r = self.range();
        if r.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{} must be between {} and {}",
                self.label(),
                r.start(),
                r.end()
            ))
        }
    }
}

vocabulary! {
    /// When a score was taken relative to the infusion.
    "phase" pub enum ScorePhase {
        /// Before the infusion (at check-in).
        Pre = "pre", "before";
        /// After the infusion.
        Post = "post", "after";
    }
}

vocabulary! {
    /// Where a patient is in the course of treatment.
    "course phase" pub enum CoursePhase {
        /// The first series of infusions.
        Induction = "induction", "induction";
        /// Booster infusions after the induction.
        Maintenance = "maintenance", "maintenance";
    }
}

vocabulary! {
    /// How bad a side effect was.
    "severity" pub enum Severity {
        /// Noticed, no treatment.
        Mild = "mild", "mild";
        /// Needed attention or a change to the infusion.
        Moderate = "moderate", "moderate";
        /// Stopped the infusion or needed treatment.
        Severe = "severe", "severe";
    }
}

vocabulary! {
    /// What a staff member on a site's list does at the room screen.
    "staff role" pub enum StaffRole {
        /// Records the infusion.
        Nurse = "nurse", "nurse";
        /// Everything a nurse does, and overriding a contraindication.
        Clinician = "clinician", "clinician";
        /// Registers patients and records screening answers.
        FrontDesk = "front_desk", "front desk";
    }
}

/// The highest rate any pump order may carry, mg/h, whatever a site's limits say: ten times
/// the usual site maximum, so anything above is a slip of the keyboard, refused before the
/// site's own limit is even looked at.
pub const RATE_SANITY_MAX_MG_PER_H: f64 = 2_000.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_terms_say_what_was_expected() {
        for &i in Instrument::ALL {
            assert_eq!(Instrument::parse(i.code()), Ok(i));
            assert_eq!(i.code().parse::<Instrument>(), Ok(i));
        }
        for &r in StaffRole::ALL {
            assert_eq!(StaffRole::parse(r.code()), Ok(r));
        }
        for &s in Severity::ALL {
            assert_eq!(Severity::parse(s.code()), Ok(s));
        }
        for &p in ScorePhase::ALL {
            assert_eq!(ScorePhase::parse(p.code()), Ok(p));
        }
        for &p in CoursePhase::ALL {
            assert_eq!(CoursePhase::parse(p.code()), Ok(p));
        }
        let err = Instrument::parse("PHQ9").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown instrument "PHQ9" (expected one of: phq9, gad7, cadss, aldrete)"#
        );
        assert!(StaffRole::parse("front desk").is_err());
        assert_eq!(StaffRole::FrontDesk.to_string(), "front desk");
    }

    #[test]
    fn instrument_ranges() {
        let cases = [
            (Instrument::Phq9, 0, true),
            (Instrument::Phq9, 27, true),
            (Instrument::Phq9, 28, false),
            (Instrument::Phq9, -1, false),
            (Instrument::Gad7, 21, true),
            (Instrument::Gad7, 22, false),
            (Instrument::Cadss, 92, true),
            (Instrument::Cadss, 93, false),
            (Instrument::Aldrete, 10, true),
            (Instrument::Aldrete, 11, false),
        ];
        for (instrument, value, ok) in cases {
            assert_eq!(instrument.check(value).is_ok(), ok, "{instrument} {value}");
        }
        assert_eq!(
            Instrument::Cadss.check(93).unwrap_err(),
            "CADSS must be between 0 and 92"
        );
        assert_eq!(Instrument::Phq9.label_with_range(), "PHQ-9 (0–27)");
    }
}
