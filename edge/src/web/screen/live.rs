//! Server-sent events of the session page: the room monitors' live values, and the
//! session's timeline whenever its document changes (another tablet's edit, an advisory).
//!
//! Each stream wakes every [`TICK`]: it reads the live values the recorder thread refreshes
//! after every poll of the monitors ([`crate::app::POLL_INTERVAL`]) and sends them when they
//! changed, and it reads the session document's stored version (one indexed row) and, when
//! that moved, re-renders the advisories and the timeline and sends whichever changed. So a value reaches the screen at most one poll
//! plus one tick after the monitor sent it, and one tablet's edit reaches the others within a
//! tick of being durable.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use vigil_shared::vitals::{Channel, Sample};

use super::load;
use super::session::changing;
use super::{Shared, Viewer, site_room};
use crate::store;

/// How often a stream looks for news: 4 Hz keeps values under a second behind the monitor.
pub const TICK: Duration = Duration::from_millis(250);

/// Longest a stream lives; the browser's `EventSource` reconnects by itself, and the
/// reconnection checks the sign-in again.
pub const MAX_STREAM: Duration = Duration::from_secs(600);

struct Tick {
    s: Shared,
    viewer: Viewer,
    id: String,
    names: BTreeMap<String, String>,
    version: Option<i64>,
    vitals: String,
    /// The advisories and timeline as last rendered: sent again only when they differ, so a
    /// new vitals chunk (which changes the document, not what the page shows) does not
    /// replace the buttons under a nurse's finger.
    advisories: String,
    timeline: String,
    started: std::time::Instant,
    first: bool,
}

/// The live values as the screen shows them (strings, formatted here), and how far behind the
/// appliance clock the newest sample is, in real milliseconds (a sped-up simulated room's
/// clock runs `time_factor` times faster).
fn vitals_json(last: &BTreeMap<Channel, Sample>, now_us: i64, time_factor: f64) -> String {
    let mut fields = Vec::new();
    let mut newest = None;
    for (&channel, sample) in last {
        let text = match channel {
            Channel::Hr | Channel::Pulse | Channel::Spo2 => sample.v[0].to_string(),
            Channel::Nibp => format!("{}/{}", sample.v[0], sample.v[1]),
            Channel::Temp => format!("{:.1}", f64::from(sample.v[0]) / 100.0),
            Channel::Rr | Channel::Ecg => continue,
        };
        fields.push(format!("\"{}\":\"{}\"", channel.name(), text));
        if channel != Channel::Nibp {
            newest = Some(newest.map_or(sample.t_us, |n: i64| n.max(sample.t_us)));
        }
    }
    let factor = if time_factor > 0.0 { time_factor } else { 1.0 };
    let behind_ms = newest.map_or(-1, |t| {
        ((now_us - t).max(0) as f64 / 1000.0 / factor).round() as i64
    });
    format!(
        "{{\"values\":{{{}}},\"behind_ms\":{behind_ms},\"t_us\":{}}}",
        fields.join(","),
        newest.unwrap_or(0)
    )
}

fn version(conn: &rusqlite::Connection, id: &str) -> Option<i64> {
    conn.query_row("SELECT version FROM documents WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .ok()
}

async fn step(mut t: Tick) -> Option<(Vec<Event>, Tick)> {
    // Signed out (on this tablet or by the idle timeout): the stream ends with the sign-in.
    if t.started.elapsed() > MAX_STREAM || !t.s.api.security.sessions.is_signed_in(&t.viewer.token)
    {
        return None;
    }
    if !t.first {
        tokio::time::sleep(TICK).await;
    }
    t.first = false;
    let mut events = Vec::new();
    let (last, now_us, factor) =
        t.s.api
            .status
            .lock()
            .map(|st| (st.recorder.last.clone(), st.now_us, st.time_factor))
            .unwrap_or_default();
    let values = vitals_json(&last, now_us, factor);
    // Compare without the lag, which changes every tick.
    let key = values
        .split(",\"behind_ms\"")
        .next()
        .unwrap_or("")
        .to_owned();
    if key != t.vitals {
        t.vitals = key;
        events.push(Event::default().event("vitals").data(values));
    }
    // The timeline, when the document moved.
    let path = t.s.api.db_path.clone();
    let id = t.id.clone();
    let seen = t.version;
    let viewer = t.viewer.clone();
    let names = t.names.clone();
    let fresh = tokio::task::spawn_blocking(move || {
        let conn = store::open_reader(&path).ok()?;
        let v = version(&conn, &id)?;
        if Some(v) == seen {
            return Some((v, None));
        }
        let parts = load::session(&conn, &id).ok()??;
        let (advisories, timeline) = changing(&parts, &viewer, &names);
        // One line each: event-stream data lines end at a newline.
        let one_line = |h: maud::Markup| h.into_string().replace(['\r', '\n'], " ");
        Some((v, Some((one_line(advisories), one_line(timeline)))))
    })
    .await
    .ok()
    .flatten();
    if let Some((v, html)) = fresh {
        t.version = Some(v);
        if let Some((advisories, timeline)) = html {
            // The page was rendered with the document as the first tick finds it.
            let first = seen.is_none();
            if advisories != t.advisories {
                if !first {
                    events.push(
                        Event::default()
                            .event("advisories")
                            .data(advisories.clone()),
                    );
                }
                t.advisories = advisories;
            }
            if timeline != t.timeline {
                if !first {
                    events.push(Event::default().event("timeline").data(timeline.clone()));
                }
                t.timeline = timeline;
            }
        }
    }
    Some((events, t))
}

/// `GET /screen/sessions/{id}/live`: the event stream of a session page.
pub(crate) async fn stream(
    State(s): State<Shared>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (site, _) = site_room(&s);
    let path = s.api.db_path.clone();
    let names = tokio::task::spawn_blocking(move || {
        store::open_reader(&path)
            .ok()
            .map(|c| load::staff_names(&c, &site))
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    let start = Tick {
        s,
        viewer,
        id,
        names,
        version: None,
        vitals: String::new(),
        advisories: String::new(),
        timeline: String::new(),
        started: std::time::Instant::now(),
        first: true,
    };
    let events = stream::unfold(start, step)
        .flat_map(stream::iter)
        .map(Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_are_formatted_for_the_screen() {
        let mut last = BTreeMap::new();
        last.insert(Channel::Hr, Sample::scalar(9_000_000, 72));
        last.insert(Channel::Temp, Sample::scalar(9_500_000, 3_684));
        last.insert(
            Channel::Nibp,
            Sample {
                t_us: 1_000_000,
                v: [128, 82, 97],
            },
        );
        last.insert(Channel::Ecg, Sample::scalar(9_900_000, 300));
        let json = vitals_json(&last, 10_000_000, 1.0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["values"]["hr"], "72");
        assert_eq!(v["values"]["temp"], "36.8");
        assert_eq!(v["values"]["nibp"], "128/82");
        assert!(v["values"].get("ecg").is_none());
        // Newest non-BP sample at 9.5 s, clock at 10 s: half a second behind.
        assert_eq!(v["behind_ms"], 500);
        // A room simulated at 10x: half a second of its clock is 50 ms of real time.
        let v: serde_json::Value =
            serde_json::from_str(&vitals_json(&last, 10_000_000, 10.0)).unwrap();
        assert_eq!(v["behind_ms"], 50);
    }
}
