//! Worked examples of the ledger's rules: a vial drawn, part given, the rest wasted; a bag
//! paused and restarted; a session aborted; a correction; an expired lot; counts and their
//! discrepancies; the regulatory deadlines.

use super::*;
use crate::clinical::delivered;
use crate::doc::{DoseAction, DoseEvent};

const MIN: i64 = 60_000_000;
const T0: i64 = 1_796_000_000_000_000; // 2026-11-30 00:53 UTC (Sunday evening in Austin)

fn lot(id: &str, expiry: &str) -> Lot {
    Lot {
        id: id.into(),
        ndc: "0409-2051-05".into(),
        product: "Ketamine HCl injection 50 mg/mL, 10 mL vial".into(),
        lot_number: format!("LN-{id}"),
        mg_per_ml: 50.0,
        expiry: expiry.into(),
    }
}

fn entry(id: &str, at_us: i64, by: &str, witness: Option<&str>, kind: EntryKind) -> Entry {
    Entry {
        id: id.into(),
        at_us,
        by: by.into(),
        witness: witness.map(str::to_owned),
        place: "room 1".into(),
        kind,
    }
}

fn receipt(id: &str, lot_id: &str, ml: i64) -> Entry {
    entry(
        id,
        T0,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Receipt {
            lot: lot(lot_id, "2027-06-30"),
            ul: ml * UL_PER_ML,
            supplier: "McKesson".into(),
            invoice: "INV-1".into(),
        },
    )
}

fn draw(id: &str, lot_id: &str, ul: i64, session: &str) -> Entry {
    entry(
        id,
        T0 + MIN,
        "rn-ana",
        None,
        EntryKind::Draw {
            lot_id: lot_id.into(),
            ul,
            session_id: session.into(),
        },
    )
}

fn given(id: &str, ul: i64, session: &str) -> Entry {
    entry(
        id,
        T0 + 60 * MIN,
        "rn-ana",
        None,
        EntryKind::Administered {
            lot_id: "L1".into(),
            ul,
            session_id: session.into(),
        },
    )
}

fn waste(id: &str, ul: i64, session: Option<&str>, witness: Option<&str>) -> Entry {
    entry(
        id,
        T0 + 61 * MIN,
        "rn-ana",
        witness,
        EntryKind::Waste {
            lot_id: "L1".into(),
            ul,
            session_id: session.map(str::to_owned),
            reason: "remainder of the bag".into(),
        },
    )
}

fn dose(at_min: i64, action: DoseAction, rate: Option<f64>) -> DoseEvent {
    DoseEvent {
        id: format!("d{at_min}"),
        at_us: T0 + at_min * MIN,
        action,
        rate_mg_per_h: rate,
        by: "rn-ana".into(),
    }
}

/// The stock, µL, holding what a dose timeline delivered.
fn administered_ul(events: &[DoseEvent], end_min: i64) -> i64 {
    ul_for_mg(delivered(events, T0 + end_min * MIN).mg, 50.0).unwrap()
}

#[test]
fn a_whole_vial_drawn_part_given_the_rest_wasted() {
    // 0.5 mg/kg × 70 kg = 35 mg = 0.7 mL of 50 mg/mL; a 10 mL vial holds 500 mg.
    let mut ledger = vec![receipt("r1", "L1", 10), draw("d1", "L1", 1_000, "s1")];
    let events = [
        dose(0, DoseAction::Start, Some(52.5)),
        dose(40, DoseAction::Stop, None),
    ];
    let ul = administered_ul(&events, 40);
    assert_eq!(ul, 700, "35 mg of 50 mg/mL");
    ledger.push(given("a1", ul, "s1"));
    let r = reconcile_session(&ledger, "s1");
    assert_eq!(r.unaccounted_ul(), 300);
    assert!(!r.balances(), "0.3 mL unaccounted for: discharge waits");
    let w = waste("w1", 300, Some("s1"), Some("dr-kim"));
    assert_eq!(check_entry(&ledger, &w, "2026-11-29"), Ok(()));
    ledger.push(w);
    assert!(reconcile_session(&ledger, "s1").balances());
    assert_eq!(
        balances(&ledger)["L1"],
        9_000,
        "the session's waste left with the draw"
    );
}

#[test]
fn a_bag_paused_and_restarted() {
    // 60 mg/h for 20 min (20 mg), paused 10 min, 30 mg/h for 20 min (10 mg): 30 mg = 0.6 mL.
    let events = [
        dose(0, DoseAction::Start, Some(60.0)),
        dose(20, DoseAction::Pause, None),
        dose(30, DoseAction::Resume, Some(30.0)),
        dose(50, DoseAction::Stop, None),
    ];
    let ul = administered_ul(&events, 50);
    assert_eq!(ul, 600);
    let ledger = vec![
        receipt("r1", "L1", 10),
        draw("d1", "L1", 700, "s1"),
        given("a1", ul, "s1"),
        waste("w1", 100, Some("s1"), Some("dr-kim")),
    ];
    assert_eq!(reconcile_session(&ledger, "s1").unaccounted_ul(), 0);
}

#[test]
fn an_aborted_session_wastes_what_was_not_given() {
    // Started at 52.5 mg/h, aborted at 12 min without a stop: 10.5 mg = 0.21 mL given.
    let events = [dose(0, DoseAction::Start, Some(52.5))];
    let ul = administered_ul(&events, 12);
    assert_eq!(ul, 210);
    let ledger = vec![
        receipt("r1", "L1", 10),
        draw("d1", "L1", 700, "s1"),
        given("a1", ul, "s1"),
        waste("w1", 490, Some("s1"), Some("dr-kim")),
    ];
    let r = reconcile_session(&ledger, "s1");
    assert_eq!(
        (r.drawn_ul, r.administered_ul, r.wasted_ul),
        (700, 210, 490)
    );
    assert!(r.balances());
    // Within 0.1 mL balances; beyond does not.
    let mut short = ledger.clone();
    short.pop();
    short.push(waste("w2", 400, Some("s1"), Some("dr-kim")));
    assert_eq!(reconcile_session(&short, "s1").unaccounted_ul(), 90);
    assert!(reconcile_session(&short, "s1").balances());
    short.pop();
    short.push(waste("w3", 389, Some("s1"), Some("dr-kim")));
    assert!(!reconcile_session(&short, "s1").balances());
}

#[test]
fn a_correction_reverses_an_entry_and_nothing_is_edited() {
    let mut ledger = vec![receipt("r1", "L1", 10), draw("d1", "L1", 7_000, "s1")];
    assert_eq!(balances(&ledger)["L1"], 3_000);
    let fix = entry(
        "c1",
        T0 + 2 * MIN,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Correction {
            reverses: "d1".into(),
            reason: "typed 7 mL for 0.7 mL".into(),
        },
    );
    assert_eq!(check_entry(&ledger, &fix, "2026-11-29"), Ok(()));
    ledger.push(fix);
    ledger.push(draw("d2", "L1", 700, "s1"));
    assert_eq!(balances(&ledger)["L1"], 9_300);
    assert_eq!(reconcile_session(&ledger, "s1").drawn_ul, 700);
    assert_eq!(ledger.len(), 4, "the original stays in the log");
    // A second correction of the same entry points at nothing in effect.
    let again = entry(
        "c2",
        T0 + 3 * MIN,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Correction {
            reverses: "d1".into(),
            reason: "again".into(),
        },
    );
    assert_eq!(
        check_entry(&ledger, &again, "2026-11-29"),
        Err(LedgerRefused::NoSuchEntry("d1".into()))
    );
}

#[test]
fn refusals_worked_examples() {
    let mut ledger = vec![receipt("r1", "L1", 10)];
    ledger.push(entry(
        "r2",
        T0,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Receipt {
            lot: lot("OLD", "2026-10-31"),
            ul: 10_000,
            supplier: "McKesson".into(),
            invoice: "INV-0".into(),
        },
    ));
    let today = "2026-11-29";
    let cases: Vec<(&str, Entry, LedgerRefused)> = vec![
        (
            "a negative draw",
            draw("x", "L1", -100, "s1"),
            LedgerRefused::Quantity { ul: -100 },
        ),
        (
            "an absurd draw",
            draw("x", "L1", 5_000_000, "s1"),
            LedgerRefused::Quantity { ul: 5_000_000 },
        ),
        (
            "a lot the safe doesn't hold",
            draw("x", "L9", 100, "s1"),
            LedgerRefused::UnknownLot("L9".into()),
        ),
        (
            "an expired lot",
            draw("x", "OLD", 100, "s1"),
            LedgerRefused::Expired {
                lot: "OLD".into(),
                expiry: "2026-10-31".into(),
            },
        ),
        (
            "more than the lot holds",
            draw("x", "L1", 10_001, "s1"),
            LedgerRefused::Insufficient {
                lot: "L1".into(),
                have: 10_000,
                want: 10_001,
            },
        ),
        (
            "waste witnessed by the nurse who wastes",
            waste("x", 100, Some("s1"), Some("rn-ana")),
            LedgerRefused::Witness,
        ),
        (
            "waste without a witness",
            waste("x", 100, Some("s1"), None),
            LedgerRefused::Witness,
        ),
        (
            "an id used before",
            draw("r1", "L1", 100, "s1"),
            LedgerRefused::DuplicateId("r1".into()),
        ),
        (
            "the same lot received twice",
            receipt("r3", "L1", 10),
            LedgerRefused::DuplicateLot("L1".into()),
        ),
    ];
    for (what, new, want) in cases {
        assert_eq!(check_entry(&ledger, &new, today), Err(want), "{what}");
    }
    // Spoiled stock in the safe leaves the balance; a session's waste does not.
    let spoiled = waste("w9", 1_000, None, Some("dr-kim"));
    assert_eq!(check_entry(&ledger, &spoiled, today), Ok(()));
    ledger.push(spoiled);
    assert_eq!(balances(&ledger)["L1"], 9_000);
}

#[test]
fn counts_that_disagree_stay_open_until_resolved() {
    let count = |id: &str, at_min: i64, ul: i64| {
        entry(
            id,
            T0 + at_min * MIN,
            "rn-ana",
            Some("dr-kim"),
            EntryKind::Count {
                lot_id: "L1".into(),
                counted_ul: ul,
                inventory: false,
            },
        )
    };
    let mut ledger = vec![
        receipt("r1", "L1", 10),
        draw("d1", "L1", 1_000, "s1"),
        count("k1", 120, 9_000),
    ];
    assert_eq!(open_discrepancies(&ledger), vec![]);
    ledger.push(count("k2", 180, 8_500));
    let open = open_discrepancies(&ledger);
    assert_eq!(
        open,
        vec![Discrepancy {
            count_id: "k2".into(),
            lot_id: "L1".into(),
            expected_ul: 9_000,
            counted_ul: 8_500,
        }]
    );
    let resolve = entry(
        "res1",
        T0 + 200 * MIN,
        "dr-kim",
        Some("rn-ana"),
        EntryKind::Resolution {
            count_id: "k2".into(),
            reason: "a 0.5 mL draw for s2 recorded on paper; entered now".into(),
        },
    );
    assert_eq!(check_entry(&ledger, &resolve, "2026-11-29"), Ok(()));
    ledger.push(resolve);
    assert_eq!(open_discrepancies(&ledger), vec![]);
    // Resolving needs a second person.
    let alone = Entry {
        id: "res2".into(),
        witness: Some("dr-kim".into()),
        ..ledger.last().unwrap().clone()
    };
    assert_eq!(
        check_entry(&ledger, &alone, "2026-11-29"),
        Err(LedgerRefused::Witness)
    );
}

#[test]
fn two_rooms_offline_draw_from_one_lot_and_merge() {
    // Room 1 and room 2 each draw 0.7 mL while offline; the merged log is the union.
    let base = vec![receipt("r1", "L1", 10)];
    let mut room1 = base.clone();
    room1.push(draw("d-room1", "L1", 700, "s1"));
    let mut room2 = base.clone();
    room2.push(draw("d-room2", "L1", 700, "s2"));
    let mut merged = base;
    merged.extend(room1.into_iter().skip(1));
    merged.extend(room2.into_iter().skip(1));
    assert_eq!(balances(&merged)["L1"], 8_600);
}

#[test]
fn form_106_is_due_by_the_end_of_the_next_business_day() {
    let chicago = SiteZone::parse("America/Chicago").unwrap();
    // A loss on Friday 2026-11-27 at 16:00 CST is due by the end of Monday 2026-11-30.
    let friday = chicago.parse_day("2026-11-27").unwrap() + 16 * 60 * MIN;
    let due = form_106_due(&chicago, friday);
    assert_eq!(chicago.minute(due), "2026-12-01 00:00 CST");
    // On a Tuesday: by the end of Wednesday.
    let tuesday = chicago.parse_day("2026-12-01").unwrap() + 9 * 60 * MIN;
    assert_eq!(
        chicago.minute(form_106_due(&chicago, tuesday)),
        "2026-12-03 00:00 CST"
    );
}

#[test]
fn the_biennial_inventory_and_retention() {
    let inventory = entry(
        "inv",
        T0,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Count {
            lot_id: "L1".into(),
            counted_ul: 10_000,
            inventory: true,
        },
    );
    let ledger = vec![receipt("r1", "L1", 10), inventory];
    assert_eq!(biennial_inventory_due(&ledger, T0), T0 + BIENNIAL_US);
    assert_eq!(
        biennial_inventory_due(&ledger[..1], T0 + 5),
        T0 + 5,
        "never taken: due now"
    );
    assert!(!may_delete(T0, T0 + 700 * US_PER_DAY));
    assert!(may_delete(T0, T0 + 733 * US_PER_DAY));
}

#[test]
fn a_transfer_leaves_the_safe_witnessed_with_where_and_why() {
    let mut ledger = vec![receipt("r1", "L1", 10)];
    let transfer = |to: &str, reason: &str, witness: Option<&str>| {
        entry(
            "t1",
            T0 + MIN,
            "rn-ana",
            witness,
            EntryKind::Transfer {
                lot_id: "L1".into(),
                ul: 4_000,
                to: to.into(),
                reason: reason.into(),
            },
        )
    };
    assert_eq!(
        check_entry(
            &ledger,
            &transfer("florida", "stock for the week", None),
            "2026-11-29"
        ),
        Err(LedgerRefused::Witness)
    );
    assert_eq!(
        check_entry(&ledger, &transfer("", "x", Some("dr-kim")), "2026-11-29"),
        Err(LedgerRefused::NoReason)
    );
    let t = transfer("florida", "stock for the week", Some("dr-kim"));
    assert_eq!(check_entry(&ledger, &t, "2026-11-29"), Ok(()));
    ledger.push(t);
    assert_eq!(balances(&ledger)["L1"], 6_000);
}

#[test]
fn a_sessions_unexplained_remainder_recorded_as_a_loss_reconciles_and_stays_out_of_the_safe() {
    let mut ledger = vec![
        receipt("r1", "L1", 10),
        draw("d1", "L1", 1_000, "s1"),
        given("a1", 700, "s1"),
    ];
    let lost = entry(
        "x1",
        T0 + 50 * MIN,
        "rn-ana",
        Some("dr-kim"),
        EntryKind::Loss {
            lot_id: "L1".into(),
            ul: 300,
            session_id: Some("s1".into()),
            kind: LossKind::Loss,
            reason: "syringe dropped before the waste was witnessed".into(),
        },
    );
    let mut unwitnessed = lost.clone();
    unwitnessed.witness = None;
    assert_eq!(
        check_entry(&ledger, &unwitnessed, "2026-11-29"),
        Err(LedgerRefused::Witness)
    );
    assert_eq!(check_entry(&ledger, &lost, "2026-11-29"), Ok(()));
    ledger.push(lost);
    let r = reconcile_session(&ledger, "s1");
    assert_eq!((r.lost_ul, r.unaccounted_ul()), (300, 0));
    assert!(r.balances());
    assert_eq!(
        balances(&ledger)["L1"],
        9_000,
        "it left the safe with the draw"
    );
}
