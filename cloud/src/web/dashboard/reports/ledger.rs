//! `GET /ledger` and `GET /ledger.csv`, for admins and a region's managers: a site's
//! controlled-substance ledger (21 CFR 1304) — each lot's balance, the open discrepancies, the
//! loss reports due (DEA Form 106), the next biennial inventory, and the entries of a date
//! range; and the reports an inspector asks for as CSV: the dispensing log of a range, the
//! inventory, and the losses. The page prints as it is.
//!
//! Balances and discrepancies come from the ledger document with the rules of
//! `vigil_shared::ledger`; each entry's cloud receive time from the store's index of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::ledger::doc::{LedgerDoc, ledger_id};
use vigil_shared::ledger::{
    Entry, EntryKind, LossKind, UL_PER_ML, balances, biennial_inventory_due, effective,
    form_106_due, lots, open_discrepancies,
};
use vigil_shared::zone::{SiteZone, rfc3339_utc};
use vigil_web::csv_row;

use super::{DayRange, RangeQuery};
use crate::clock::now_us;
use crate::store::{LedgerRow, ledger_kind_name};
use crate::web::dashboard::{
    Section, audit_view, csv_response, empty_row, error_page, frame, read,
};
use crate::web::extract::{ClientIp, RequireManager};
use crate::web::state::Shared;

/// Query of the ledger page and its CSV.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LedgerQuery {
    site: Option<String>,
    from: Option<String>,
    to: Option<String>,
    report: Option<String>,
    /// Only this lot's entries.
    lot: Option<String>,
    /// Only entries of this type (`draw`, `waste`, …).
    kind: Option<String>,
}

impl LedgerQuery {
    /// Whether the entry passes the lot and type filters.
    fn keeps(&self, e: &Entry) -> bool {
        let lot = e.kind.lot_id();
        self.lot
            .as_deref()
            .filter(|l| !l.is_empty())
            .is_none_or(|l| lot == Some(l))
            && self
                .kind
                .as_deref()
                .filter(|k| !k.is_empty())
                .is_none_or(|k| ledger_kind_name(&e.kind) == k)
    }
}

/// Everything the page and the reports show of one site's ledger.
#[derive(Debug, Clone)]
pub struct LedgerReport {
    /// Every entry of the ledger, in its order.
    pub entries: Vec<Entry>,
    /// Cloud receive times by entry id.
    pub received: BTreeMap<String, i64>,
}

impl LedgerReport {
    fn mg_per_ml(&self) -> BTreeMap<String, f64> {
        lots(&self.entries)
            .into_iter()
            .map(|(id, lot)| (id.to_owned(), lot.mg_per_ml))
            .collect()
    }
}

/// mL of µL, for people.
fn ml(ul: i64) -> String {
    format!("{:.3}", ul as f64 / UL_PER_ML as f64)
}

/// mg of µL of a lot.
fn mg(ul: i64, mg_per_ml: Option<f64>) -> String {
    mg_per_ml.map_or_else(String::new, |c| {
        format!("{:.2}", ul as f64 / UL_PER_ML as f64 * c)
    })
}

/// One entry as a dispensing-log line: the lot, session, volume and what else it says.
fn describe(e: &Entry) -> (Option<&str>, Option<&str>, Option<i64>, String) {
    let detail = match &e.kind {
        EntryKind::Receipt {
            lot,
            supplier,
            invoice,
            ..
        } => format!(
            "NDC {} lot {} exp {} from {supplier}, invoice {invoice}",
            lot.ndc, lot.lot_number, lot.expiry
        ),
        EntryKind::Draw { .. } | EntryKind::Administered { .. } => String::new(),
        EntryKind::Waste { reason, .. } => reason.clone(),
        EntryKind::Count { inventory, .. } => {
            if *inventory {
                "biennial inventory".into()
            } else {
                String::new()
            }
        }
        EntryKind::Loss { kind, reason, .. } => format!("{}: {reason}", loss_name(*kind)),
        EntryKind::Transfer { to, reason, .. } => format!("to {to}: {reason}"),
        EntryKind::Resolution { count_id, reason } => {
            format!("resolves count {count_id}: {reason}")
        }
        EntryKind::Correction { reverses, reason } => format!("reverses {reverses}: {reason}"),
    };
    (
        e.kind.lot_id(),
        e.kind.session_id(),
        e.kind.quantity_ul(),
        detail,
    )
}

fn loss_name(kind: LossKind) -> &'static str {
    match kind {
        LossKind::Loss => "loss",
        LossKind::Theft => "theft",
    }
}

/// The CSV of a report: `dispensing` (every entry in `[from, to)` but counts), `inventory`
/// (the counts, and each lot's derived balance now), or `losses` (losses and thefts with
/// their Form 106 deadlines).
pub fn ledger_csv(
    report: &LedgerReport,
    which: &str,
    zone: &SiteZone,
    window: (i64, i64),
    now: i64,
    keep: &dyn Fn(&Entry) -> bool,
) -> Option<String> {
    let conc = report.mg_per_ml();
    let live: Vec<&Entry> = effective(&report.entries);
    let reversed = |e: &Entry| !live.iter().any(|l| l.id == e.id);
    let received = |id: &str| {
        report
            .received
            .get(id)
            .map_or_else(String::new, |us| rfc3339_utc(*us))
    };
    let mut out;
    match which {
        "dispensing" => {
            out = csv_row(&[
                "at_utc",
                "at_local",
                "received_utc",
                "entry",
                "type",
                "by",
                "witness",
                "place",
                "lot",
                "session",
                "ml",
                "mg",
                "detail",
                "reversed",
            ]);
            for e in &report.entries {
                if !(window.0..window.1).contains(&e.at_us)
                    || matches!(e.kind, EntryKind::Count { .. })
                    || !keep(e)
                {
                    continue;
                }
                let (lot, session, ul, detail) = describe(e);
                out.push_str(&csv_row(&[
                    rfc3339_utc(e.at_us),
                    zone.iso_local(e.at_us),
                    received(&e.id),
                    e.id.clone(),
                    ledger_kind_name(&e.kind).to_owned(),
                    e.by.clone(),
                    e.witness.clone().unwrap_or_default(),
                    e.place.clone(),
                    lot.unwrap_or_default().to_owned(),
                    session.unwrap_or_default().to_owned(),
                    ul.map(ml).unwrap_or_default(),
                    ul.map(|u| mg(u, lot.and_then(|l| conc.get(l).copied())))
                        .unwrap_or_default(),
                    detail,
                    if reversed(e) { "yes" } else { "" }.to_owned(),
                ]));
            }
        }
        "inventory" => {
            out = csv_row(&[
                "lot",
                "ndc",
                "product",
                "lot_number",
                "expiry",
                "mg_per_ml",
                "balance_ml",
                "balance_mg",
                "last_count_utc",
                "last_count_ml",
                "last_count_by",
                "last_count_witness",
                "biennial_inventory_due_utc",
            ]);
            let balance = balances(&report.entries);
            let due = biennial_inventory_due(&report.entries, now);
            for (id, lot) in lots(&report.entries) {
                let last = live
                    .iter()
                    .rev()
                    .find(|e| matches!(&e.kind, EntryKind::Count { lot_id, .. } if lot_id == id));
                let counted = last.and_then(|e| match e.kind {
                    EntryKind::Count { counted_ul, .. } => Some(counted_ul),
                    _ => None,
                });
                let ul = balance.get(id).copied().unwrap_or(0);
                out.push_str(&csv_row(&[
                    id.to_owned(),
                    lot.ndc.clone(),
                    lot.product.clone(),
                    lot.lot_number.clone(),
                    lot.expiry.clone(),
                    lot.mg_per_ml.to_string(),
                    ml(ul),
                    mg(ul, Some(lot.mg_per_ml)),
                    last.map_or_else(String::new, |e| rfc3339_utc(e.at_us)),
                    counted.map(ml).unwrap_or_default(),
                    last.map_or_else(String::new, |e| e.by.clone()),
                    last.and_then(|e| e.witness.clone()).unwrap_or_default(),
                    rfc3339_utc(due),
                ]));
            }
        }
        "losses" => {
            out = csv_row(&[
                "at_utc",
                "entry",
                "kind",
                "lot",
                "session",
                "ml",
                "mg",
                "reason",
                "by",
                "witness",
                "form_106_due_utc",
            ]);
            for e in &live {
                let EntryKind::Loss {
                    lot_id,
                    ul,
                    session_id,
                    kind,
                    reason,
                } = &e.kind
                else {
                    continue;
                };
                out.push_str(&csv_row(&[
                    rfc3339_utc(e.at_us),
                    e.id.clone(),
                    loss_name(*kind).to_owned(),
                    lot_id.clone(),
                    session_id.clone().unwrap_or_default(),
                    ml(*ul),
                    mg(*ul, conc.get(lot_id).copied()),
                    reason.clone(),
                    e.by.clone(),
                    e.witness.clone().unwrap_or_default(),
                    rfc3339_utc(form_106_due(zone, e.at_us)),
                ]));
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The site shown: the one asked for if in scope, else the first in scope.
fn pick_site(s: &Shared, viewer: &crate::auth::Principal, asked: Option<&str>) -> Option<String> {
    let in_scope: Vec<&str> = s
        .state
        .sites
        .iter()
        .map(|site| site.id.as_str())
        .filter(|id| viewer.allows(id))
        .collect();
    match asked {
        Some(a) => in_scope.contains(&a).then(|| a.to_owned()),
        None => in_scope.first().map(|s| (*s).to_owned()),
    }
}

async fn load(
    s: &Arc<Shared>,
    viewer: &crate::web::dashboard::Viewer,
    site: &str,
) -> Result<LedgerReport, Response> {
    let id = ledger_id(site);
    let site_owned = site.to_owned();
    let (doc, rows) = read(s, move |store| {
        let doc = store.load_document(&id)?;
        let rows = store.ledger_entries(&site_owned, i64::MIN, i64::MAX)?;
        Ok((doc, rows))
    })
    .await
    .map_err(IntoResponse::into_response)?;
    let entries = match doc {
        Some(stored) => LedgerDoc::from_automerge(stored.doc)
            .and_then(|d| d.entries())
            .map_err(|e| {
                error_page(
                    viewer,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the ledger of {site} cannot be read: {e}"),
                )
            })?,
        None => Vec::new(),
    };
    let received = rows
        .into_iter()
        .map(|LedgerRow { entry, received_us }| (entry.id, received_us))
        .collect();
    Ok(LedgerReport { entries, received })
}

/// The site asked for (in the viewer's scope), the date range, and the site's ledger.
async fn prepare(
    s: &Arc<Shared>,
    viewer: &crate::web::dashboard::Viewer,
    q: &LedgerQuery,
    now: i64,
) -> Result<(String, DayRange, LedgerReport), Response> {
    let Some(site) = pick_site(s, &viewer.who, q.site.as_deref()) else {
        return Err(error_page(
            viewer,
            StatusCode::NOT_FOUND,
            "no such site in your scope",
        ));
    };
    let range = DayRange::parse(
        &RangeQuery {
            from: q.from.clone(),
            to: q.to.clone(),
        },
        now,
        &s.zones,
    )
    .map_err(|e| error_page(viewer, StatusCode::BAD_REQUEST, &e))?;
    let report = load(s, viewer, &site).await?;
    Ok((site, range, report))
}

/// `GET /ledger`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    RequireManager(viewer): RequireManager,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<LedgerQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let now = now_us();
    let (site, range, report) = match prepare(&s, &viewer, &q, now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = audit_view(
        &s,
        &viewer,
        &ip,
        "view ledger",
        &format!("{site} {}..{}", range.from, range.to),
    )
    .await
    {
        return r;
    }
    let zone = s.zones.get(&site);
    let window = range.window(&zone);
    let balance = balances(&report.entries);
    let conc = report.mg_per_ml();
    let discrepancies = open_discrepancies(&report.entries);
    let live = effective(&report.entries);
    let losses: Vec<&&Entry> = live
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Loss { .. }))
        .collect();
    let query = format!(
        "site={site}&from={}&to={}&lot={}&kind={}",
        range.from,
        range.to,
        vigil_web::url_encode(q.lot.as_deref().unwrap_or("")),
        vigil_web::url_encode(q.kind.as_deref().unwrap_or(""))
    );
    let body = html! {
        h1 { "Controlled-substance ledger · " (site) }
        form.filters method="get" action="/ledger" {
            label { "Site"
                select name="site" id="ledger-site" {
                    @for info in s.state.sites.iter().filter(|i| viewer.who.allows(&i.id)) {
                        option value=(info.id) selected[info.id == site] { (info.name) }
                    }
                }
            }
            label { "From" input type="date" name="from" value=(range.from); }
            label { "To" input type="date" name="to" value=(range.to); }
            label { "Lot" input name="lot" id="ledger-lot" value=(q.lot.as_deref().unwrap_or("")); }
            label { "Type"
                select name="kind" id="ledger-kind" {
                    option value="" { "any" }
                    @for k in ["receipt", "draw", "administered", "waste", "transfer", "count", "loss", "resolution", "correction"] {
                        option value=(k) selected[q.kind.as_deref() == Some(k)] { (k) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        p.muted {
            "Reports: "
            a href={ "/ledger.csv?report=dispensing&" (query) } id="csv-dispensing" { "dispensing log (CSV)" } " · "
            a href={ "/ledger.csv?report=inventory&" (query) } id="csv-inventory" { "inventory (CSV)" } " · "
            a href={ "/ledger.csv?report=losses&" (query) } id="csv-losses" { "losses (CSV)" }
            ". Next biennial inventory due "
            (zone.day(biennial_inventory_due(&report.entries, now))) "."
        }
        h2 { "Balance by lot" }
        table id="lots" {
            thead { tr { th { "Lot" } th { "Product" } th { "NDC" } th { "Lot number" } th { "Expiry" } th { "mL" } th { "mg" } } }
            tbody {
                @let all = lots(&report.entries);
                @if all.is_empty() { (empty_row(7, "No stock has been received into this site's ledger.")) }
                @for (id, lot) in all {
                    @let ul = balance.get(id).copied().unwrap_or(0);
                    tr data-lot=(id) {
                        td { (id) } td { (lot.product) } td { (lot.ndc) } td { (lot.lot_number) }
                        td { (lot.expiry) } td.num { (ml(ul)) } td.num { (mg(ul, Some(lot.mg_per_ml))) }
                    }
                }
            }
        }
        h2 { "Open discrepancies" }
        table id="discrepancies" {
            thead { tr { th { "Count" } th { "Lot" } th { "Expected mL" } th { "Counted mL" } } }
            tbody {
                @if discrepancies.is_empty() { (empty_row(4, "None: every count agrees with the ledger.")) }
                @for d in &discrepancies {
                    tr { td { (d.count_id) } td { (d.lot_id) } td.num { (ml(d.expected_ul)) } td.num { (ml(d.counted_ul)) } }
                }
            }
        }
        h2 { "Losses and thefts (DEA Form 106 within one business day)" }
        table id="losses" {
            thead { tr { th { "When (site time)" } th { "Lot" } th { "mL" } th { "Reason" } th { "Form 106 due" } } }
            tbody {
                @if losses.is_empty() { (empty_row(5, "None recorded.")) }
                @for e in &losses {
                    @let (lot, _, ul, detail) = describe(e);
                    tr {
                        td { (zone.minute(e.at_us)) } td { (lot.unwrap_or_default()) }
                        td.num { (ul.map(ml).unwrap_or_default()) } td { (detail) }
                        td { (zone.minute(form_106_due(&zone, e.at_us))) }
                    }
                }
            }
        }
        h2 { "Entries " (range.from) " to " (range.to) }
        (entries_table(&report, &zone, window, &conc, &|e| q.keeps(e)))
    };
    frame(&viewer, Section::Ledger, "Ledger", body)
}

fn entries_table(
    report: &LedgerReport,
    zone: &SiteZone,
    window: (i64, i64),
    conc: &BTreeMap<String, f64>,
    keep: &dyn Fn(&Entry) -> bool,
) -> Markup {
    let live = effective(&report.entries);
    html! {
        table id="entries" {
            thead {
                tr {
                    th { "When (site time)" } th { "Received" } th { "Type" } th { "By" }
                    th { "Witness" } th { "Where" } th { "Lot" } th { "Session" } th { "mL" }
                    th { "mg" } th { "Detail" }
                }
            }
            tbody {
                @for e in report.entries.iter().filter(|e| (window.0..window.1).contains(&e.at_us) && keep(e)) {
                    @let (lot, session, ul, detail) = describe(e);
                    @let reversed = !live.iter().any(|l| l.id == e.id) && !matches!(e.kind, EntryKind::Correction { .. });
                    tr.entry data-type=(ledger_kind_name(&e.kind)) .reversed[reversed] {
                        td { (zone.minute(e.at_us)) }
                        td { (report.received.get(&e.id).map_or_else(|| "not yet".to_owned(), |us| zone.minute(*us))) }
                        td { (ledger_kind_name(&e.kind)) @if reversed { " (reversed)" } }
                        td { (e.by) } td { (e.witness.as_deref().unwrap_or("")) } td { (e.place) }
                        td { (lot.unwrap_or_default()) } td { (session.unwrap_or_default()) }
                        td.num { (ul.map(ml).unwrap_or_default()) }
                        td.num { (ul.map(|u| mg(u, lot.and_then(|l| conc.get(l).copied()))).unwrap_or_default()) }
                        td { (detail) }
                    }
                }
            }
        }
    }
}

/// `GET /ledger.csv?report=dispensing|inventory|losses`.
pub(crate) async fn csv(
    State(s): State<Arc<Shared>>,
    RequireManager(viewer): RequireManager,
    Extension(ip): Extension<ClientIp>,
    q: Result<Query<LedgerQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let which = q.report.clone().unwrap_or_else(|| "dispensing".into());
    let now = now_us();
    let (site, range, report) = match prepare(&s, &viewer, &q, now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let zone = s.zones.get(&site);
    let Some(body) = ledger_csv(&report, &which, &zone, range.window(&zone), now, &|e| {
        q.keeps(e)
    }) else {
        return error_page(
            &viewer,
            StatusCode::BAD_REQUEST,
            "report must be dispensing, inventory or losses",
        );
    };
    if let Err(r) = audit_view(
        &s,
        &viewer,
        &ip,
        &format!("export ledger {which} csv"),
        &format!("{site} {}..{}", range.from, range.to),
    )
    .await
    {
        return r;
    }
    csv_response(&format!("ledger-{site}-{which}.csv"), body)
}
