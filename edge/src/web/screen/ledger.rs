//! The controlled-substance ledger on the room screen: the safe at `/screen/ledger` (each lot's
//! balance; receipts and counts, by the front desk or a clinician, witnessed), and on a
//! session's pages the draw before the infusion, then the administered dose, the witnessed
//! waste or loss that reconcile it before the discharge. The recorder applies the ledger's
//! rules; a witness confirms with their PIN on the same tablet.

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::ledger::{LossKind, UL_PER_ML, reconcile_session};
use vigil_web::url_encode;

use super::checkin::optional_number;
use super::{
    CsrfForm, Section, Shared, Viewer, csrf_input, error_page, fail, frame, read, refusal,
    site_config, site_room,
};
use crate::reads::{LedgerView, ledger};
use crate::recorder::LedgerInput;

fn ml(ul: i64) -> String {
    format!("{:.2}", ul as f64 / UL_PER_ML as f64)
}

async fn load(s: &Shared) -> Result<LedgerView, (StatusCode, String)> {
    let (site, _) = site_room(s);
    let now = s.api.now_us();
    read(s, move |conn| ledger(conn, &site, now)).await
}

/// The witness fields of a form: a licensed colleague and their PIN.
fn witness_fields(v: &Viewer, staff: &[vigil_shared::doc::StaffMember], prefix: &str) -> Markup {
    html! {
        label {
            "Witness"
            select name="witness" id={ (prefix) "-witness" } required {
                option value="" { "A second nurse or clinician" }
                @for m in staff.iter().filter(|m| m.id != v.id && m.role != "front_desk") {
                    option value=(m.id) { (m.name) }
                }
            }
        }
        label {
            "Witness PIN"
            input name="witness_pin" id={ (prefix) "-witness-pin" } type="password" inputmode="numeric" autocomplete="off" required;
        }
    }
}

/// The ledger card of a session: nothing when the site keeps no stock here; the draw before
/// the infusion; once the pump has stopped, what reconciles it.
pub(crate) async fn session_card(s: &Shared, v: &Viewer, sid: &str, stopped: bool) -> Markup {
    let (view, staff) = match (load(s).await, staff(s).await) {
        (Ok(view), staff) => (view, staff),
        (Err(_), _) => return html! {},
    };
    if view.lots.is_empty() {
        return html! {};
    }
    let r = reconcile_session(&view.entries, sid);
    let action = format!("/screen/sessions/{}/ledger", url_encode(sid));
    html! {
        section.card id="ledger" {
            h2 { "Controlled substance" }
            p id="ledger-session" {
                "Drawn " (ml(r.drawn_ul)) " mL · given " (ml(r.administered_ul)) " mL · wasted "
                (ml(r.wasted_ul)) " mL · lost " (ml(r.lost_ul)) " mL · "
                @if r.drawn_ul == 0 { "nothing drawn yet" }
                @else if r.balances() { span.ok { "accounted for" } }
                @else { span.warn { (ml(r.unaccounted_ul())) " mL unaccounted for" } }
            }
            @if r.drawn_ul == 0 {
                form.stack method="post" action=(action) id="draw-form" {
                    (csrf_input(v))
                    input type="hidden" name="what" value="draw";
                    label {
                        "Lot"
                        select name="lot_id" id="draw-lot" required {
                            @for l in view.lots.iter().filter(|l| l.balance_ul > 0) {
                                option value=(l.lot.id) { (l.lot.id) " · " (l.lot.product) " · " (ml(l.balance_ul)) " mL in the safe" }
                            }
                        }
                    }
                    label { "mL drawn" input name="ml" id="draw-ml" inputmode="decimal" required; }
                    button.primary.big type="submit" id="record-draw" { "Record the draw" }
                }
            } @else if stopped && !r.balances() {
                form.buttons method="post" action=(action) {
                    (csrf_input(v))
                    input type="hidden" name="what" value="administered";
                    button.big type="submit" id="confirm-given" { "Confirm the dose the pump gave" }
                }
                form.stack method="post" action=(action) id="waste-form" {
                    (csrf_input(v))
                    label {
                        "What is left"
                        select name="what" id="remainder-what" {
                            option value="waste" { "Wasted (witnessed)" }
                            option value="loss" { "Lost (a discrepancy, witnessed, with its reason)" }
                        }
                    }
                    label { "mL" input name="ml" id="waste-ml" inputmode="decimal" value=(ml(r.unaccounted_ul().max(0))) required; }
                    label { "Reason" input name="reason" id="waste-reason" required; }
                    (witness_fields(v, &staff, "waste"))
                    button.big type="submit" id="record-waste" { "Record" }
                }
            }
        }
    }
}

/// What the ledger still wants before session `sid` may be discharged, as a line of the
/// discharge's missing list; `None` when it balances or the session drew nothing.
pub(crate) async fn unreconciled(s: &Shared, sid: &str) -> Option<String> {
    let view = load(s).await.ok()?;
    let r = reconcile_session(&view.entries, sid);
    (r.drawn_ul > 0 && !r.balances()).then(|| {
        format!(
            "the ledger does not balance for this session: {} mL unaccounted for; record the \
             dose the pump gave and the witnessed waste on the session page",
            ml(r.unaccounted_ul())
        )
    })
}

async fn staff(s: &Shared) -> Vec<vigil_shared::doc::StaffMember> {
    let (site, _) = site_room(s);
    read(s, move |conn| site_config(conn, &site))
        .await
        .ok()
        .flatten()
        .map(|c| c.staff)
        .unwrap_or_default()
}

/// A ledger form, whichever it is.
#[derive(Debug, Deserialize)]
pub(crate) struct LedgerForm {
    what: Option<String>,
    lot_id: Option<String>,
    ml: Option<String>,
    reason: Option<String>,
    witness: Option<String>,
    witness_pin: Option<String>,
    ndc: Option<String>,
    product: Option<String>,
    lot_number: Option<String>,
    mg_per_ml: Option<String>,
    expiry: Option<String>,
    supplier: Option<String>,
    invoice: Option<String>,
    inventory: Option<String>,
    count_id: Option<String>,
}

fn text(v: &Option<String>) -> String {
    v.as_deref().unwrap_or("").trim().to_owned()
}

/// `POST /screen/sessions/{id}/ledger`.
pub(crate) async fn session_entry(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    CsrfForm(v, f): CsrfForm<LedgerForm>,
) -> Response {
    if let Err(r) = super::require_treating(&v) {
        return r;
    }
    let back = format!("/screen/sessions/{}", url_encode(&id));
    let input = match f.what.as_deref() {
        Some("draw") => match volume(&v, &f) {
            Ok(ml) => LedgerInput::Draw {
                lot_id: text(&f.lot_id),
                ml,
                session_id: id.clone(),
            },
            Err(r) => return r,
        },
        Some("administered") => LedgerInput::Administered {
            session_id: id.clone(),
        },
        Some(what @ ("waste" | "loss")) => {
            let ml = match volume(&v, &f) {
                Ok(ml) => ml,
                Err(r) => return r,
            };
            let lot_id = match drawn_lot(&s, &id).await {
                Some(l) => l,
                None => {
                    return error_page(
                        &v,
                        StatusCode::CONFLICT,
                        "nothing was drawn for this session",
                    );
                }
            };
            if what == "waste" {
                LedgerInput::Waste {
                    lot_id,
                    ml,
                    session_id: Some(id.clone()),
                    reason: text(&f.reason),
                }
            } else {
                LedgerInput::Loss {
                    lot_id,
                    ml,
                    session_id: Some(id.clone()),
                    kind: LossKind::Loss,
                    reason: text(&f.reason),
                }
            }
        }
        _ => return error_page(&v, StatusCode::BAD_REQUEST, "unknown ledger entry"),
    };
    append(&s, &v, peer, input, &f, &back).await
}

/// `GET /screen/ledger`: the safe.
pub(crate) async fn safe(State(s): State<Shared>, Extension(v): Extension<Viewer>) -> Response {
    let view = match load(&s).await {
        Ok(view) => view,
        Err(e) => return fail(&v, e),
    };
    let staff = staff(&s).await;
    let body = html! {
        h1 { "The safe" }
        table id="safe" {
            thead { tr { th { "Lot" } th { "Product" } th { "Lot number" } th { "Expiry" } th { "mL" } th { "mg" } } }
            tbody {
                @if view.lots.is_empty() { tr { td colspan="6" class="muted" { "Nothing received into the ledger yet." } } }
                @for l in &view.lots {
                    tr data-lot=(l.lot.id) {
                        td { (l.lot.id) } td { (l.lot.product) } td { (l.lot.lot_number) } td { (l.lot.expiry) }
                        td.num { (ml(l.balance_ul)) } td.num { (format!("{:.1}", l.balance_mg)) }
                    }
                }
            }
        }
        p.muted id="biennial" {
            "Next biennial inventory due " (super::view::date(&v, view.biennial_inventory_due_us)) "."
        }
        @if !view.open_discrepancies.is_empty() {
            section.card id="discrepancies" {
                h2 { span.badge.high { "high" } " Counts that disagree with the ledger" }
                table {
                    thead { tr { th { "Count" } th { "Lot" } th { "Expected mL" } th { "Counted mL" } } }
                    tbody {
                        @for d in &view.open_discrepancies {
                            tr { td { (d.count_id) } td { (d.lot_id) } td.num { (ml(d.expected_ul)) } td.num { (ml(d.counted_ul)) } }
                        }
                    }
                }
                @if v.is_clinician() {
                    form.stack method="post" action="/screen/ledger" id="resolve-form" {
                        (csrf_input(&v))
                        input type="hidden" name="what" value="resolution";
                        label { "Count" select name="count_id" id="rs-count" { @for d in &view.open_discrepancies { option value=(d.count_id) { (d.lot_id) " · " (d.count_id) } } } }
                        label { "What explains it" input name="reason" id="rs-reason" required; }
                        (witness_fields(&v, &staff, "rs"))
                        button.big type="submit" id="resolve" { "Resolve" }
                    }
                } @else {
                    p.muted { "A clinician resolves each with a reason and a witness." }
                }
            }
        }
        section.card {
            h2 { "Receive stock" }
            form.stack method="post" action="/screen/ledger" id="receipt-form" {
                (csrf_input(&v))
                input type="hidden" name="what" value="receipt";
                label { "Lot id" input name="lot_id" id="rc-lot" required; }
                label { "NDC" input name="ndc" id="rc-ndc" required; }
                label { "Product" input name="product" id="rc-product" required; }
                label { "Lot number" input name="lot_number" id="rc-lot-number" required; }
                label { "mg/mL" input name="mg_per_ml" id="rc-strength" inputmode="decimal" required; }
                label { "Expiry" input name="expiry" id="rc-expiry" type="date" required; }
                label { "mL received" input name="ml" id="rc-ml" inputmode="decimal" required; }
                label { "Supplier" input name="supplier" id="rc-supplier" required; }
                label { "Invoice number" input name="invoice" id="rc-invoice" required; }
                (witness_fields(&v, &staff, "rc"))
                button.primary.big type="submit" id="record-receipt" { "Record the receipt" }
            }
        }
        section.card {
            h2 { "Count a lot" }
            form.stack method="post" action="/screen/ledger" id="count-form" {
                (csrf_input(&v))
                input type="hidden" name="what" value="count";
                label { "Lot" select name="lot_id" id="ct-lot" { @for l in &view.lots { option value=(l.lot.id) { (l.lot.id) } } } }
                label { "mL counted" input name="ml" id="ct-ml" inputmode="decimal" required; }
                label { input type="checkbox" name="inventory" value="1" id="ct-inventory"; " This is the biennial inventory" }
                (witness_fields(&v, &staff, "ct"))
                button.big type="submit" id="record-count" { "Record the count" }
            }
        }
    };
    frame(&v, Section::Safe, "The safe", body)
}

/// `POST /screen/ledger`: a receipt or a count.
pub(crate) async fn safe_entry(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    CsrfForm(v, f): CsrfForm<LedgerForm>,
) -> Response {
    if f.what.as_deref() == Some("resolution") {
        if !v.is_clinician() {
            return error_page(
                &v,
                StatusCode::FORBIDDEN,
                "a clinician resolves a count's discrepancy",
            );
        }
        let input = LedgerInput::Resolution {
            count_id: text(&f.count_id),
            reason: text(&f.reason),
        };
        return append(&s, &v, peer, input, &f, "/screen/ledger").await;
    }
    let ml = match volume(&v, &f) {
        Ok(ml) => ml,
        Err(r) => return r,
    };
    let input = match f.what.as_deref() {
        Some("receipt") => {
            let strength = match optional_number::<f64>(&f.mg_per_ml, "mg/mL") {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return error_page(
                        &v,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "give the strength in mg/mL",
                    );
                }
                Err(e) => return error_page(&v, StatusCode::UNPROCESSABLE_ENTITY, &e),
            };
            LedgerInput::Receipt {
                lot: vigil_shared::ledger::Lot {
                    id: text(&f.lot_id),
                    ndc: text(&f.ndc),
                    product: text(&f.product),
                    lot_number: text(&f.lot_number),
                    mg_per_ml: strength,
                    expiry: text(&f.expiry),
                },
                ml,
                supplier: text(&f.supplier),
                invoice: text(&f.invoice),
            }
        }
        Some("count") => LedgerInput::Count {
            lot_id: text(&f.lot_id),
            ml,
            inventory: f.inventory.is_some(),
        },
        _ => return error_page(&v, StatusCode::BAD_REQUEST, "unknown ledger entry"),
    };
    append(&s, &v, peer, input, &f, "/screen/ledger").await
}

fn volume(v: &Viewer, f: &LedgerForm) -> Result<f64, Response> {
    match optional_number::<f64>(&f.ml, "mL") {
        Ok(Some(ml)) => Ok(ml),
        Ok(None) => Err(error_page(
            v,
            StatusCode::UNPROCESSABLE_ENTITY,
            "give the volume in mL",
        )),
        Err(e) => Err(error_page(v, StatusCode::UNPROCESSABLE_ENTITY, &e)),
    }
}

/// The lot a session drew from.
async fn drawn_lot(s: &Shared, sid: &str) -> Option<String> {
    let view = load(s).await.ok()?;
    vigil_shared::ledger::drawn_lot(&view.entries, sid).map(str::to_owned)
}

/// Checks the witness (when the form names one) and appends the entry as the signed-in
/// staff member; back to `back`, or the refusal as a page.
async fn append(
    s: &Shared,
    v: &Viewer,
    peer: std::net::SocketAddr,
    input: LedgerInput,
    f: &LedgerForm,
    back: &str,
) -> Response {
    let witness = match text(&f.witness) {
        w if w.is_empty() => None,
        w => {
            let staff = staff(s).await;
            let now = s.api.now_us();
            match crate::web::api::check_witness(
                &s.api.security,
                staff,
                &v.id,
                &w,
                &text(&f.witness_pin),
                &peer.ip().to_string(),
                now,
            )
            .await
            {
                Ok(id) => Some(id),
                Err(e) => return fail(v, e),
            }
        }
    };
    match s
        .api
        .recorder
        .ledger_append(input, v.id.clone(), witness)
        .await
    {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => fail(v, refusal(e)),
    }
}
