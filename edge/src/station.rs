//! The site's rooms as the central station sees them: each room's live state (numerics once a
//! second, advisories as they change, ECG at full rate), this room's from its own recorder and
//! the others' from the site's peers ([`crate::peer`]).
//!
//! Live values are ephemeral: they are never stored, and a slow reader loses the oldest
//! rather than slowing anyone down. Every queue here is a [`broadcast`] channel, whose
//! receivers each keep their own place and skip ahead (losing the oldest frames) when they fall
//! [`LIVE_QUEUE`] frames behind; the recorder's thread only ever sends, which never waits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Frames a reader (a peer's connection, a station page) may fall behind before it loses the
/// oldest: about ten seconds of a room's ECG batches and numerics.
pub const LIVE_QUEUE: usize = 512;

/// A room heard from less recently than this is shown offline: its appliance sends its
/// numerics every second, and a QUIC connection to a dead peer times out sooner
/// ([`crate::peer::PEER_IDLE_TIMEOUT`]).
pub const STALE_AFTER: Duration = Duration::from_secs(4);

/// ECG kept per room for a station page that opens: the strip shows the last few seconds.
pub const ECG_KEPT_US: i64 = 5_000_000;

/// How often the station looks for rooms gone quiet.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// One room's state as its tile shows it. Sent between peers as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomLive {
    /// The room.
    pub room: String,
    /// `free`, `checked_in`, `infusing`, `recovering`.
    pub state: String,
    /// The appliance clock when this was read, µs.
    pub at_us: i64,
    /// The session shown, if any.
    pub session_id: Option<String>,
    /// The patient's initials (nothing more leaves the room on the live stream).
    pub initials: Option<String>,
    /// When the infusion started, µs.
    pub started_us: Option<i64>,
    /// Planned infusion minutes.
    pub planned_minutes: Option<u64>,
    /// The pump rate now, mg/h (`None` when not running).
    pub rate_mg_per_h: Option<f64>,
    /// Heart rate, /min.
    pub hr: Option<i32>,
    /// SpO2, %.
    pub spo2: Option<i32>,
    /// Blood pressure: systolic, diastolic, and when it was measured (µs).
    pub bp: Option<(i32, i32, i64)>,
    /// Temperature, hundredths of °C.
    pub temp_centi_c: Option<i32>,
    /// Advisories raised and not cleared, highest priority first.
    pub advisories: Vec<LiveAdvisory>,
}

/// An advisory on a tile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAdvisory {
    /// Its id in the session.
    pub id: String,
    /// `high`, `medium` or `low` (IEC 60601-1-8).
    pub priority: String,
    /// What it says.
    pub detail: String,
    /// When it was raised, µs.
    pub raised_us: i64,
    /// Who acknowledged it, if anyone.
    pub acknowledged_by: Option<String>,
}

/// What a room sends its peers on the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LiveFrame {
    /// The room's state, once a second.
    Room(RoomLive),
    /// ECG samples as the monitor delivered them: (time µs, value µV).
    Ecg(Vec<(i64, i32)>),
}

/// What a station page is told.
#[derive(Debug, Clone)]
pub enum StationEvent {
    /// A room's tile changed (its state, or online/offline).
    Room(String),
    /// New ECG samples of a room.
    Ecg(String, Arc<Vec<(i64, i32)>>),
}

/// A room's tile.
#[derive(Debug, Clone)]
pub struct Tile {
    /// The last state heard, if any.
    pub live: Option<RoomLive>,
    /// Whether the room is reachable now.
    pub online: bool,
    /// Since when (this appliance's clock, µs) it has been online or offline.
    pub since_us: i64,
    /// The last few seconds of ECG.
    pub ecg: VecDeque<(i64, i32)>,
    heard: Option<Instant>,
}

impl Tile {
    fn new(now_us: i64) -> Tile {
        Tile {
            live: None,
            online: false,
            since_us: now_us,
            ecg: VecDeque::new(),
            heard: None,
        }
    }
}

/// The site's rooms, live.
#[derive(Debug)]
pub struct Station {
    /// This appliance's site.
    pub site: String,
    /// This appliance's room.
    pub room: String,
    tiles: Mutex<BTreeMap<String, Tile>>,
    events: broadcast::Sender<StationEvent>,
    feed: broadcast::Sender<Arc<LiveFrame>>,
}

impl Station {
    /// A station for `room` of `site`, with this room's tile online.
    pub fn new(site: &str, room: &str, now_us: i64) -> Arc<Station> {
        let mut tiles = BTreeMap::new();
        let mut own = Tile::new(now_us);
        own.online = true;
        tiles.insert(room.to_owned(), own);
        Arc::new(Station {
            site: site.to_owned(),
            room: room.to_owned(),
            tiles: Mutex::new(tiles),
            events: broadcast::channel(LIVE_QUEUE).0,
            feed: broadcast::channel(LIVE_QUEUE).0,
        })
    }

    /// This room's frames, for a peer connection to send on.
    pub fn subscribe_feed(&self) -> broadcast::Receiver<Arc<LiveFrame>> {
        self.feed.subscribe()
    }

    /// Tile changes, for a station page.
    pub fn subscribe(&self) -> broadcast::Receiver<StationEvent> {
        self.events.subscribe()
    }

    /// Every tile, rooms in order.
    pub fn tiles(&self) -> BTreeMap<String, Tile> {
        self.tiles.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Rooms the station should show even before hearing from them (the site's rooms from its
    /// configuration): offline until they speak.
    pub fn expect_rooms<'a>(&self, rooms: impl IntoIterator<Item = &'a str>, now_us: i64) {
        if let Ok(mut tiles) = self.tiles.lock() {
            for room in rooms {
                tiles
                    .entry(room.to_owned())
                    .or_insert_with(|| Tile::new(now_us));
            }
        }
    }

    /// This room's state: shown on its own tile and sent to every peer.
    pub fn publish_own(&self, live: RoomLive, now_us: i64) {
        let room = self.room.clone();
        self.heard(&room, LiveFrame::Room(live.clone()), now_us);
        let _ = self.feed.send(Arc::new(LiveFrame::Room(live)));
    }

    /// This room's ECG samples, from the recorder's thread: never waits.
    pub fn publish_own_ecg(&self, samples: Vec<(i64, i32)>, now_us: i64) {
        if samples.is_empty() {
            return;
        }
        let room = self.room.clone();
        self.heard(&room, LiveFrame::Ecg(samples.clone()), now_us);
        let _ = self.feed.send(Arc::new(LiveFrame::Ecg(samples)));
    }

    /// A frame from `room` (a peer, or this room itself).
    pub fn heard(&self, room: &str, frame: LiveFrame, now_us: i64) {
        let Ok(mut tiles) = self.tiles.lock() else {
            return;
        };
        let tile = tiles
            .entry(room.to_owned())
            .or_insert_with(|| Tile::new(now_us));
        tile.heard = Some(Instant::now());
        let came_online = !tile.online;
        if came_online {
            tile.online = true;
            tile.since_us = now_us;
        }
        match frame {
            LiveFrame::Room(mut live) => {
                live.room = room.to_owned();
                let changed = tile.live.as_ref() != Some(&live);
                tile.live = Some(live);
                if changed || came_online {
                    let _ = self.events.send(StationEvent::Room(room.to_owned()));
                }
            }
            LiveFrame::Ecg(samples) => {
                tile.ecg.extend(samples.iter().copied());
                let newest = tile.ecg.back().map_or(0, |s| s.0);
                while tile.ecg.front().is_some_and(|s| s.0 < newest - ECG_KEPT_US) {
                    tile.ecg.pop_front();
                }
                if came_online {
                    let _ = self.events.send(StationEvent::Room(room.to_owned()));
                }
                let _ = self
                    .events
                    .send(StationEvent::Ecg(room.to_owned(), Arc::new(samples)));
            }
        }
    }

    /// `room`'s appliance went away (its connection closed): offline from `now_us`.
    pub fn lost(&self, room: &str, now_us: i64) {
        if room == self.room {
            return;
        }
        let Ok(mut tiles) = self.tiles.lock() else {
            return;
        };
        if let Some(tile) = tiles.get_mut(room)
            && tile.online
        {
            tile.online = false;
            tile.since_us = now_us;
            tile.ecg.clear();
            let _ = self.events.send(StationEvent::Room(room.to_owned()));
        }
    }

    /// Marks offline every other room not heard from for [`STALE_AFTER`].
    pub fn sweep(&self, now_us: i64) {
        let stale: Vec<String> = self
            .tiles
            .lock()
            .map(|tiles| {
                tiles
                    .iter()
                    .filter(|(room, t)| {
                        **room != self.room
                            && t.online
                            && t.heard.is_none_or(|h| h.elapsed() > STALE_AFTER)
                    })
                    .map(|(room, _)| room.clone())
                    .collect()
            })
            .unwrap_or_default();
        for room in stale {
            self.lost(&room, now_us);
        }
    }
}

/// A room's state from its recorder's status and its newest session: `free` with no session
/// or after one ended with a discharge or an abort; `checked_in` before the infusion starts;
/// `infusing` while the pump runs; `recovering` after it stopped, until the discharge.
pub fn read_room(
    conn: &rusqlite::Connection,
    now: &Snapshot,
) -> Result<RoomLive, crate::recorder::RecorderError> {
    use vigil_shared::doc::{DoseAction, PatientDoc, SessionDoc, SessionState};
    use vigil_shared::vitals::Channel;

    let recorder = &now.recorder;
    let value = |c: Channel| recorder.last.get(&c).map(|s| s.v[0]);
    let mut live = RoomLive {
        room: now.room.clone(),
        state: "free".into(),
        at_us: now.now_us,
        hr: value(Channel::Hr),
        spo2: value(Channel::Spo2),
        temp_centi_c: value(Channel::Temp),
        bp: recorder
            .last
            .get(&Channel::Nibp)
            .map(|s| (s.v[0], s.v[1], s.t_us)),
        ..RoomLive::default()
    };
    // The session shown: the one recording, else the newest.
    let shown = match &recorder.session {
        Some(active) => Some(active.id.clone()),
        None => crate::store::sessions(conn)?
            .into_iter()
            .next()
            .map(|r| r.id),
    };
    let Some(id) = shown else {
        return Ok(live);
    };
    let Some(doc) = crate::store::load_typed::<SessionDoc>(conn, &id)? else {
        return Ok(live);
    };
    let meta = doc.meta()?;
    let running = vigil_shared::clinical::infusion_stopped(&meta.dose_events);
    live.state = match meta.state {
        SessionState::Planned => "checked_in",
        SessionState::InProgress if meta.dose_events.is_empty() => "checked_in",
        SessionState::InProgress if !running => "infusing",
        SessionState::InProgress => "recovering",
        SessionState::Completed if meta.discharge.is_none() => "recovering",
        SessionState::Completed | SessionState::Aborted => return Ok(live),
    }
    .into();
    live.session_id = Some(meta.id.clone());
    live.started_us = meta
        .dose_events
        .iter()
        .filter(|e| e.action == DoseAction::Start)
        .map(|e| e.at_us)
        .min()
        .or(meta.started_us);
    live.planned_minutes = Some(meta.protocol.planned_minutes);
    if !running {
        live.rate_mg_per_h = meta
            .dose_events
            .iter()
            .filter_map(|e| e.rate_mg_per_h.map(|r| (e.at_us, r)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, r)| r);
    }
    if let Some(doc) = crate::store::load_typed::<PatientDoc>(conn, &meta.patient_id)? {
        let p = doc.record()?;
        live.initials = Some(initials(&p.given_name, &p.family_name));
    }
    let rank = |p: &str| match p {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    live.advisories = meta
        .advisories
        .iter()
        .filter(|a| a.cleared_us.is_none())
        .map(|a| LiveAdvisory {
            id: a.id.clone(),
            priority: a.priority.clone(),
            detail: a.detail.clone(),
            raised_us: a.raised_us,
            acknowledged_by: a.acknowledged_by.clone(),
        })
        .collect();
    live.advisories
        .sort_by_key(|a| (rank(&a.priority), std::cmp::Reverse(a.raised_us)));
    Ok(live)
}

/// "Ada Lovelace" → "A.L.": all a tile shows of who is in the chair.
pub fn initials(given: &str, family: &str) -> String {
    [given, family]
        .iter()
        .filter_map(|n| n.trim().chars().next())
        .flat_map(|c| c.to_uppercase().chain(std::iter::once('.')))
        .collect()
}

/// The room as its recorder last reported it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room.
    pub room: String,
    /// The appliance clock, µs.
    pub now_us: i64,
    /// The recorder's status: live values, the session recording.
    pub recorder: crate::recorder::RecorderStatus,
}

/// Publishes this room's state once a second, from `snapshot` and the database, and keeps the
/// site's rooms (from its configuration) on the station, until the appliance stops.
pub async fn publish_loop(
    station: Arc<Station>,
    db_path: std::path::PathBuf,
    snapshot: impl Fn() -> Option<Snapshot> + Send + 'static,
) {
    loop {
        let (path, status_now) = (db_path.clone(), snapshot());
        let site = station.site.clone();
        let read = tokio::task::spawn_blocking(move || {
            let status = status_now?;
            let conn = crate::store::open_reader(&path).ok()?;
            let live = read_room(&conn, &status)
                .map_err(|e| tracing::warn!(error = %e, "cannot read the room for the station"))
                .ok()?;
            let rooms: Vec<String> = crate::reads::site_config_doc(&conn, &site)
                .ok()
                .flatten()
                .and_then(|d| d.config().ok())
                .map(|c| c.rooms.into_iter().map(|r| r.id).collect())
                .unwrap_or_default();
            Some((live, rooms, status.now_us))
        })
        .await
        .ok()
        .flatten();
        if let Some((live, rooms, now_us)) = read {
            station.expect_rooms(rooms.iter().map(String::as_str), now_us);
            station.publish_own(live, now_us);
        }
        tokio::time::sleep(PUBLISH_INTERVAL).await;
    }
}

/// How often a room sends its numerics and advisories.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn live(room: &str, hr: i32) -> RoomLive {
        RoomLive {
            room: room.into(),
            state: "infusing".into(),
            hr: Some(hr),
            ..RoomLive::default()
        }
    }

    #[tokio::test]
    async fn a_peer_is_online_while_heard_and_offline_once_lost() {
        let station = Station::new("austin", "1", 0);
        let mut events = station.subscribe();
        station.expect_rooms(["1", "2", "3"], 0);
        assert!(!station.tiles()["2"].online);
        station.heard("2", LiveFrame::Room(live("2", 80)), 1_000);
        let t = &station.tiles()["2"];
        assert!(t.online);
        assert_eq!((t.since_us, t.live.as_ref().unwrap().hr), (1_000, Some(80)));
        assert!(matches!(events.try_recv(), Ok(StationEvent::Room(r)) if r == "2"));
        // The same state again changes nothing on the page.
        station.heard("2", LiveFrame::Room(live("2", 80)), 2_000);
        assert!(events.try_recv().is_err());
        station.lost("2", 3_000);
        let t = &station.tiles()["2"];
        assert!(!t.online);
        assert_eq!(t.since_us, 3_000);
        // This room is never offline to itself.
        station.lost("1", 3_000);
        assert!(station.tiles()["1"].online);
    }

    #[test]
    fn initials_are_the_first_letters() {
        assert_eq!(initials("ada", "Lovelace"), "A.L.");
        assert_eq!(initials(" Émile ", ""), "É.");
    }

    #[test]
    fn a_frame_names_the_room_it_came_from_not_the_room_it_claims() {
        let station = Station::new("austin", "1", 0);
        station.heard("2", LiveFrame::Room(live("9", 70)), 0);
        assert_eq!(station.tiles()["2"].live.as_ref().unwrap().room, "2");
        assert!(!station.tiles().contains_key("9"));
    }

    #[test]
    fn the_strip_keeps_the_last_seconds_of_ecg() {
        let station = Station::new("austin", "1", 0);
        let samples: Vec<(i64, i32)> = (0..2_500).map(|i| (i * 4_000, i as i32)).collect();
        station.heard("2", LiveFrame::Ecg(samples), 0);
        let ecg = &station.tiles()["2"].ecg;
        assert_eq!(ecg.back().unwrap().0, 2_499 * 4_000);
        assert!(ecg.front().unwrap().0 >= 2_499 * 4_000 - ECG_KEPT_US);
        assert_eq!(ecg.len(), 1_251);
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_frames_and_never_blocks_the_sender() {
        let station = Station::new("austin", "1", 0);
        let mut slow = station.subscribe_feed();
        for i in 0..(LIVE_QUEUE as i64 + 100) {
            station.publish_own_ecg(vec![(i, 0)], 0);
        }
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 100),
            other => panic!("expected to have lagged, got {other:?}"),
        }
        // What it then reads is the newest LIVE_QUEUE frames, oldest first.
        let Ok(first) = slow.try_recv() else {
            panic!("nothing after the lag")
        };
        assert_eq!(*first, LiveFrame::Ecg(vec![(100, 0)]));
    }
}
