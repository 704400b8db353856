//! Suicide-risk screening before each infusion: the PHQ-9 item by item (item 9 asks about
//! thoughts of self-harm) and the C-SSRS screener. A positive answer blocks the start until a
//! clinician records an assessment and a decision; a high-risk answer goes on the clinicians'
//! and managers' attention list.

/// The PHQ-9's nine items as a screen shows them ("over the last two weeks, how often have
/// you been bothered by …"), each answered 0 (not at all) to 3 (nearly every day).
pub const PHQ9_ITEMS: [&str; 9] = [
    "Little interest or pleasure in doing things",
    "Feeling down, depressed or hopeless",
    "Trouble falling or staying asleep, or sleeping too much",
    "Feeling tired or having little energy",
    "Poor appetite or overeating",
    "Feeling bad about yourself, or that you are a failure",
    "Trouble concentrating",
    "Moving or speaking slowly, or being fidgety or restless",
    "Thoughts that you would be better off dead, or of hurting yourself",
];

/// The answers to a PHQ-9 item, 0-3, as people read them.
pub const PHQ9_ANSWERS: [&str; 4] = [
    "not at all",
    "several days",
    "more than half the days",
    "nearly every day",
];

/// The C-SSRS screener's six questions ("since your last visit …"), in [`Cssrs`]'s order.
pub const CSSRS_QUESTIONS: [&str; 6] = [
    "Wished you were dead or could go to sleep and not wake up?",
    "Had any actual thoughts of killing yourself?",
    "Thought about how you might do this?",
    "Had any intention of acting on these thoughts?",
    "Started to work out the details of how to kill yourself, and intend to carry out the plan?",
    "Done anything, started to do anything, or prepared to do anything to end your life?",
];

/// A PHQ-9 as answered: nine items, each 0 (not at all) to 3 (nearly every day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phq9Items(pub [u8; 9]);

/// Why a set of PHQ-9 answers is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PHQ-9 item {item} is {value}; every item is 0-3")]
pub struct Phq9ItemError {
    /// The item, 1-9.
    pub item: usize,
    /// What was given.
    pub value: u8,
}

impl Phq9Items {
    /// Checks every item is 0-3.
    pub fn check(&self) -> Result<(), Phq9ItemError> {
        match self.0.iter().position(|&v| v > 3) {
            Some(i) => Err(Phq9ItemError {
                item: i + 1,
                value: self.0[i],
            }),
            None => Ok(()),
        }
    }

    /// The total, 0-27.
    pub fn total(&self) -> i64 {
        self.0.iter().map(|&v| i64::from(v)).sum()
    }

    /// Item 9: thoughts that you would be better off dead or of hurting yourself.
    pub fn item9(&self) -> u8 {
        self.0[8]
    }
}

/// The C-SSRS screener's six questions (the "since last visit" form): yes or no each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cssrs {
    /// 1. Wished you were dead or could go to sleep and not wake up?
    pub wish_dead: bool,
    /// 2. Had any actual thoughts of killing yourself?
    pub thoughts: bool,
    /// 3. Thought about how you might do this?
    pub method: bool,
    /// 4. Had any intention of acting on these thoughts?
    pub intent: bool,
    /// 5. Started to work out or worked out the details of how to kill yourself, and intend
    ///    to carry out this plan?
    pub plan: bool,
    /// 6. Done anything, started to do anything, or prepared to do anything to end your life?
    pub behaviour: bool,
}

/// The level a screening points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskLevel {
    /// No positive answer.
    None,
    /// A wish to be dead, passive thoughts, or PHQ-9 item 9 above zero: a clinician assesses
    /// before the infusion.
    Low,
    /// Active thoughts with a method.
    Moderate,
    /// Intent, a plan or recent behaviour: the C-SSRS's high-risk answers.
    High,
}

impl RiskLevel {
    /// The stable name in documents.
    pub fn code(self) -> &'static str {
        match self {
            RiskLevel::None => "none",
            RiskLevel::Low => "low",
            RiskLevel::Moderate => "moderate",
            RiskLevel::High => "high",
        }
    }
}

/// The level of a check-in's answers: the C-SSRS's highest positive answer, and PHQ-9 item 9
/// above zero as at least low.
pub fn risk_level(phq9: Option<&Phq9Items>, cssrs: &Cssrs) -> RiskLevel {
    let from_cssrs = if cssrs.intent || cssrs.plan || cssrs.behaviour {
        RiskLevel::High
    } else if cssrs.method {
        RiskLevel::Moderate
    } else if cssrs.wish_dead || cssrs.thoughts {
        RiskLevel::Low
    } else {
        RiskLevel::None
    };
    let from_phq9 = match phq9 {
        Some(p) if p.item9() > 0 => RiskLevel::Low,
        _ => RiskLevel::None,
    };
    from_cssrs.max(from_phq9)
}

/// How long a screen counts for the start, µs (12 hours): the screen is asked at each visit's
/// check-in, before each infusion, never carried over from the last one.
pub const SCREEN_VALID_US: i64 = 12 * 3_600 * 1_000_000;

/// A clinician's decision after assessing a positive screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskDecision {
    /// Safe to proceed with today's infusion.
    Proceed,
    /// Not today; the infusion is deferred.
    Defer,
    /// Referred for urgent care; no infusion.
    Refer,
}

impl RiskDecision {
    /// The stable name in documents.
    pub fn code(self) -> &'static str {
        match self {
            RiskDecision::Proceed => "proceed",
            RiskDecision::Defer => "defer",
            RiskDecision::Refer => "refer",
        }
    }

    /// The decision named `code`.
    pub fn parse(code: &str) -> Option<RiskDecision> {
        [
            RiskDecision::Proceed,
            RiskDecision::Defer,
            RiskDecision::Refer,
        ]
        .into_iter()
        .find(|d| d.code() == code)
    }
}

/// A clinician's assessment of a positive screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskAssessment {
    /// When, µs.
    pub at_us: i64,
    /// Whether the assessor is a clinician on the site's staff list.
    pub by_clinician: bool,
    /// What they decided.
    pub decision: RiskDecision,
    /// Their note.
    pub note: String,
}

/// Why the start is blocked by the risk screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RiskBlock {
    /// The screen was not done at this check-in.
    #[error("the suicide-risk screen (PHQ-9 item 9 and C-SSRS) has not been done at this check-in")]
    NotScreened,
    /// A positive answer and no clinician's assessment since.
    #[error(
        "a positive suicide-risk answer ({level}) needs a clinician's assessment before the start"
    )]
    NeedsAssessment {
        /// The level.
        level: &'static str,
    },
    /// The clinician decided against today's infusion.
    #[error("the clinician's assessment decided: {decision}; no infusion today")]
    Declined {
        /// The decision.
        decision: &'static str,
    },
}

/// Whether the infusion may start as far as suicide risk goes. `screened_us` is when this
/// check-in's answers were taken (`None`: not screened); an assessment counts only if made by
/// a clinician after the answers.
pub fn risk_gate(
    screened_us: Option<i64>,
    level: RiskLevel,
    assessment: Option<&RiskAssessment>,
) -> Result<(), RiskBlock> {
    let Some(screened_us) = screened_us else {
        return Err(RiskBlock::NotScreened);
    };
    if level == RiskLevel::None {
        return Ok(());
    }
    match assessment.filter(|a| a.by_clinician && a.at_us >= screened_us) {
        None => Err(RiskBlock::NeedsAssessment {
            level: level.code(),
        }),
        Some(a) if a.decision == RiskDecision::Proceed => Ok(()),
        Some(a) => Err(RiskBlock::Declined {
            decision: a.decision.code(),
        }),
    }
}

/// Whether the attention list shows the answers: any C-SSRS high-risk answer, whatever the
/// clinician decided (managers follow these up), and moderate ones not yet assessed.
pub fn needs_attention(level: RiskLevel, assessed: bool) -> bool {
    level == RiskLevel::High || (level == RiskLevel::Moderate && !assessed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phq(item9: u8) -> Phq9Items {
        Phq9Items([2, 2, 1, 3, 1, 2, 1, 0, item9])
    }

    #[test]
    fn phq9_items() {
        assert_eq!(phq(0).total(), 12);
        assert_eq!(phq(2).total(), 14);
        assert_eq!(phq(2).item9(), 2);
        assert!(phq(3).check().is_ok());
        assert_eq!(
            Phq9Items([0, 0, 0, 4, 0, 0, 0, 0, 0]).check(),
            Err(Phq9ItemError { item: 4, value: 4 })
        );
    }

    #[test]
    fn levels() {
        let no = Cssrs::default();
        let cases = [
            ("nothing positive", Some(phq(0)), no, RiskLevel::None),
            ("item 9 at 1", Some(phq(1)), no, RiskLevel::Low),
            (
                "wish to be dead",
                None,
                Cssrs {
                    wish_dead: true,
                    ..no
                },
                RiskLevel::Low,
            ),
            (
                "thoughts with a method",
                Some(phq(0)),
                Cssrs {
                    thoughts: true,
                    method: true,
                    ..no
                },
                RiskLevel::Moderate,
            ),
            (
                "intent",
                Some(phq(0)),
                Cssrs {
                    thoughts: true,
                    intent: true,
                    ..no
                },
                RiskLevel::High,
            ),
            (
                "recent behaviour alone",
                Some(phq(0)),
                Cssrs {
                    behaviour: true,
                    ..no
                },
                RiskLevel::High,
            ),
            (
                "item 9 does not lower a C-SSRS level",
                Some(phq(3)),
                Cssrs { plan: true, ..no },
                RiskLevel::High,
            ),
        ];
        for (what, phq9, cssrs, level) in cases {
            assert_eq!(risk_level(phq9.as_ref(), &cssrs), level, "{what}");
        }
    }

    #[test]
    fn the_gate() {
        let assessed = |at_us, by_clinician, decision| RiskAssessment {
            at_us,
            by_clinician,
            decision,
            note: "spoke with patient; safety plan in place".into(),
        };
        let proceed = assessed(200, true, RiskDecision::Proceed);
        let by_nurse = assessed(200, false, RiskDecision::Proceed);
        let before = assessed(50, true, RiskDecision::Proceed);
        let defer = assessed(200, true, RiskDecision::Defer);
        let cases = [
            (
                "not screened",
                None,
                RiskLevel::None,
                None,
                Err(RiskBlock::NotScreened),
            ),
            (
                "screened, negative",
                Some(100),
                RiskLevel::None,
                None,
                Ok(()),
            ),
            (
                "positive, not assessed",
                Some(100),
                RiskLevel::Low,
                None,
                Err(RiskBlock::NeedsAssessment { level: "low" }),
            ),
            (
                "positive, clinician says proceed",
                Some(100),
                RiskLevel::High,
                Some(&proceed),
                Ok(()),
            ),
            (
                "a nurse's note is not a clinician's assessment",
                Some(100),
                RiskLevel::Low,
                Some(&by_nurse),
                Err(RiskBlock::NeedsAssessment { level: "low" }),
            ),
            (
                "an assessment before today's answers does not count",
                Some(100),
                RiskLevel::Moderate,
                Some(&before),
                Err(RiskBlock::NeedsAssessment { level: "moderate" }),
            ),
            (
                "deferred",
                Some(100),
                RiskLevel::High,
                Some(&defer),
                Err(RiskBlock::Declined { decision: "defer" }),
            ),
        ];
        for (what, screened, level, assessment, expected) in cases {
            assert_eq!(risk_gate(screened, level, assessment), expected, "{what}");
        }
    }

    #[test]
    fn attention() {
        assert!(needs_attention(RiskLevel::High, true));
        assert!(needs_attention(RiskLevel::Moderate, false));
        assert!(!needs_attention(RiskLevel::Moderate, true));
        assert!(!needs_attention(RiskLevel::Low, false));
        assert_eq!(RiskDecision::parse("defer"), Some(RiskDecision::Defer));
        assert_eq!(RiskDecision::parse("maybe"), None);
    }
}
