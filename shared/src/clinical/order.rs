//! The prescriber's order: who ordered the infusion and for what, the dose and duration, the
//! bag concentrations the formulary allows and the pump rates the prescriber allows.
//!
//! A session starts from an order; every rate the nurse sets afterwards (a start, a change, a
//! resume) is checked against the order's range and the site's limits by [`check_rate_change`].
//! Outside them the rate is refused with the limit named, and only a clinician's override with
//! a reason lets it through: a typed 525 for 52.5 mg/h never reaches the record unnoticed.

use super::{Indication, InfusionLimits, OrderError, check_protocol};

/// The formulary's bag concentrations, mg/mL, unless the site narrows them.
pub const FORMULARY_CONCENTRATION_MG_PER_ML: (f64, f64) = (
    super::MIN_CONCENTRATION_MG_PER_ML,
    super::MAX_CONCENTRATION_MG_PER_ML,
);

/// The prescriber's order for a course or one session.
#[derive(Debug, Clone, PartialEq)]
pub struct PrescriberOrder {
    /// Staff id of the prescriber.
    pub prescriber: String,
    /// What it treats.
    pub indication: Indication,
    /// Dose, mg per kg.
    pub dose_mg_per_kg: f64,
    /// Planned duration, minutes.
    pub minutes: u64,
    /// Lowest and highest bag concentration, mg/mL, within the formulary's.
    pub concentration_mg_per_ml: (f64, f64),
    /// Lowest and highest pump rate the prescriber allows, mg/h.
    pub rate_mg_per_h: (f64, f64),
}

/// How far either side of the planned rate an order allows by default (±25 %): room to slow
/// for nausea or dissociation, not room for a misplaced decimal point.
pub const DEFAULT_RATE_SPREAD: f64 = 0.25;

impl PrescriberOrder {
    /// An order whose rate range is the planned rate ±[`DEFAULT_RATE_SPREAD`] for a patient of
    /// `weight_kg`, checked against the site's limits; the concentration range is the
    /// formulary's.
    pub fn standard(
        prescriber: &str,
        indication: Indication,
        dose_mg_per_kg: f64,
        minutes: u64,
        weight_kg: f64,
        limits: &InfusionLimits,
    ) -> Result<PrescriberOrder, OrderError> {
        let (_, rate) = check_protocol(dose_mg_per_kg, weight_kg, minutes, limits)?;
        let low = round1(rate * (1.0 - DEFAULT_RATE_SPREAD));
        let high = round1(rate * (1.0 + DEFAULT_RATE_SPREAD)).min(limits.max_rate_mg_per_h);
        Ok(PrescriberOrder {
            prescriber: prescriber.to_owned(),
            indication,
            dose_mg_per_kg,
            minutes,
            concentration_mg_per_ml: FORMULARY_CONCENTRATION_MG_PER_ML,
            rate_mg_per_h: (low, high),
        })
    }

    /// Checks that the order itself makes sense: a prescriber named, ranges not empty, the
    /// concentration range inside the formulary's, the rate range under the site's limit.
    pub fn validate(&self, limits: &InfusionLimits) -> Result<(), OrderRefused> {
        if self.prescriber.trim().is_empty() {
            return Err(OrderRefused::NoPrescriber);
        }
        let (cmin, cmax) = self.concentration_mg_per_ml;
        let (fmin, fmax) = FORMULARY_CONCENTRATION_MG_PER_ML;
        if !(cmin.is_finite() && cmax.is_finite() && fmin <= cmin && cmin <= cmax && cmax <= fmax) {
            return Err(OrderRefused::ConcentrationRange {
                min: cmin,
                max: cmax,
            });
        }
        let (rmin, rmax) = self.rate_mg_per_h;
        if !(rmin.is_finite() && rmax.is_finite() && 0.0 < rmin && rmin <= rmax) {
            return Err(OrderRefused::RateRange {
                min: rmin,
                max: rmax,
            });
        }
        if rmax > limits.max_rate_mg_per_h + 1e-9 {
            return Err(OrderRefused::OverSiteLimit {
                rate: rmax,
                limit: limits.max_rate_mg_per_h,
            });
        }
        Ok(())
    }

    /// Checks a bag's concentration against the order's range.
    pub fn check_concentration(&self, mg_per_ml: f64) -> Result<(), OrderRefused> {
        let (min, max) = self.concentration_mg_per_ml;
        if mg_per_ml.is_finite() && (min..=max).contains(&mg_per_ml) {
            Ok(())
        } else {
            Err(OrderRefused::Concentration {
                value: mg_per_ml,
                min,
                max,
            })
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Why an order, or a rate under it, is refused. Each message names the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderRefused {
    /// Nobody is named as prescriber.
    #[error("the order names no prescriber")]
    NoPrescriber,
    /// The order's concentration range is empty or outside the formulary's.
    #[error(
        "the order's concentration range {min}-{max} mg/mL is not within the formulary's {}-{} mg/mL",
        FORMULARY_CONCENTRATION_MG_PER_ML.0,
        FORMULARY_CONCENTRATION_MG_PER_ML.1
    )]
    ConcentrationRange {
        /// Ordered lowest.
        min: f64,
        /// Ordered highest.
        max: f64,
    },
    /// The order's rate range is empty or not positive.
    #[error("the order's rate range {min}-{max} mg/h is empty or not positive")]
    RateRange {
        /// Ordered lowest.
        min: f64,
        /// Ordered highest.
        max: f64,
    },
    /// A bag outside the order's concentrations.
    #[error(
        "concentration {value} mg/mL is outside the order's {min}-{max} mg/mL; check the bag's label"
    )]
    Concentration {
        /// Entered.
        value: f64,
        /// Ordered lowest.
        min: f64,
        /// Ordered highest.
        max: f64,
    },
    /// A rate outside the order's range, without a clinician's override.
    #[error(
        "rate {rate} mg/h is outside the order's {min}-{max} mg/h: a clinician must override with a reason"
    )]
    OutsideOrder {
        /// Entered.
        rate: f64,
        /// Ordered lowest.
        min: f64,
        /// Ordered highest.
        max: f64,
    },
    /// A rate over the site's highest, which no override passes.
    #[error("rate {rate} mg/h is over the site limit of {limit} mg/h")]
    OverSiteLimit {
        /// Entered.
        rate: f64,
        /// The site's highest rate.
        limit: f64,
    },
    /// A rate that is not a number, or negative.
    #[error("rate must be a number of mg/h, 0 or more")]
    NotARate,
    /// An override by someone who is not a clinician.
    #[error("only a clinician may override the order's rate range")]
    NotClinician,
}

/// A clinician's override of the order's rate range: who and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOverride<'a> {
    /// Why (blank is no override).
    pub reason: &'a str,
    /// Whether whoever submitted it is a clinician.
    pub by_clinician: bool,
}

/// What a checked rate needs recorded beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAccepted {
    /// Within the order.
    WithinOrder,
    /// Outside the order's range, passed by a clinician's override (record its reason).
    Overridden,
}

/// Checks a rate set during an infusion (start, change or resume) against the order's range
/// and the site's highest rate. A rate of 0 (a pause) is always allowed. Over the site's limit
/// nothing passes; outside the order only a clinician's override with a reason does.
pub fn check_rate_change(
    rate_mg_per_h: f64,
    order: &PrescriberOrder,
    limits: &InfusionLimits,
    override_: Option<RateOverride<'_>>,
) -> Result<RateAccepted, OrderRefused> {
    if !(rate_mg_per_h.is_finite() && rate_mg_per_h >= 0.0) {
        return Err(OrderRefused::NotARate);
    }
    if rate_mg_per_h > limits.max_rate_mg_per_h + 1e-9 {
        return Err(OrderRefused::OverSiteLimit {
            rate: rate_mg_per_h,
            limit: limits.max_rate_mg_per_h,
        });
    }
    let (min, max) = order.rate_mg_per_h;
    if rate_mg_per_h == 0.0 || (min - 1e-9..=max + 1e-9).contains(&rate_mg_per_h) {
        return Ok(RateAccepted::WithinOrder);
    }
    match override_ {
        Some(o) if !o.reason.trim().is_empty() => {
            if o.by_clinician {
                Ok(RateAccepted::Overridden)
            } else {
                Err(OrderRefused::NotClinician)
            }
        }
        _ => Err(OrderRefused::OutsideOrder {
            rate: rate_mg_per_h,
            min,
            max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> PrescriberOrder {
        // 0.5 mg/kg × 70 kg over 40 min: 35 mg at 52.5 mg/h; ±25 % → 39.4-65.6 mg/h.
        PrescriberOrder::standard(
            "dr-kim",
            Indication::Depression,
            0.5,
            40,
            70.0,
            &InfusionLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_standard_order_is_the_planned_rate_plus_or_minus_a_quarter() {
        let o = order();
        assert_eq!(o.rate_mg_per_h, (39.4, 65.6));
        assert_eq!(o.concentration_mg_per_ml, (0.1, 2.0));
        assert_eq!(o.validate(&InfusionLimits::default()), Ok(()));
    }

    #[test]
    fn rate_changes_worked_examples() {
        let limits = InfusionLimits::default(); // 200 mg/h
        let o = order();
        let clinician = Some(RateOverride {
            reason: "tolerating well, prescriber phoned",
            by_clinician: true,
        });
        let nurse = Some(RateOverride {
            reason: "patient asked",
            by_clinician: false,
        });
        let blank = Some(RateOverride {
            reason: "  ",
            by_clinician: true,
        });
        let outside = |rate| OrderRefused::OutsideOrder {
            rate,
            min: 39.4,
            max: 65.6,
        };
        let table: &[(
            f64,
            Option<RateOverride<'_>>,
            Result<RateAccepted, OrderRefused>,
        )] = &[
            (52.5, None, Ok(RateAccepted::WithinOrder)),
            (40.0, None, Ok(RateAccepted::WithinOrder)),
            (65.6, None, Ok(RateAccepted::WithinOrder)),
            (0.0, None, Ok(RateAccepted::WithinOrder)), // a pause
            (
                525.0,
                None,
                Err(OrderRefused::OverSiteLimit {
                    rate: 525.0,
                    limit: 200.0,
                }),
            ),
            (
                525.0,
                clinician,
                Err(OrderRefused::OverSiteLimit {
                    rate: 525.0,
                    limit: 200.0,
                }),
            ),
            (5.25, None, Err(outside(5.25))),
            (80.0, None, Err(outside(80.0))),
            (80.0, clinician, Ok(RateAccepted::Overridden)),
            (80.0, nurse, Err(OrderRefused::NotClinician)),
            (80.0, blank, Err(outside(80.0))),
            (-1.0, None, Err(OrderRefused::NotARate)),
            (f64::NAN, clinician, Err(OrderRefused::NotARate)),
        ];
        for (rate, o_, want) in table {
            assert_eq!(
                &check_rate_change(*rate, &o, &limits, *o_),
                want,
                "{rate} mg/h"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_limit() {
        let e = check_rate_change(80.0, &order(), &InfusionLimits::default(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rate 80 mg/h is outside the order's 39.4-65.6 mg/h: a clinician must override with a reason"
        );
    }

    #[test]
    fn concentrations_outside_the_order_are_refused() {
        let mut o = order();
        o.concentration_mg_per_ml = (0.4, 1.0);
        assert_eq!(o.check_concentration(0.5), Ok(()));
        for bad in [0.05, 0.39, 1.01, 5.0, f64::NAN] {
            assert!(o.check_concentration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_orders() {
        let limits = InfusionLimits::default();
        let with = |f: &dyn Fn(&mut PrescriberOrder)| {
            let mut o = order();
            f(&mut o);
            o.validate(&limits)
        };
        assert_eq!(
            with(&|o| o.prescriber = " ".into()),
            Err(OrderRefused::NoPrescriber)
        );
        assert!(matches!(
            with(&|o| o.concentration_mg_per_ml = (0.05, 1.0)),
            Err(OrderRefused::ConcentrationRange { .. })
        ));
        assert!(matches!(
            with(&|o| o.concentration_mg_per_ml = (1.0, 0.5)),
            Err(OrderRefused::ConcentrationRange { .. })
        ));
        assert!(matches!(
            with(&|o| o.rate_mg_per_h = (60.0, 50.0)),
            Err(OrderRefused::RateRange { .. })
        ));
        assert_eq!(
            with(&|o| o.rate_mg_per_h = (50.0, 250.0)),
            Err(OrderRefused::OverSiteLimit {
                rate: 250.0,
                limit: 200.0
            })
        );
    }

    #[test]
    fn a_standard_order_never_exceeds_the_site_limit() {
        // 0.75 mg/kg × 100 kg over 40 min is 112.5 mg/h; +25 % would be 140.6 mg/h, but the
        // site's limit of 120 mg/h caps the top of the range.
        let limits = InfusionLimits {
            max_rate_mg_per_h: 120.0,
            ..InfusionLimits::default()
        };
        let o = PrescriberOrder::standard("dr-kim", Indication::Ptsd, 0.75, 40, 100.0, &limits)
            .unwrap();
        assert_eq!(o.rate_mg_per_h, (84.4, 120.0));
        assert_eq!(o.validate(&limits), Ok(()));
    }
}
