//! Clinical calculations of the room screen: the ketamine pump rate and its site limits, the
//! pre-infusion contraindication rules, the modified Aldrete score, the course plan and the
//! plausible range of a birth date, and the clinical vocabulary as types ([`Instrument`],
//! [`ScorePhase`], [`CoursePhase`], [`Severity`], [`StaffRole`], [`Priority`], [`Indication`]).
//! Beside them: the prescriber's order and its rate range ([`order`]), per-flag screening with
//! its staleness ([`screening`]), the suicide-risk screen ([`risk`]), the discharge gate and
//! dispositions ([`discharge`]), the outcome definitions ([`outcomes`]), the timed monitoring
//! checkpoints ([`checkpoints`]) and adverse events apart from expected effects ([`adverse`]).
//!
//! Pure functions over numbers and answers, with worked examples in table tests. Nothing here
//! decides for a clinician: the screen shows the results and records who acted on them. Rules
//! follow DESIGN.md's clinical defaults; a site's medical director may tighten the limits.

#[macro_use]
mod vocab;
pub mod adverse;
pub mod checkpoints;
pub mod discharge;
pub mod order;
pub mod outcomes;
pub mod risk;
pub mod screening;

pub use vocab::{
    CoursePhase, Indication, Instrument, Priority, RATE_SANITY_MAX_MG_PER_H, ScorePhase, Severity,
    StaffRole, UnknownTerm,
};

use crate::doc::CoursePlan;
use std::ops::RangeInclusive;

/// Microseconds in a day.
const DAY_US: i64 = 86_400 * 1_000_000;

// ---------------------------------------------------------------------------------------------
// Pump rate

/// Limits a site puts on an infusion order. The defaults are the usual ketamine protocol for
/// depression (0.5 mg/kg over 40 minutes) with room either side; anything outside needs a
/// different protocol, not a typo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfusionLimits {
    /// Highest dose, mg per kg.
    pub max_dose_mg_per_kg: f64,
    /// Highest total dose of one infusion, mg.
    pub max_total_mg: f64,
    /// Highest pump rate, mg/h.
    pub max_rate_mg_per_h: f64,
    /// Shortest infusion, minutes.
    pub min_minutes: u64,
    /// Longest infusion, minutes.
    pub max_minutes: u64,
}

impl Default for InfusionLimits {
    fn default() -> Self {
        InfusionLimits {
            max_dose_mg_per_kg: 1.0,
            max_total_mg: 150.0,
            max_rate_mg_per_h: 200.0,
            min_minutes: 20,
            max_minutes: 120,
        }
    }
}

impl InfusionLimits {
    /// Checks that the limits make sense: positive, finite, and a duration range that is not
    /// empty. A site configuration with limits that fail this is ignored for the defaults.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64, name: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number"))
            }
        };
        positive(self.max_dose_mg_per_kg, "max_dose_mg_per_kg")?;
        positive(self.max_total_mg, "max_total_mg")?;
        positive(self.max_rate_mg_per_h, "max_rate_mg_per_h")?;
        if self.min_minutes == 0 || self.min_minutes > self.max_minutes {
            return Err("min_minutes must be at least 1 and at most max_minutes".into());
        }
        Ok(())
    }
}

/// An infusion order as the clinician enters it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfusionOrder {
    /// Dose, mg per kg of body weight.
    pub dose_mg_per_kg: f64,
    /// Weight on the day, kg.
    pub weight_kg: f64,
    /// Planned duration, minutes.
    pub minutes: u64,
    /// Concentration of the prepared bag or syringe, mg/mL.
    pub concentration_mg_per_ml: f64,
}

/// What the pump is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpPlan {
    /// Total dose, mg (rounded to 0.1 mg).
    pub total_mg: f64,
    /// Total volume, mL (rounded to 0.1 mL).
    pub volume_ml: f64,
    /// Rate, mg/h (rounded to 0.1).
    pub rate_mg_per_h: f64,
    /// Rate, mL/h (rounded to 0.1), what the pump is programmed with.
    pub rate_ml_per_h: f64,
}

/// The weakest bag concentration accepted by default, mg/mL: below it a typed 0.05 for 0.5
/// gives ten times the pump's mL/h, and the bag runs in as a bolus.
pub const MIN_CONCENTRATION_MG_PER_ML: f64 = 0.1;

/// The strongest bag concentration accepted by default, mg/mL (ketamine for infusion is diluted
/// to 0.5-1 mg/mL; 2 leaves room for a small-volume syringe driver).
pub const MAX_CONCENTRATION_MG_PER_ML: f64 = 2.0;

/// Why an order is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    /// A number is missing, zero, negative or not a number.
    #[error("{field} must be a positive number")]
    NotPositive {
        /// The field.
        field: &'static str,
    },
    /// The weight is outside what a person weighs.
    #[error("weight {0} kg is outside 20-350 kg; check the scale")]
    Weight(f64),
    /// A value is over the site's limit.
    #[error("{what} {value} is over the site limit of {limit}")]
    OverLimit {
        /// What.
        what: &'static str,
        /// The value.
        value: f64,
        /// The limit.
        limit: f64,
    },
    /// The bag's concentration is outside the formulary's range.
    #[error(
        "concentration {value} mg/mL is outside {MIN_CONCENTRATION_MG_PER_ML}-{MAX_CONCENTRATION_MG_PER_ML} mg/mL; check the bag's label"
    )]
    Concentration {
        /// Entered.
        value: f64,
    },
    /// The duration is outside the site's range.
    #[error("duration {minutes} min is outside the site's {min}-{max} min")]
    Duration {
        /// Entered.
        minutes: u64,
        /// Shortest allowed.
        min: u64,
        /// Longest allowed.
        max: u64,
    },
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Total dose and pump rate of an order, checked against `limits`.
///
/// total mg = mg/kg × kg; mg/h = total ÷ hours; mL/h = mg/h ÷ mg/mL. Rounding happens once,
/// at the end, so the rounded rate times the duration gives the rounded total to within 0.1.
pub fn pump_plan(order: &InfusionOrder, limits: &InfusionLimits) -> Result<PumpPlan, OrderError> {
    check_concentration(order.concentration_mg_per_ml)?;
    let (total, rate) =
        check_protocol(order.dose_mg_per_kg, order.weight_kg, order.minutes, limits)?;
    Ok(PumpPlan {
        total_mg: round1(total),
        volume_ml: round1(total / order.concentration_mg_per_ml),
        rate_mg_per_h: round1(rate),
        rate_ml_per_h: round1(rate / order.concentration_mg_per_ml),
    })
}

fn positive(v: f64, field: &'static str) -> Result<(), OrderError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(OrderError::NotPositive { field })
    }
}

fn over(what: &'static str, value: f64, limit: f64) -> Result<(), OrderError> {
    if value > limit + 1e-9 {
        Err(OrderError::OverLimit {
            what,
            value: round1(value),
            limit,
        })
    } else {
        Ok(())
    }
}

/// Checks a protocol (dose, weight, duration) against a site's limits and returns its total
/// dose (mg) and rate (mg/h), unrounded. The recorder checks every session start with this,
/// whichever way the start arrives; the screen's [`pump_plan`] is built on it.
pub fn check_protocol(
    dose_mg_per_kg: f64,
    weight_kg: f64,
    minutes: u64,
    limits: &InfusionLimits,
) -> Result<(f64, f64), OrderError> {
    positive(dose_mg_per_kg, "dose (mg/kg)")?;
    positive(weight_kg, "weight (kg)")?;
    if minutes == 0 {
        return Err(OrderError::NotPositive {
            field: "duration (min)",
        });
    }
    if !(20.0..=350.0).contains(&weight_kg) {
        return Err(OrderError::Weight(weight_kg));
    }
    if !(limits.min_minutes..=limits.max_minutes).contains(&minutes) {
        return Err(OrderError::Duration {
            minutes,
            min: limits.min_minutes,
            max: limits.max_minutes,
        });
    }
    over("dose (mg/kg)", dose_mg_per_kg, limits.max_dose_mg_per_kg)?;
    let total = dose_mg_per_kg * weight_kg;
    over("total dose (mg)", total, limits.max_total_mg)?;
    let rate = total / (minutes as f64 / 60.0);
    over("rate (mg/h)", rate, limits.max_rate_mg_per_h)?;
    Ok((total, rate))
}

/// Checks a bag's concentration against the formulary's range
/// ([`MIN_CONCENTRATION_MG_PER_ML`]-[`MAX_CONCENTRATION_MG_PER_ML`]).
pub fn check_concentration(mg_per_ml: f64) -> Result<(), OrderError> {
    positive(mg_per_ml, "concentration (mg/mL)")?;
    if !(MIN_CONCENTRATION_MG_PER_ML..=MAX_CONCENTRATION_MG_PER_ML).contains(&mg_per_ml) {
        return Err(OrderError::Concentration {
            value: round1(mg_per_ml * 10.0) / 10.0,
        });
    }
    Ok(())
}

/// Checks a pump rate set during an infusion (a start or a rate change) against the site's
/// highest rate: a typed 525 for 52.5 mg/h is refused, not recorded.
pub fn check_rate(rate_mg_per_h: f64, limits: &InfusionLimits) -> Result<(), OrderError> {
    if !(rate_mg_per_h.is_finite() && rate_mg_per_h >= 0.0) {
        return Err(OrderError::NotPositive {
            field: "rate (mg/h)",
        });
    }
    over("rate (mg/h)", rate_mg_per_h, limits.max_rate_mg_per_h)
}

// ---------------------------------------------------------------------------------------------
// Before the start (the screening questions themselves are `screening`'s)

/// Baseline blood pressure above this systolic (mmHg) flags uncontrolled hypertension.
pub const BASELINE_SYSTOLIC_MAX: i64 = 140;
/// Baseline blood pressure above this diastolic (mmHg) flags uncontrolled hypertension.
pub const BASELINE_DIASTOLIC_MAX: i64 = 90;

/// Whether a baseline reading flags uncontrolled hypertension whatever the answer to the
/// question was: above 140/90, either number over its limit.
pub fn high_baseline_bp(systolic: i64, diastolic: i64) -> bool {
    systolic > BASELINE_SYSTOLIC_MAX || diastolic > BASELINE_DIASTOLIC_MAX
}

/// The pre-infusion checklist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreInfusionChecklist {
    /// An escort home is arranged.
    pub escort_arranged: bool,
    /// Informed consent signed.
    pub consent: bool,
    /// Nothing by mouth as instructed.
    pub nothing_by_mouth: bool,
}

impl PreInfusionChecklist {
    /// Items not yet done, as a person reads them.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.escort_arranged {
            out.push("escort arranged");
        }
        if !self.consent {
            out.push("consent");
        }
        if !self.nothing_by_mouth {
            out.push("nothing by mouth");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Modified Aldrete

/// The five items of the modified Aldrete score, each 0-2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aldrete {
    /// 2: moves four limbs; 1: two; 0: none.
    pub activity: u8,
    /// 2: breathes deeply and coughs; 1: dyspnoea or shallow; 0: apnoeic.
    pub respiration: u8,
    /// 2: BP within 20 % of baseline; 1: 20-49 %; 0: 50 % or more off.
    pub circulation: u8,
    /// 2: fully awake; 1: rousable on calling; 0: not responding.
    pub consciousness: u8,
    /// 2: SpO2 > 92 % on room air; 1: needs oxygen to stay > 90 %; 0: < 90 % even with oxygen.
    pub oxygen_saturation: u8,
}

/// Systolic pressures a reading can have, mmHg: outside this the cuff or the typing is wrong.
pub const SYSTOLIC_RANGE: RangeInclusive<i64> = 50..=300;

/// Diastolic pressures a reading can have, mmHg.
pub const DIASTOLIC_RANGE: RangeInclusive<i64> = 20..=200;

/// Checks a blood-pressure reading as typed: each number in its range and the diastolic under
/// the systolic.
pub fn check_bp(systolic: i64, diastolic: i64) -> Result<(), String> {
    if SYSTOLIC_RANGE.contains(&systolic)
        && DIASTOLIC_RANGE.contains(&diastolic)
        && diastolic < systolic
    {
        Ok(())
    } else {
        Err(format!(
            "blood pressure {systolic}/{diastolic} is out of range (systolic {}-{}, diastolic {}-{} and under it); measure again",
            SYSTOLIC_RANGE.start(),
            SYSTOLIC_RANGE.end(),
            DIASTOLIC_RANGE.start(),
            DIASTOLIC_RANGE.end()
        ))
    }
}

/// Lowest modified Aldrete total for discharge (DESIGN.md).
pub const ALDRETE_DISCHARGE_MIN: u8 = 9;

/// Oldest monitor reading the discharge page suggests an Aldrete item from, µs: a cuff
/// reading from the start of the infusion says nothing about the patient leaving now.
pub const ALDRETE_READING_MAX_AGE_US: i64 = 10 * 60 * 1_000_000;

impl Aldrete {
    /// The items in the order they are stored (activity, respiration, circulation,
    /// consciousness, oxygen saturation); `None` unless there are five, each 0-2.
    pub fn from_items(items: &[i64]) -> Option<Aldrete> {
        let item = |i: usize| {
            items
                .get(i)
                .and_then(|&v| u8::try_from(v).ok())
                .filter(|&v| v <= 2)
        };
        if items.len() != 5 {
            return None;
        }
        Some(Aldrete {
            activity: item(0)?,
            respiration: item(1)?,
            circulation: item(2)?,
            consciousness: item(3)?,
            oxygen_saturation: item(4)?,
        })
    }

    /// The items in the order [`Aldrete::from_items`] reads them.
    pub fn items(&self) -> [i64; 5] {
        [
            self.activity,
            self.respiration,
            self.circulation,
            self.consciousness,
            self.oxygen_saturation,
        ]
        .map(i64::from)
    }

    /// The total, 0-10; `None` when an item is outside 0-2.
    pub fn total(&self) -> Option<u8> {
        let items = [
            self.activity,
            self.respiration,
            self.circulation,
            self.consciousness,
            self.oxygen_saturation,
        ];
        items.iter().all(|&i| i <= 2).then(|| items.iter().sum())
    }

    /// Whether the score allows discharge.
    pub fn allows_discharge(&self) -> bool {
        self.total().is_some_and(|t| t >= ALDRETE_DISCHARGE_MIN)
    }
}

/// The circulation item from the systolic pressure before the infusion and now: within 20 %
/// of baseline scores 2, 20 % up to 50 % scores 1, 50 % or more scores 0.
pub fn aldrete_circulation(baseline_systolic: i64, current_systolic: i64) -> u8 {
    if baseline_systolic <= 0 {
        return 0;
    }
    // Integer percentages, so 20 % exactly is the boundary whatever floating point says.
    let off_pct_x100 = (current_systolic - baseline_systolic).abs() * 10_000 / baseline_systolic;
    match off_pct_x100 {
        x if x <= 2_000 => 2,
        x if x < 5_000 => 1,
        _ => 0,
    }
}

/// The oxygen-saturation item from SpO2 (%) and whether the patient is on oxygen.
pub fn aldrete_oxygen(spo2_pct: i64, on_oxygen: bool) -> u8 {
    match (spo2_pct, on_oxygen) {
        (s, false) if s > 92 => 2,
        (s, _) if s >= 90 => 1,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Course

/// Where a patient's course stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourseStatus {
    /// Infusions done.
    pub done: u64,
    /// Infusions planned in the induction.
    pub planned: u64,
    /// `induction` or `maintenance`.
    pub phase: &'static str,
    /// Week of the induction the next infusion falls in (1-based), while in induction.
    pub week: Option<u64>,
    /// Earliest day the next infusion is due, µs (start of that day is not implied: it is
    /// the instant of the last infusion plus the gap).
    pub next_due_us: Option<i64>,
}

/// Whether a session counts as an infusion done: completed, that is discharged home after a
/// dose that ran. Planned, in-progress and aborted sessions (an EMS transfer, a patient who
/// left against advice, a start refused) do not. The one definition the room screen, the
/// dashboard, the course status and the reports all use.
pub fn infusion_done(state: crate::doc::SessionState) -> bool {
    state == crate::doc::SessionState::Completed
}

/// How many infusions a course's induction plans: the planned count, or the weekly schedule's
/// sum when that is more. The one planned count the room screen and the dashboard use.
pub fn planned_infusions(plan: &CoursePlan) -> u64 {
    plan.per_week
        .iter()
        .sum::<u64>()
        .max(plan.infusions_planned)
}

/// Days between maintenance infusions once the induction is complete, unless the patient's
/// plan says otherwise.
pub const DEFAULT_MAINTENANCE_INTERVAL_DAYS: u64 = 28;

/// The maintenance intervals a plan may set, days.
pub const MAINTENANCE_INTERVAL_RANGE: RangeInclusive<u64> = 7..=180;

/// The plan's maintenance interval in days, within [`MAINTENANCE_INTERVAL_RANGE`].
fn maintenance_days(plan: &CoursePlan) -> i64 {
    let days = plan.maintenance_interval_days.clamp(
        *MAINTENANCE_INTERVAL_RANGE.start(),
        *MAINTENANCE_INTERVAL_RANGE.end(),
    );
    i64::try_from(days).unwrap_or(28)
}

/// The course's status from its plan and the start times of the infusions done (any order).
///
/// Induction week *k* (0-based) begins 7·k days after the first infusion and holds
/// `per_week[k]` infusions, spaced `7 / per_week[k]` days apart (whole days, at least one).
/// The next infusion is due at the later of the last one plus that spacing and the start of
/// its week. After the planned count, maintenance: every `maintenance_interval_days` of the
/// plan (kept within [`MAINTENANCE_INTERVAL_RANGE`]).
pub fn course_status(plan: &CoursePlan, done_us: &[i64]) -> CourseStatus {
    let mut done_sorted = done_us.to_vec();
    done_sorted.sort_unstable();
    let done = done_sorted.len() as u64;
    let planned = planned_infusions(plan);
    let (Some(&first), Some(&last)) = (done_sorted.first(), done_sorted.last()) else {
        return CourseStatus {
            done,
            planned,
            phase: "induction",
            week: Some(1),
            next_due_us: None,
        };
    };
    if done >= planned || plan.phase == "maintenance" {
        return CourseStatus {
            done,
            planned,
            phase: "maintenance",
            week: None,
            next_due_us: Some(last + maintenance_days(plan) * DAY_US),
        };
    }
    // The week in which infusion number `done` (0-based) falls.
    let mut cumulative = 0;
    let mut week = plan.per_week.len().saturating_sub(1);
    let mut per_week = plan.per_week.last().copied().unwrap_or(1);
    for (k, &n) in plan.per_week.iter().enumerate() {
        cumulative += n;
        if done < cumulative {
            week = k;
            per_week = n;
            break;
        }
    }
    let gap_days = (7 / per_week.max(1)).max(1) as i64;
    let week_start = first + 7 * week as i64 * DAY_US;
    CourseStatus {
        done,
        planned,
        phase: "induction",
        week: Some(week as u64 + 1),
        next_due_us: Some((last + gap_days * DAY_US).max(week_start)),
    }
}

// ---------------------------------------------------------------------------------------------
// Birth dates

/// The earliest birth date accepted, `(year, month, day)`: no patient alive today was born
/// before it, and a date before it is a typo in the year.
pub const EARLIEST_BIRTH_DATE: (i32, u8, u8) = (1900, 1, 1);

/// Why a birth date is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BirthDateError {
    /// The text is not `YYYY-MM-DD`.
    #[error("birth date {0:?} is not a date written YYYY-MM-DD")]
    Format(String),
    /// The calendar has no such day (a 13th month, 31 February, 29 February of a common year).
    #[error("birth date {0:?} is not a day of the calendar; check the month and day")]
    NoSuchDay(String),
    /// Before [`EARLIEST_BIRTH_DATE`] or after today.
    #[error("birth date {date:?} is outside 1900-01-01 to today ({today}); check the year")]
    OutOfRange {
        /// The date as given.
        date: String,
        /// Today, `YYYY-MM-DD`.
        today: String,
    },
}

/// Checks a birth date as typed (`YYYY-MM-DD`): a real day of the calendar, from
/// [`EARLIEST_BIRTH_DATE`] to `today` (`(year, month, day)`, the caller's clock) inclusive.
pub fn check_birth_date(date: &str, today: (i32, u8, u8)) -> Result<(), BirthDateError> {
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let year = date.get(0..4).and_then(|p| p.parse::<u16>().ok());
    let month = date.get(5..7).and_then(|p| p.parse::<u8>().ok());
    let day = date.get(8..10).and_then(|p| p.parse::<u8>().ok());
    let (Some(year), Some(month), Some(day), true) = (year, month, day, shape) else {
        return Err(BirthDateError::Format(date.to_owned()));
    };
    let year = i32::from(year);
    // Two digits each: month and day fit an i8; jiff knows the calendar.
    let real_day = i16::try_from(year)
        .is_ok_and(|y| jiff::civil::Date::new(y, month as i8, day as i8).is_ok());
    if !real_day {
        return Err(BirthDateError::NoSuchDay(date.to_owned()));
    }
    let ymd = (year, month, day);
    if ymd < EARLIEST_BIRTH_DATE || ymd > today {
        return Err(BirthDateError::OutOfRange {
            date: date.to_owned(),
            today: format!("{:04}-{:02}-{:02}", today.0, today.1, today.2),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Delivered dose

/// One stretch of the pump running at one rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DoseSegment {
    /// From, µs.
    pub from_us: i64,
    /// To, µs.
    pub to_us: i64,
    /// The rate, mg/h.
    pub rate_mg_per_h: f64,
    /// What ran in, mg.
    pub mg: f64,
}

/// What an infusion delivered, worked out from its dose timeline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delivered {
    /// The stretches the pump ran, in time order (a pause or a rate change starts a new one).
    pub segments: Vec<DoseSegment>,
    /// Time the pump ran, µs.
    pub infused_us: i64,
    /// Dose delivered, mg.
    pub mg: f64,
}

impl Delivered {
    fn run(&mut self, from_us: i64, to_us: i64, rate_mg_per_h: f64) {
        if to_us > from_us && rate_mg_per_h > 0.0 {
            let mg = rate_mg_per_h * (to_us - from_us) as f64 / 3_600_000_000.0;
            self.segments.push(DoseSegment {
                from_us,
                to_us,
                rate_mg_per_h,
                mg,
            });
            self.infused_us += to_us - from_us;
            self.mg += mg;
        }
    }
}

/// Whether the infusion is over as far as discharge is concerned: no dose was ever started, or
/// the latest dose event is a `stop`. A patient is not discharged with the pump running or
/// paused.
pub fn infusion_stopped(events: &[crate::doc::DoseEvent]) -> bool {
    events
        .iter()
        .max_by_key(|e| e.at_us)
        .is_none_or(|e| e.action == crate::doc::DoseAction::Stop)
}

/// The dose delivered by a timeline of dose events: the integral of the pump rate over the
/// time it ran. A `start` or `resume` runs the pump (at its rate, or the last one known), a
/// `rate_change` changes the rate (running nothing while the pump is paused), `pause` and
/// `stop` halt it. A pump still running at `end_us` (an abort without a stop, or an infusion in
/// progress) counts until then. Events are taken in time order, ties in their given order; a
/// rate that is not a finite number of at least zero is ignored.
pub fn delivered(events: &[crate::doc::DoseEvent], end_us: i64) -> Delivered {
    use crate::doc::DoseAction;
    let mut sorted: Vec<&crate::doc::DoseEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_us);
    let mut out = Delivered::default();
    let mut rate = 0.0_f64;
    let mut running_since: Option<i64> = None;
    for e in sorted {
        let was_running = running_since.take();
        if let Some(from) = was_running {
            out.run(from, e.at_us, rate);
        }
        if let Some(r) = e.rate_mg_per_h.filter(|r| r.is_finite() && *r >= 0.0) {
            rate = r;
        }
        running_since = match e.action {
            DoseAction::Start | DoseAction::Resume => Some(e.at_us),
            DoseAction::RateChange => was_running.map(|_| e.at_us),
            DoseAction::Pause | DoseAction::Stop => None,
        };
    }
    if let Some(from) = running_since {
        out.run(from, end_us.max(from), rate);
    }
    out
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // reason: the worked-example tables read best as tuples
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_session_is_an_infusion_done() {
        use crate::doc::SessionState::*;
        for (state, done) in [
            (Planned, false),
            (InProgress, false),
            (Completed, true),
            (Aborted, false),
        ] {
            assert_eq!(infusion_done(state), done, "{state:?}");
        }
    }

    fn order(dose: f64, kg: f64, minutes: u64, conc: f64) -> InfusionOrder {
        InfusionOrder {
            dose_mg_per_kg: dose,
            weight_kg: kg,
            minutes,
            concentration_mg_per_ml: conc,
        }
    }

    /// Worked examples: (mg/kg, kg, min, mg/mL) → (total mg, mL, mg/h, mL/h).
    #[test]
    fn pump_rate_worked_examples() {
        let cases: &[((f64, f64, u64, f64), (f64, f64, f64, f64))] = &[
            // 0.5 mg/kg × 70 kg = 35 mg over 40 min = 52.5 mg/h; 0.5 mg/mL → 70 mL, 105 mL/h.
            ((0.5, 70.0, 40, 0.5), (35.0, 70.0, 52.5, 105.0)),
            // 0.5 × 80 = 40 mg over 40 min = 60 mg/h; 1 mg/mL → 40 mL, 60 mL/h.
            ((0.5, 80.0, 40, 1.0), (40.0, 40.0, 60.0, 60.0)),
            // 0.75 × 92.4 = 69.3 mg over 45 min = 92.4 mg/h; 1 mg/mL.
            ((0.75, 92.4, 45, 1.0), (69.3, 69.3, 92.4, 92.4)),
            // 1.0 × 60 = 60 mg over 60 min = 60 mg/h; 2 mg/mL → 30 mL, 30 mL/h.
            ((1.0, 60.0, 60, 2.0), (60.0, 30.0, 60.0, 30.0)),
            // 0.5 × 55 = 27.5 mg over 40 min = 41.25 mg/h → 41.3; 0.5 mg/mL → 82.5 mL/h.
            ((0.5, 55.0, 40, 0.5), (27.5, 55.0, 41.3, 82.5)),
            // 0.5 × 72.5 = 36.25 mg over 50 min = 43.5 mg/h; 0.25 mg/mL → 145 mL, 174 mL/h.
            ((0.5, 72.5, 50, 0.25), (36.3, 145.0, 43.5, 174.0)),
        ];
        for &((dose, kg, min, conc), (total, ml, mgh, mlh)) in cases {
            let p = pump_plan(&order(dose, kg, min, conc), &InfusionLimits::default())
                .unwrap_or_else(|e| panic!("{dose} mg/kg {kg} kg {min} min: {e}"));
            assert_eq!(
                (p.total_mg, p.volume_ml, p.rate_mg_per_h, p.rate_ml_per_h),
                (total, ml, mgh, mlh),
                "{dose} mg/kg × {kg} kg over {min} min at {conc} mg/mL"
            );
        }
    }

    #[test]
    fn pump_orders_outside_limits_are_refused() {
        let limits = InfusionLimits::default();
        let cases: &[(InfusionOrder, &str)] = &[
            (order(0.0, 70.0, 40, 1.0), "dose (mg/kg) must be a positive"),
            (
                order(0.5, f64::NAN, 40, 1.0),
                "weight (kg) must be a positive",
            ),
            (order(0.5, 70.0, 40, 0.0), "concentration"),
            (
                order(0.5, 70.0, 40, 0.05),
                "concentration 0.05 mg/mL is outside 0.1-2 mg/mL",
            ),
            (
                order(0.5, 70.0, 40, 5.0),
                "concentration 5 mg/mL is outside",
            ),
            (order(0.5, 70.0, 0, 1.0), "duration (min) must be"),
            (order(0.5, 7.0, 40, 1.0), "weight 7 kg"),
            (
                order(1.5, 70.0, 40, 1.0),
                "dose (mg/kg) 1.5 is over the site limit of 1",
            ),
            (
                order(1.0, 160.0, 60, 1.0),
                "total dose (mg) 160 is over the site limit of 150",
            ),
            (
                order(1.0, 140.0, 40, 1.0),
                "rate (mg/h) 210 is over the site limit of 200",
            ),
            (
                order(0.5, 70.0, 10, 1.0),
                "duration 10 min is outside the site's 20-120 min",
            ),
        ];
        for (o, expected) in cases {
            let err = pump_plan(o, &limits).unwrap_err().to_string();
            assert!(err.contains(expected), "{o:?}: {err:?} lacks {expected:?}");
        }
        // Exactly at a limit is allowed.
        assert!(pump_plan(&order(1.0, 150.0, 60, 1.0), &limits).is_ok());
        // A site's stricter limits apply.
        let strict = InfusionLimits {
            max_dose_mg_per_kg: 0.4,
            ..limits
        };
        assert!(strict.validate().is_ok());
        let err = pump_plan(&order(0.5, 70.0, 40, 1.0), &strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dose (mg/kg) 0.5 is over the site limit of 0.4"
        );
        for bad in [
            InfusionLimits {
                max_total_mg: 0.0,
                ..limits
            },
            InfusionLimits {
                max_rate_mg_per_h: f64::NAN,
                ..limits
            },
            InfusionLimits {
                min_minutes: 90,
                max_minutes: 60,
                ..limits
            },
            InfusionLimits {
                min_minutes: 0,
                ..limits
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    /// "Above 140/90" means either number above its limit.
    #[test]
    fn a_high_baseline_is_either_number_over_its_limit() {
        for (sys, dia, high) in [
            (120, 80, false),
            (140, 90, false),
            (141, 80, true),
            (120, 91, true),
            (150, 95, true),
        ] {
            assert_eq!(high_baseline_bp(sys, dia), high, "{sys}/{dia}");
        }
    }

    #[test]
    fn aldrete_items_round_trip_and_anything_else_is_refused() {
        let a = Aldrete::from_items(&[2, 2, 1, 2, 2]).unwrap();
        assert_eq!(a.circulation, 1);
        assert_eq!(a.items(), [2, 2, 1, 2, 2]);
        assert_eq!(a.total(), Some(9));
        for bad in [
            &[2, 2, 2, 2][..],
            &[2, 2, 2, 2, 2, 2],
            &[2, 2, 3, 2, 2],
            &[2, -1, 2, 2, 2],
        ] {
            assert_eq!(Aldrete::from_items(bad), None, "{bad:?}");
        }
    }

    /// Worked examples of the modified Aldrete score.
    #[test]
    fn aldrete_worked_examples() {
        let a = |activity, respiration, circulation, consciousness, oxygen_saturation| Aldrete {
            activity,
            respiration,
            circulation,
            consciousness,
            oxygen_saturation,
        };
        let cases = [
            (a(2, 2, 2, 2, 2), Some(10), true),
            (a(2, 2, 2, 1, 2), Some(9), true),
            (a(2, 2, 1, 1, 2), Some(8), false),
            (a(1, 1, 1, 1, 1), Some(5), false),
            (a(0, 0, 0, 0, 0), Some(0), false),
            (a(3, 2, 2, 2, 2), None, false),
        ];
        for (items, total, discharge) in cases {
            assert_eq!(items.total(), total, "{items:?}");
            assert_eq!(items.allows_discharge(), discharge, "{items:?}");
        }
        // Circulation from the systolic pressure: (baseline, now) → item.
        let circulation = [
            (120, 120, 2),
            (120, 144, 2), // +20 % exactly
            (120, 96, 2),  // -20 % exactly
            (120, 145, 1),
            (120, 179, 1), // +49.2 %
            (120, 180, 0), // +50 %
            (120, 59, 0),
            (0, 120, 0),
        ];
        for (baseline, now, item) in circulation {
            assert_eq!(
                aldrete_circulation(baseline, now),
                item,
                "{baseline} → {now}"
            );
        }
        // Oxygen: (SpO2, on oxygen) → item.
        let oxygen = [
            (98, false, 2),
            (93, false, 2),
            (92, false, 1),
            (95, true, 1),
            (90, true, 1),
            (89, true, 0),
            (85, false, 0),
        ];
        for (spo2, o2, item) in oxygen {
            assert_eq!(aldrete_oxygen(spo2, o2), item, "{spo2} % on oxygen {o2}");
        }
    }

    #[test]
    fn course_plan_examples() {
        let plan = CoursePlan::default(); // 6 over 3 weeks, 3/2/1
        let d = |days: i64| days * DAY_US;
        // (days of infusions done) → (done, phase, week, next due day)
        let cases: &[(&[i64], u64, &str, Option<u64>, Option<i64>)] = &[
            (&[], 0, "induction", Some(1), None),
            (&[0], 1, "induction", Some(1), Some(2)),
            (&[0, 2], 2, "induction", Some(1), Some(4)),
            // Third done on day 4: the fourth falls in week 2 (from day 7), twice a week.
            (&[0, 2, 4], 3, "induction", Some(2), Some(7)),
            (&[0, 2, 4, 7], 4, "induction", Some(2), Some(10)),
            // Sixth falls in week 3 (from day 14), once a week.
            (&[0, 2, 4, 7, 10], 5, "induction", Some(3), Some(17)),
            // A late fifth infusion pushes the sixth.
            (&[0, 2, 4, 7, 16], 5, "induction", Some(3), Some(23)),
            (&[0, 2, 4, 7, 10, 17], 6, "maintenance", None, Some(17 + 28)),
            // Order does not matter.
            (&[4, 0, 2], 3, "induction", Some(2), Some(7)),
        ];
        for (days, done, phase, week, next) in cases {
            let times: Vec<i64> = days.iter().map(|&x| d(x)).collect();
            let s = course_status(&plan, &times);
            assert_eq!(
                (s.done, s.phase, s.week, s.next_due_us),
                (*done, *phase, *week, next.map(d)),
                "{days:?}"
            );
            assert_eq!(s.planned, 6);
        }
        // The patient's own maintenance interval, kept within 7-180 days.
        let done: Vec<i64> = [0, 2, 4, 7, 10, 17].iter().map(|&x| d(x)).collect();
        for (interval, next) in [(14, 17 + 14), (3, 17 + 7), (400, 17 + 180)] {
            let plan = CoursePlan {
                maintenance_interval_days: interval,
                ..CoursePlan::default()
            };
            assert_eq!(
                course_status(&plan, &done).next_due_us,
                Some(d(next)),
                "{interval}"
            );
        }
    }

    #[test]
    fn birth_dates_are_real_days_from_1900_to_today() {
        let today = (2026, 12, 3);
        let cases: [(&str, Option<&str>); 22] = [
            ("1980-12-10", None),
            ("1900-01-01", None),
            ("2026-12-03", None),
            ("2000-02-29", None),
            ("2024-02-29", None),
            ("1999-12-31", None),
            ("1899-12-31", Some("outside")),
            ("2026-12-04", Some("outside")),
            ("9999-12-31", Some("outside")),
            ("0000-01-01", Some("outside")),
            ("0000-02-31", Some("not a day")),
            ("1900-02-29", Some("not a day")),
            ("2023-02-29", Some("not a day")),
            ("1980-04-31", Some("not a day")),
            ("1980-13-01", Some("not a day")),
            ("1980-00-10", Some("not a day")),
            ("1980-01-00", Some("not a day")),
            ("1980-1-10", Some("YYYY-MM-DD")),
            ("10/12/1980", Some("YYYY-MM-DD")),
            ("1980-12-10T00:00", Some("YYYY-MM-DD")),
            ("", Some("YYYY-MM-DD")),
            ("１９８０-12-10", Some("YYYY-MM-DD")),
        ];
        for (date, expected) in cases {
            match (check_birth_date(date, today), expected) {
                (Ok(()), None) => {}
                (Err(e), Some(words)) => {
                    assert!(e.to_string().contains(words), "{date:?}: {e}");
                }
                (got, expected) => panic!("{date:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    fn dose(
        at_min: i64,
        action: crate::doc::DoseAction,
        rate: Option<f64>,
    ) -> crate::doc::DoseEvent {
        crate::doc::DoseEvent {
            id: format!("d{at_min}"),
            at_us: at_min * 60_000_000,
            action,
            rate_mg_per_h: rate,
            by: "nurse-ana".into(),
        }
    }

    #[test]
    fn discharge_waits_for_the_stop() {
        use crate::doc::DoseAction::{Pause, Start, Stop};
        let cases: &[(&str, Vec<crate::doc::DoseEvent>, bool)] = &[
            ("never started", vec![], true),
            ("running", vec![dose(0, Start, Some(52.5))], false),
            (
                "paused",
                vec![dose(0, Start, Some(52.5)), dose(9, Pause, None)],
                false,
            ),
            (
                "stopped",
                vec![dose(0, Start, Some(52.5)), dose(40, Stop, None)],
                true,
            ),
            (
                "the stop recorded first, the start later in time",
                vec![dose(40, Stop, None), dose(50, Start, Some(52.5))],
                false,
            ),
        ];
        for (what, events, expected) in cases {
            assert_eq!(infusion_stopped(events), *expected, "{what}");
        }
    }

    /// Worked examples: a timeline (minutes, action, mg/h) and the session's end (min) →
    /// (minutes the pump ran, mg delivered, segments).
    #[test]
    fn delivered_dose_worked_examples() {
        use crate::doc::DoseAction::{Pause, RateChange, Resume, Start, Stop};
        let cases: &[(&str, Vec<crate::doc::DoseEvent>, i64, (f64, f64, usize))] = &[
            (
                "as planned: 52.5 mg/h for 40 min = 35 mg",
                vec![dose(0, Start, Some(52.5)), dose(40, Stop, None)],
                55,
                (40.0, 35.0, 1),
            ),
            (
                "a 10-minute pause: still 40 min running, 35 mg",
                vec![
                    dose(0, Start, Some(52.5)),
                    dose(15, Pause, None),
                    dose(25, Resume, None),
                    dose(50, Stop, None),
                ],
                60,
                (40.0, 35.0, 2),
            ),
            (
                "a rate change: 20 min at 60 then 20 min at 30 = 20 + 10 mg",
                vec![
                    dose(0, Start, Some(60.0)),
                    dose(20, RateChange, Some(30.0)),
                    dose(40, Stop, None),
                ],
                45,
                (40.0, 30.0, 2),
            ),
            (
                "stopped before plan at 20 min: 17.5 mg",
                vec![dose(0, Start, Some(52.5)), dose(20, Stop, None)],
                40,
                (20.0, 17.5, 1),
            ),
            (
                "aborted without a stop at 24 min: counted to the session's end, 21 mg",
                vec![dose(0, Start, Some(52.5))],
                24,
                (24.0, 21.0, 1),
            ),
            (
                "a rate changed while paused runs nothing until the resume",
                vec![
                    dose(0, Start, Some(60.0)),
                    dose(10, Pause, None),
                    dose(15, RateChange, Some(30.0)),
                    dose(20, Resume, None),
                    dose(40, Stop, None),
                ],
                40,
                (30.0, 20.0, 2),
            ),
            (
                "events given out of order are taken in time order",
                vec![dose(40, Stop, None), dose(0, Start, Some(52.5))],
                40,
                (40.0, 35.0, 1),
            ),
            (
                "a start without a rate delivers nothing that can be counted",
                vec![dose(0, Start, None), dose(40, Stop, None)],
                40,
                (0.0, 0.0, 0),
            ),
            ("no events: nothing", vec![], 40, (0.0, 0.0, 0)),
        ];
        for (what, events, end_min, (minutes, mg, segments)) in cases {
            let d = delivered(events, end_min * 60_000_000);
            assert_eq!(
                (
                    d.infused_us as f64 / 60_000_000.0,
                    (d.mg * 1000.0).round() / 1000.0,
                    d.segments.len()
                ),
                (*minutes, *mg, *segments),
                "{what}"
            );
            let sum: f64 = d.segments.iter().map(|s| s.mg).sum();
            assert!(
                (sum - d.mg).abs() < 1e-9,
                "{what}: segments sum to the total"
            );
        }
    }
}
