//! `GET /sessions/{id}`: one session's page. Its facts, the vitals charted with the infusion
//! shaded and advisories marked, the ECG strip with zoom and jump links, the dose timeline,
//! advisories, side effects, scores, discharge and notes; times in the site's own zone. Also
//! `GET /sessions/{id}/fhir`, the session as a FHIR bundle (built by the API).

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vigil_shared::clinical::ALDRETE_DISCHARGE_MIN;
use vigil_shared::doc::{DoseAction, DoseEvent, SessionMeta, SessionState};
use vigil_shared::vitals::Channel;
use vigil_shared::zone::SiteZone;
use vigil_web::chart::{Band, LineChart, Marker, Series, TimeAxis, chart};
use vigil_web::layout::badge;
use vigil_web::text::duration;
use vigil_web::url_encode;

use super::state_badge;
use crate::store::SessionChart;
use crate::web::dashboard::read;
use crate::web::dashboard::{Section, Viewer, audit_view, empty_row, error_page, frame};
use crate::web::extract::ClientIp;
use crate::web::extract::check_id;
use crate::web::state::Shared;

/// The ECG strip's default width, seconds.
pub const ECG_DEFAULT_SPAN_S: u32 = 10;

/// Widths the ECG strip zooms between, seconds; at most
/// [`MAX_ECG_WINDOW_SAMPLES`](crate::store::MAX_ECG_WINDOW_SAMPLES) samples.
pub const ECG_SPANS_S: [u32; 5] = [2, 5, 10, 30, 60];

/// Colours of the charts (Okabe–Ito, readable by colour-blind viewers).
const RED: &str = "#d55e00";
const BLUE: &str = "#0072b2";
const GREEN: &str = "#009e73";
const PURPLE: &str = "#cc79a7";
const INK: &str = "#1d2939";

/// A longer step between two samples of a 1 Hz channel breaks its line, µs.
const ONE_HZ_GAP_US: i64 = 5_000_000;

/// A longer step between two blood pressure readings breaks the line (cuffs cycle every few
/// minutes; a reading missed is not a gap), µs.
const BP_GAP_US: i64 = 16 * 60_000_000;

/// The colour of an advisory's marker by its priority.
fn priority_color(p: &str) -> &'static str {
    match p {
        "high" => "#b42318",
        "medium" => "#dc6803",
        _ => "#175cd3",
    }
}

/// Query of `GET /sessions/{id}`: the ECG window.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SessionQuery {
    /// Start of the ECG strip, seconds after the ECG's first sample.
    ecg_from: Option<u32>,
    /// Width of the strip, seconds (one of [`ECG_SPANS_S`]).
    ecg_span: Option<u32>,
}

/// The ECG window a query asks for: `(offset_s, span_s)`.
fn ecg_window(q: &SessionQuery) -> (u32, u32) {
    let span = q
        .ecg_span
        .filter(|s| ECG_SPANS_S.contains(s))
        .unwrap_or(ECG_DEFAULT_SPAN_S);
    (q.ecg_from.unwrap_or(0), span)
}

/// `GET /sessions/{id}`.
pub(crate) async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = path else {
        return error_page(&viewer, StatusCode::BAD_REQUEST, "bad session id");
    };
    if check_id(&id).is_err() {
        return error_page(&viewer, StatusCode::NOT_FOUND, "no such session");
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (from_s, span_s) = ecg_window(&q);
    let (scope, key) = (viewer.who.scope().clone(), id.clone());
    let found = read(&s, move |store| {
        // The window is relative to the ECG's first sample, which the store knows.
        let Some(first) = store.ecg_first_us(&scope, &key)? else {
            return store.session_chart(&scope, &key, None, None);
        };
        let from = first + i64::from(from_s) * 1_000_000;
        let to = from + i64::from(span_s) * 1_000_000;
        store.session_chart(&scope, &key, Some(from), Some(to))
    })
    .await;
    let chart = match found {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                &viewer,
                StatusCode::NOT_FOUND,
                &format!("session {id} not found"),
            );
        }
        Err(e) => return e.into_response(),
    };
    if let Err(r) = audit_view(&s, &viewer, &ip, "view session", &id).await {
        return r;
    }
    let zone = s.zones.get(&chart.site);
    let body = session_body(&chart, &zone, from_s, span_s);
    frame(&viewer, Section::Sessions, &format!("Session {id}"), body)
}

/// `GET /sessions/{id}/fhir`.
pub(crate) async fn fhir(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Extension(ip): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = path else {
        return error_page(&viewer, StatusCode::BAD_REQUEST, "bad session id");
    };
    if check_id(&id).is_err() {
        return error_page(&viewer, StatusCode::NOT_FOUND, "no such session");
    }
    match crate::web::api::fhir_bundle(&s, &viewer.who, &ip, &id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// [`session_body`] as HTML text, for the bench, which times it and counts its bytes.
pub fn session_html(
    chart: &SessionChart,
    zone: &SiteZone,
    ecg_from_s: u32,
    ecg_span_s: u32,
) -> String {
    session_body(chart, zone, ecg_from_s, ecg_span_s).into_string()
}

/// The session page's content: facts, charts with the infusion shaded and advisories marked,
/// the ECG strip `ecg_span_s` wide from `ecg_from_s` after its first sample with zoom links,
/// and the tables. Times are the site's local times (`zone`), with the zone's abbreviation.
fn session_body(chart: &SessionChart, zone: &SiteZone, ecg_from_s: u32, ecg_span_s: u32) -> Markup {
    let m = &chart.meta;
    let start = m.started_us.unwrap_or(m.created_us);
    let last_sample = chart
        .vitals
        .iter()
        .filter(|p| p.channel != Channel::Ecg)
        .filter_map(|p| p.samples.last().and_then(|s| s.first().copied()))
        .max();
    let end = m
        .ended_us
        .or(last_sample)
        .unwrap_or(start + 60_000_000)
        .max(start + 60_000_000);
    let markers = advisory_markers(m, zone);
    let overlay = Overlay {
        span: (start, end),
        bands: &infusion_bands(m, end),
        markers: &markers,
    };
    html! {
        h1 { "Session " (m.id) }
        (facts(chart, zone, start))
        h2 { "Vitals" }
        p.muted { "Shaded: infusion running. Dashed lines: advisories (hover for detail)." }
        div id="charts" { (vitals_charts(chart, &overlay)) }
        (ecg_section(chart, &markers, ecg_from_s, ecg_span_s))
        h2 { "Dose timeline" }
        (dose_table(m, zone, start))
        h2 { "Advisories" }
        (advisory_table(m, zone))
        h2 { "Side effects" }
        (effects_table(m, zone))
        h2 { "Scores" }
        (score_table(m, zone))
        h2 { "Discharge" }
        (discharge(m, zone))
        h2 { "Notes" }
        pre { (chart.notes) }
    }
}

/// A state's stable name, as the document and the API spell it.
fn state_name(state: SessionState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Where, who, what was given, when; and the FHIR download.
fn facts(chart: &SessionChart, zone: &SiteZone, start: i64) -> Markup {
    let (m, p) = (&chart.meta, &chart.meta.protocol);
    html! {
        div.card {
            dl.facts {
                dt { "Site, room" } dd { (chart.site) " · room " (m.room) }
                dt { "Patient" } dd { (m.patient_id) }
                dt { "State" } dd { (state_badge(&state_name(m.state))) }
                dt { "Protocol" }
                dd {
                    (p.drug) " " (p.route) ", " (p.dose_mg_per_kg) " mg/kg × " (p.weight_kg)
                    " kg = " (format_args!("{:.1}", p.dose_mg_per_kg * p.weight_kg))
                    " mg over " (p.planned_minutes) " min"
                }
                dt { "Started" } dd { (zone.minute(start)) }
                dt { "Ended" }
                dd {
                    @match m.ended_us {
                        Some(e) => { (zone.minute(e)) " (" (duration(e - start)) ")" }
                        None => "—",
                    }
                }
                dt { "Delivered" }
                dd id="delivered" {
                    @let d = vigil_shared::clinical::delivered(&m.dose_events, m.ended_us.unwrap_or_else(crate::clock::now_us));
                    (format_args!("{:.1}", d.mg)) " mg in " (d.infused_us / 60_000_000) " min of pump time"
                }
            }
            p {
                a href={ "/sessions/" (url_encode(&m.id)) "/fhir" } id="fhir" {
                    "Download FHIR bundle"
                }
            }
        }
    }
}

/// The advisories as chart markers, their detail in the tooltip.
fn advisory_markers(m: &SessionMeta, zone: &SiteZone) -> Vec<Marker> {
    m.advisories
        .iter()
        .map(|a| Marker {
            t_us: a.raised_us,
            label: format!(
                "{} ({}) at {}: {}",
                a.kind,
                a.priority,
                zone.clock(a.raised_us),
                a.detail
            ),
            color: priority_color(&a.priority),
        })
        .collect()
}

/// Periods the pump was running, from the dose timeline.
fn infusion_bands(m: &SessionMeta, end_us: i64) -> Vec<Band> {
    let mut events = m.dose_events.clone();
    events.sort_by_key(|e| e.at_us);
    let mut out = Vec::new();
    let mut running_since: Option<(i64, Option<f64>)> = None;
    for e in &events {
        match e.action {
            DoseAction::Start | DoseAction::Resume => {
                running_since.get_or_insert((e.at_us, e.rate_mg_per_h));
            }
            DoseAction::RateChange => {}
            DoseAction::Pause | DoseAction::Stop => {
                if let Some((from, rate)) = running_since.take() {
                    out.push(band(&m.protocol.drug, from, e.at_us, rate));
                }
            }
        }
    }
    if let Some((from, rate)) = running_since {
        out.push(band(&m.protocol.drug, from, end_us, rate));
    }
    out
}

fn band(drug: &str, from: i64, to: i64, rate: Option<f64>) -> Band {
    Band {
        from_us: from,
        to_us: to,
        label: match rate {
            Some(r) => format!("{drug} infusion, {r:.1} mg/h"),
            None => format!("{drug} infusion"),
        },
        color: GREEN,
    }
}

/// One value of every sample of `channel` (`dim`: 0 for the first, 1 for the second …).
fn points(chart: &SessionChart, channel: Channel, dim: usize) -> Vec<(i64, f64)> {
    chart
        .vitals
        .iter()
        .find(|p| p.channel == channel)
        .map(|p| {
            p.samples
                .iter()
                .filter_map(|s| Some((*s.first()?, *s.get(dim + 1)? as f64)))
                .collect()
        })
        .unwrap_or_default()
}

/// What every vitals chart of a session shares: its time span, the infusion shaded, the
/// advisories marked.
struct Overlay<'a> {
    span: (i64, i64),
    bands: &'a [Band],
    markers: &'a [Marker],
}

impl Overlay<'_> {
    /// A chart of `series` over the session, 1200 × 230 px, the time axis in minutes.
    fn chart(
        &self,
        title: &'static str,
        unit: &'static str,
        series: Vec<Series<'static>>,
        y_range: Option<(f64, f64)>,
    ) -> Markup {
        chart(&LineChart {
            title,
            unit,
            width: 1200,
            height: 230,
            x_range: self.span,
            origin_us: self.span.0,
            axis: TimeAxis::Minutes,
            y_range,
            series,
            markers: self.markers.to_vec(),
            bands: self.bands.to_vec(),
        })
    }
}

/// Heart rate and pulse, SpO2, blood pressure.
fn vitals_charts(c: &SessionChart, overlay: &Overlay<'_>) -> Markup {
    let series = |label, color, channel, dim, max_gap_us| Series {
        label,
        color,
        points: points(c, channel, dim),
        max_gap_us,
    };
    let heart = vec![
        series("HR", RED, Channel::Hr, 0, ONE_HZ_GAP_US),
        series("Pulse", PURPLE, Channel::Pulse, 0, ONE_HZ_GAP_US),
    ];
    let spo2 = vec![series("SpO2", BLUE, Channel::Spo2, 0, ONE_HZ_GAP_US)];
    let bp = vec![
        series("Systolic", RED, Channel::Nibp, 0, BP_GAP_US),
        series("Diastolic", BLUE, Channel::Nibp, 1, BP_GAP_US),
        series("Mean", INK, Channel::Nibp, 2, BP_GAP_US),
    ];
    html! {
        (overlay.chart("Heart rate and pulse", "/min", heart, None))
        (overlay.chart("SpO2", "%", spo2, Some((80.0, 100.5))))
        (overlay.chart("Blood pressure", "mm[Hg]", bp, None))
    }
}

/// The ECG strip `span_s` wide from `from_s` after the first sample, with links to zoom, to
/// move along and to jump to each tenth minute.
fn ecg_section(c: &SessionChart, markers: &[Marker], from_s: u32, span_s: u32) -> Markup {
    let Some((first, last)) = c.ecg_span else {
        return html! {
            h2 id="ecg" { "ECG strip" }
            p.muted { "No ECG was recorded." }
        };
    };
    let from = first + i64::from(from_s) * 1_000_000;
    let strip = chart(&LineChart {
        title: "ECG",
        unit: "µV",
        width: 1200,
        height: 260,
        x_range: (from, from + i64::from(span_s) * 1_000_000),
        origin_us: first,
        axis: TimeAxis::Seconds,
        y_range: None,
        series: vec![Series {
            label: "ECG",
            color: INK,
            points: points(c, Channel::Ecg, 0),
            max_gap_us: 100_000,
        }],
        markers: markers.to_vec(),
        bands: Vec::new(),
    });
    let total_s = u32::try_from((last - first) / 1_000_000).unwrap_or(u32::MAX);
    let link = |from_s: u32, span_s: u32, text: &str, html_id: &str| {
        html! {
            a href={
                "/sessions/" (url_encode(&c.meta.id)) "?ecg_from=" (from_s) "&ecg_span=" (span_s)
                "#ecg"
            } id=(html_id) { (text) }
        }
    };
    html! {
        h2 id="ecg" { "ECG strip" }
        p.muted {
            (from_s) " s to " (from_s.saturating_add(span_s)) " s of " (total_s)
            " s recorded · zoom: "
            @if from_s > 0 {
                (link(from_s.saturating_sub(span_s), span_s, "← earlier", "ecg-prev"))
            }
            @for span in ECG_SPANS_S {
                " "
                @if span == span_s {
                    strong { (span) " s" }
                } @else {
                    (link(from_s, span, &format!("{span} s"), &format!("ecg-zoom-{span}")))
                }
            }
            @if from_s.saturating_add(span_s) < total_s {
                " " (link(from_s + span_s, span_s, "later →", "ecg-next"))
            }
        }
        p.muted {
            "jump to: "
            @for k in 0..=total_s / 600 {
                @if k > 0 { " " }
                (link(k * 600, span_s, &format!("{} min", k * 10), &format!("ecg-at-{}", k * 10)))
            }
        }
        (strip)
    }
}

/// Starts, pauses, rate changes and stops, in time order.
fn dose_table(m: &SessionMeta, zone: &SiteZone, start: i64) -> Markup {
    let mut doses: Vec<&DoseEvent> = m.dose_events.iter().collect();
    doses.sort_by_key(|d| d.at_us);
    html! {
        table {
            thead {
                tr {
                    th { "Time" } th.num { "Since start" } th { "Action" } th.num { "Rate" }
                    th { "By" }
                }
            }
            tbody {
                @for d in &doses {
                    tr {
                        td { (zone.clock(d.at_us)) }
                        td.num { (duration(d.at_us - start)) }
                        td { (format!("{:?}", d.action).to_lowercase()) }
                        td.num {
                            @match d.rate_mg_per_h {
                                Some(r) => (format_args!("{r:.1} mg/h")),
                                None => "—",
                            }
                        }
                        td { (d.by) }
                    }
                }
                @if doses.is_empty() { (empty_row(5, "No dose events.")) }
            }
        }
    }
}

/// Every advisory with its acknowledgement and clearing.
fn advisory_table(m: &SessionMeta, zone: &SiteZone) -> Markup {
    html! {
        table id="advisories" {
            thead {
                tr {
                    th { "Raised" } th { "Kind" } th { "Priority" } th { "Subject" }
                    th { "Detail" } th { "Acknowledged" } th { "Cleared" }
                }
            }
            tbody {
                @for a in &m.advisories {
                    tr.advisory {
                        td { (zone.clock(a.raised_us)) }
                        td { (a.kind) }
                        td { (badge(&a.priority, &a.priority)) }
                        td { (a.subject) }
                        td { (a.detail) }
                        td {
                            @match a.acknowledged_us {
                                Some(t) => {
                                    (zone.clock(t)) " by "
                                    (a.acknowledged_by.as_deref().unwrap_or("?"))
                                    " (" (duration(t - a.raised_us)) " after)"
                                }
                                None => (badge("warn", "not acknowledged")),
                            }
                        }
                        td { (a.cleared_us.map_or("—".into(), |t| zone.clock(t))) }
                    }
                }
                @if m.advisories.is_empty() { (empty_row(7, "No advisories.")) }
            }
        }
    }
}

/// The side effects recorded.
fn effects_table(m: &SessionMeta, zone: &SiteZone) -> Markup {
    html! {
        table {
            thead { tr { th { "Time" } th { "Effect" } th { "Severity" } th { "By" } } }
            tbody {
                @for o in &m.observations {
                    tr {
                        td { (zone.clock(o.at_us)) } td { (o.effect) } td { (o.severity) }
                        td { (o.by) }
                    }
                }
                @if m.observations.is_empty() { (empty_row(4, "No side effects recorded.")) }
            }
        }
    }
}

/// The scores recorded (sedation, PHQ-9 …).
fn score_table(m: &SessionMeta, zone: &SiteZone) -> Markup {
    html! {
        table {
            thead {
                tr {
                    th { "Time" } th { "Instrument" } th { "Phase" } th.num { "Value" }
                    th { "By" }
                }
            }
            tbody {
                @for sc in &m.scores {
                    tr {
                        td { (zone.clock(sc.at_us)) } td { (sc.instrument) } td { (sc.phase) }
                        td.num { (sc.value) } td { (sc.by) }
                    }
                }
                @if m.scores.is_empty() { (empty_row(5, "No scores recorded.")) }
            }
        }
    }
}

/// The discharge: when, the Aldrete score, escort, the driving warning, by whom.
fn discharge(m: &SessionMeta, zone: &SiteZone) -> Markup {
    let Some(d) = &m.discharge else {
        return html! { p.muted { "Not discharged yet." } };
    };
    html! {
        dl.facts {
            dt { "Discharged" } dd { (zone.minute(d.at_us)) }
            dt { "Modified Aldrete" }
            dd {
                (d.aldrete)
                @if d.aldrete < i64::from(ALDRETE_DISCHARGE_MIN) {
                    " (below " (ALDRETE_DISCHARGE_MIN) ")"
                }
            }
            dt { "Escort" } dd { (d.escort) }
            dt { "No driving 24 h" }
            dd { (if d.no_driving_ack { "acknowledged" } else { "not acknowledged" }) }
            dt { "By" } dd { (d.by) }
        }
    }
}
