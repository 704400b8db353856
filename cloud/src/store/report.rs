//! The read side of [`CloudStore`] for the dashboard's pages and reports: room activity for the
//! overview, a session's charts (its document loaded once for every channel), and the rows
//! the advisory, utilisation and outcome reports are computed from.
//!
//! Every query takes the caller's [`Scope`] and filters in SQL, so rows of a site out of
//! scope never leave the database. Nothing here writes or decides scope; [`crate::auth`] does.

use serde::Serialize;
use vigil_shared::doc::{SessionDoc, SessionMeta};
use vigil_shared::vitals::Channel;

use super::db::{Arg, Dialect, ToArg, json_field};
use super::reads::{VitalsPage, vitals_page};
use super::{CloudStore, StoreError, load_in_scope, projection, scope_clause};
use crate::auth::Scope;

/// Most ECG samples one chart window decodes: 60 s at 250 Hz. The session page shows a strip
/// of 10 s by default; zooming out is capped here so a page never decodes a whole session.
pub const MAX_ECG_WINDOW_SAMPLES: usize = 15_000;

/// Most rows a report query returns. A region's year of sessions (50 sites × 6 rooms × 8 a
/// day × 365) is under a million; reports are over date ranges, and past this they are cut.
pub const MAX_REPORT_ROWS: usize = 200_000;

/// Sessions started today and running now, per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomActivity {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Sessions started at or after the given instant.
    pub sessions_today: u64,
    /// Sessions in progress.
    pub in_progress: u64,
}

/// What the session page draws: the metadata and every chart's samples.
#[derive(Debug, Clone)]
pub struct SessionChart {
    /// The registry's site.
    pub site: String,
    /// Typed metadata.
    pub meta: SessionMeta,
    /// Notes.
    pub notes: String,
    /// Samples per channel (every sample of the low-rate channels; ECG only in the window).
    pub vitals: Vec<VitalsPage>,
    /// The ECG's first and last sample times over the whole session, µs.
    pub ecg_span: Option<(i64, i64)>,
}

/// The facts of a session the reports need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReportRow {
    /// Session id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Patient.
    pub patient_id: String,
    /// State.
    pub state: String,
    /// Started, µs.
    pub started_us: Option<i64>,
    /// Ended, µs.
    pub ended_us: Option<i64>,
    /// Discharged, µs.
    pub discharge_us: Option<i64>,
}

/// A count of advisories or side effects at a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvisoryCount {
    /// Site.
    pub site: String,
    /// `advisory` or `side_effect`.
    pub category: String,
    /// The advisory's rule (`bp_high`…) or the effect (`nausea`…).
    pub kind: String,
    /// The advisory's priority or the effect's severity.
    pub level: String,
    /// How many.
    pub count: u64,
}

/// Sessions per site in a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteSessionCount {
    /// Site.
    pub site: String,
    /// Sessions started in the range.
    pub sessions: u64,
}

/// The inputs of the outcomes report at one site: per patient, the planned induction, the
/// completed sessions and the PHQ-9 totals in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeSite {
    /// Site.
    pub site: String,
    /// Its patients.
    pub patients: Vec<PatientOutcomeInput>,
}

/// What one patient's outcome is worked out from (`clinical::outcomes::phq9_outcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientOutcomeInput {
    /// Patient id.
    pub patient: String,
    /// Infusions the induction plans.
    pub planned: u64,
    /// Start times of the completed sessions (infusions done), µs.
    pub done_us: Vec<i64>,
    /// PHQ-9 totals `(at_us, total)`: the course record's, or else those recorded in sessions.
    pub phq9: Vec<(i64, i64)>,
}

fn range_clause(
    column: &str,
    from_us: Option<i64>,
    to_us: Option<i64>,
    args: &mut Vec<Arg<'_>>,
) -> String {
    let mut out = String::new();
    if let Some(f) = from_us {
        out.push_str(&format!(" AND {column} >= ?"));
        args.push(Arg::Int(f));
    }
    if let Some(t) = to_us {
        out.push_str(&format!(" AND {column} < ?"));
        args.push(Arg::Int(t));
    }
    out
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl CloudStore {
    /// Per room: sessions started at or after `since_us`, and sessions in progress.
    pub fn room_activity(
        &self,
        scope: &Scope,
        since_us: i64,
    ) -> Result<Vec<RoomActivity>, StoreError> {
        let mut args = vec![Arg::Int(since_us)];
        let scope = scope_clause("site", scope, &mut args);
        let sql = format!(
            "SELECT site, room,
                    sum(CASE WHEN started_us >= ?1 THEN 1 ELSE 0 END),
                    sum(CASE WHEN state = 'in_progress' THEN 1 ELSE 0 END)
             FROM sessions WHERE TRUE {scope} GROUP BY site, room ORDER BY site, room"
        );
        self.read(|db| {
            db.rows(&sql, &args)?
                .iter()
                .map(|r| {
                    Ok(RoomActivity {
                        site: r.get(0)?,
                        room: r.get(1)?,
                        sessions_today: count(r.get(2)?),
                        in_progress: count(r.get(3)?),
                    })
                })
                .collect()
        })
    }

    /// The session page's data: the document is loaded once; HR, SpO2, pulse, blood pressure
    /// and temperature in full, the ECG only in `[ecg_from_us, ecg_to_us)` and at most
    /// [`MAX_ECG_WINDOW_SAMPLES`]. `None` if there is no such session or it is out of scope.
    pub fn session_chart(
        &self,
        scope: &Scope,
        id: &str,
        ecg_from_us: Option<i64>,
        ecg_to_us: Option<i64>,
    ) -> Result<Option<SessionChart>, StoreError> {
        self.read(|db| {
            let kind = vigil_shared::wire::DocKind::Session;
            let Some(stored) = load_in_scope(db, scope, id, kind)? else {
                return Ok(None);
            };
            let stats = projection::read_channels(db, id)?;
            let corrupt = |e: vigil_shared::doc::DocError| StoreError::CorruptDocument {
                id: id.to_owned(),
                reason: e.to_string(),
            };
            let mut vitals = Vec::new();
            for channel in [
                Channel::Hr,
                Channel::Spo2,
                Channel::Pulse,
                Channel::Nibp,
                Channel::Temp,
            ] {
                let corrupt_chunks = stats.get(&channel).map_or(0, |s| s.corrupt_chunks);
                vitals.push(vitals_page(
                    &stored.doc,
                    channel,
                    None,
                    None,
                    corrupt_chunks,
                    super::MAX_VITALS_PER_PAGE,
                ));
            }
            let ecg_stats = stats.get(&Channel::Ecg);
            let ecg_span = ecg_stats.and_then(|s| Some((s.first_us?, s.last_us?)));
            if ecg_span.is_some() {
                let from = ecg_from_us.or(ecg_span.map(|s| s.0));
                vitals.push(vitals_page(
                    &stored.doc,
                    Channel::Ecg,
                    from,
                    ecg_to_us,
                    ecg_stats.map_or(0, |s| s.corrupt_chunks),
                    MAX_ECG_WINDOW_SAMPLES,
                ));
            }
            let session = SessionDoc::from_automerge(stored.doc).map_err(corrupt)?;
            let meta = session.meta().map_err(corrupt)?;
            let notes = session.notes().map_err(corrupt)?;
            Ok(Some(SessionChart {
                site: stored.site,
                meta,
                notes,
                vitals,
                ecg_span,
            }))
        })
    }

    /// The time of a session's first ECG sample, from the projection; `None` also when the
    /// session is out of scope.
    pub fn ecg_first_us(&self, scope: &Scope, id: &str) -> Result<Option<i64>, StoreError> {
        let mut args = vec![id.to_arg()];
        let in_scope = scope_clause("site", scope, &mut args);
        self.read(|db| {
            let visible: bool = db
                .one(
                    &format!("SELECT EXISTS (SELECT 1 FROM documents WHERE id = ?1 {in_scope})"),
                    &args,
                )?
                .get(0)?;
            if !visible {
                return Ok(None);
            }
            Ok(projection::read_channels(db, id)?
                .get(&Channel::Ecg)
                .and_then(|s| s.first_us))
        })
    }

    /// Sessions started in `[from_us, to_us)` at the sites in scope, by site, room and start.
    pub fn session_report_rows(
        &self,
        scope: &Scope,
        from_us: Option<i64>,
        to_us: Option<i64>,
    ) -> Result<Vec<SessionReportRow>, StoreError> {
        let mut args = Vec::new();
        let scope = scope_clause("site", scope, &mut args);
        let range = range_clause("started_us", from_us, to_us, &mut args);
        let sql = format!(
            "SELECT id, site, room, patient_id, state, started_us, ended_us, discharge_us
             FROM sessions WHERE started_us IS NOT NULL {scope} {range}
             ORDER BY site, room, started_us LIMIT {MAX_REPORT_ROWS}"
        );
        self.read(|db| {
            db.rows(&sql, &args)?
                .iter()
                .map(|r| {
                    Ok(SessionReportRow {
                        id: r.get(0)?,
                        site: r.get(1)?,
                        room: r.get(2)?,
                        patient_id: r.get(3)?,
                        state: r.get(4)?,
                        started_us: r.get(5)?,
                        ended_us: r.get(6)?,
                        discharge_us: r.get(7)?,
                    })
                })
                .collect()
        })
    }

    /// Sessions started in the range, per site in scope.
    pub fn site_session_counts(
        &self,
        scope: &Scope,
        from_us: Option<i64>,
        to_us: Option<i64>,
    ) -> Result<Vec<SiteSessionCount>, StoreError> {
        let mut args = Vec::new();
        let scope = scope_clause("site", scope, &mut args);
        let range = range_clause("started_us", from_us, to_us, &mut args);
        let sql = format!(
            "SELECT site, count(*) FROM sessions WHERE started_us IS NOT NULL {scope} {range}
             GROUP BY site ORDER BY site"
        );
        self.read(|db| {
            db.rows(&sql, &args)?
                .iter()
                .map(|r| {
                    Ok(SiteSessionCount {
                        site: r.get(0)?,
                        sessions: count(r.get(1)?),
                    })
                })
                .collect()
        })
    }

    /// Advisories (by rule and priority) and side effects (by effect and severity) of the
    /// sessions started in the range, per site in scope.
    pub fn advisory_counts(
        &self,
        scope: &Scope,
        from_us: Option<i64>,
        to_us: Option<i64>,
    ) -> Result<Vec<AdvisoryCount>, StoreError> {
        let mut args = Vec::new();
        let scope = scope_clause("s.site", scope, &mut args);
        let range = range_clause("s.started_us", from_us, to_us, &mut args);
        let sql = |d: Dialect| {
            let effect = json_field(d, "e.detail", "effect");
            let severity = json_field(d, "e.detail", "severity");
            format!(
                "SELECT s.site, 'advisory', a.kind, a.priority, count(*)
             FROM advisories a JOIN sessions s ON s.id = a.session_id
             WHERE s.started_us IS NOT NULL {scope} {range}
             GROUP BY s.site, a.kind, a.priority
             UNION ALL
             SELECT s.site, 'side_effect', {effect}, {severity}, count(*)
             FROM events e JOIN sessions s ON s.id = e.session_id
             WHERE e.type = 'observation' AND s.started_us IS NOT NULL {scope} {range}
             GROUP BY s.site, 2, 3, 4
             ORDER BY 1, 2, 3, 4"
            )
        };
        let mut all_args = args.clone();
        all_args.extend(args);
        self.read(|db| {
            let sql = sql(db.dialect());
            db.rows(&sql, &all_args)?
                .iter()
                .map(|r| {
                    Ok(AdvisoryCount {
                        site: r.get(0)?,
                        category: r.get(1)?,
                        kind: r.get::<Option<String>>(2)?.unwrap_or_default(),
                        level: r.get::<Option<String>>(3)?.unwrap_or_default(),
                        count: count(r.get(4)?),
                    })
                })
                .collect()
        })
    }

    /// Per site in scope and per patient with a session there: the induction planned (from
    /// the patient's course, 6 when the patient document has not arrived), sessions completed
    /// and the PHQ-9 totals, oldest first: the patient's course record (outcome scores in the
    /// patient document) when it holds any, otherwise the totals recorded in sessions. Never
    /// both, since the room screen writes each pre-infusion PHQ-9 to both places. A patient
    /// document counts only for sessions of its own site, so a session naming another site's
    /// patient cannot pull that patient's scores into this site's report.
    pub fn outcome_inputs(&self, scope: &Scope) -> Result<Vec<OutcomeSite>, StoreError> {
        let mut args = Vec::new();
        let scope = scope_clause("s.site", scope, &mut args);
        let sql = |d: Dialect| match d {
            Dialect::Sqlite => format!(
                "SELECT s.site, s.patient_id,
                        p.course,
                        group_concat(CASE WHEN s.state = 'completed'
                                          THEN coalesce(s.started_us, s.created_us) END, ','),
                        (SELECT group_concat(v, ',') FROM (
                            SELECT e.at_us || ':' || json_extract(e.detail, '$.value') AS v
                            FROM events e JOIN sessions s2 ON s2.id = e.session_id
                            WHERE e.type = 'score' AND s2.patient_id = s.patient_id
                              AND s2.site = s.site
                              AND json_extract(e.detail, '$.instrument') = 'phq9'
                            ORDER BY e.at_us)),
                        (SELECT group_concat(v, ',') FROM (
                            SELECT json_extract(j.value, '$.at_us') || ':'
                                   || json_extract(j.value, '$.value') AS v
                            FROM json_each(p.outcome_scores) j
                            WHERE json_extract(j.value, '$.instrument') = 'phq9'
                            ORDER BY json_extract(j.value, '$.at_us')))
                 FROM sessions s LEFT JOIN patients p ON p.id = s.patient_id AND p.site = s.site
                 WHERE TRUE {scope}
                 GROUP BY s.site, s.patient_id ORDER BY s.site, s.patient_id
                 LIMIT {MAX_REPORT_ROWS}"
            ),
            // The same on PostgreSQL, which groups first and then reads each group's scores.
            Dialect::Postgres => format!(
                "SELECT g.site, g.patient_id, g.course, g.done,
                        (SELECT string_agg(CAST(e.at_us AS TEXT) || ':'
                                           || (CAST(e.detail AS jsonb) ->> 'value'),
                                           ',' ORDER BY e.at_us)
                         FROM events e JOIN sessions s2 ON s2.id = e.session_id
                         WHERE e.type = 'score' AND s2.patient_id = g.patient_id
                           AND s2.site = g.site
                           AND CAST(e.detail AS jsonb) ->> 'instrument' = 'phq9'),
                        (SELECT string_agg((j.value ->> 'at_us') || ':' || (j.value ->> 'value'),
                                           ',' ORDER BY CAST(j.value ->> 'at_us' AS BIGINT))
                         FROM jsonb_array_elements(CAST(g.outcome_scores AS jsonb)) j
                         WHERE j.value ->> 'instrument' = 'phq9')
                 FROM (SELECT s.site, s.patient_id, max(p.course) AS course,
                              max(p.outcome_scores) AS outcome_scores,
                              string_agg(CASE WHEN s.state = 'completed'
                                    THEN CAST(coalesce(s.started_us, s.created_us) AS TEXT) END,
                                    ',') AS done
                       FROM sessions s
                       LEFT JOIN patients p ON p.id = s.patient_id AND p.site = s.site
                       WHERE TRUE {scope}
                       GROUP BY s.site, s.patient_id) g
                 ORDER BY g.site, g.patient_id
                 LIMIT {MAX_REPORT_ROWS}"
            ),
        };
        self.read(|db| {
            let sql = sql(db.dialect());
            let rows = db.rows(&sql, &args)?;
            let rows = rows.iter().map(|r| {
                Ok::<_, StoreError>((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<Option<String>>(3)?,
                    r.get::<Option<String>>(4)?,
                    r.get::<Option<String>>(5)?,
                ))
            });
            let mut out: Vec<OutcomeSite> = Vec::new();
            for row in rows {
                let (site, patient, course, done, in_sessions, in_course) = row?;
                // The course plan as the patient record holds it; the default plan before the
                // record arrives. One planned count with the room screen.
                let plan: vigil_shared::doc::CoursePlan = course
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or_default();
                let planned = vigil_shared::clinical::planned_infusions(&plan);
                let done_us: Vec<i64> = done
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|v| v.trim().parse().ok())
                    .collect();
                // `at_us:total` pairs; anything unreadable is skipped.
                let parse = |list: Option<String>| -> Vec<(i64, i64)> {
                    list.unwrap_or_default()
                        .split(',')
                        .filter_map(|pair| {
                            let (at, v) = pair.trim().split_once(':')?;
                            Some((at.parse().ok()?, v.parse().ok()?))
                        })
                        .collect()
                };
                let course = parse(in_course);
                let phq9 = if course.is_empty() {
                    parse(in_sessions)
                } else {
                    course
                };
                let input = PatientOutcomeInput {
                    patient,
                    planned,
                    done_us,
                    phq9,
                };
                match out.last_mut() {
                    Some(o) if o.site == site => o.patients.push(input),
                    _ => out.push(OutcomeSite {
                        site,
                        patients: vec![input],
                    }),
                }
            }
            Ok(out)
        })
    }
}
