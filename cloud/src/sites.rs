//! Sites as a manager sees them: the configured sites and rooms merged with the appliance
//! registry (which appliance is online, its software, its backlog). Shared by the JSON API's
//! `GET /api/v1/sites` and the dashboard's overview.

use serde::Serialize;

use crate::config::SiteInfo;
use crate::store::ApplianceRow;

/// An appliance counts as online while it is connected and was seen within this window, µs.
/// The sync server records a sign of life at least every 30 s per connection (keep-alives are
/// well under QUIC's 30 s idle timeout); three missed beats mean the record is stale, e.g.
/// after the cloud itself crashed with connections open.
pub const ONLINE_WINDOW_US: i64 = 90_000_000;

/// A room of a site in `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    /// Room id.
    pub id: String,
    /// Whether `cloud.toml` lists the room (an appliance may report from an unlisted one).
    pub configured: bool,
    /// Connected and seen within [`ONLINE_WINDOW_US`].
    pub online: bool,
    /// The connection flag as last recorded.
    pub connected: bool,
    /// The appliance's software, once it connected.
    pub software: Option<String>,
    /// Last sign of life, µs.
    pub last_seen_us: Option<i64>,
    /// Last completed sync round, µs.
    pub last_sync_us: Option<i64>,
    /// Documents the appliance still had to send.
    pub backlog_docs: u64,
    /// Bytes the appliance still had to send.
    pub backlog_bytes: u64,
    /// The cloud instance holding (or that last held) its connection.
    pub instance: Option<String>,
}

/// A site in `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteView {
    /// Site id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Whether `cloud.toml` lists the site.
    pub configured: bool,
    /// Rooms: the configured ones in order, then any other room an appliance reported from.
    pub rooms: Vec<RoomView>,
}

fn room_view(id: &str, configured: bool, row: Option<&ApplianceRow>, now_us: i64) -> RoomView {
    RoomView {
        id: id.to_owned(),
        configured,
        online: row.is_some_and(|r| {
            r.connected && now_us.saturating_sub(r.last_seen_us) <= ONLINE_WINDOW_US
        }),
        connected: row.is_some_and(|r| r.connected),
        software: row.map(|r| r.software.clone()).filter(|s| !s.is_empty()),
        last_seen_us: row.map(|r| r.last_seen_us),
        last_sync_us: row.and_then(|r| r.last_sync_us),
        backlog_docs: row.map_or(0, |r| r.backlog_docs),
        backlog_bytes: row.map_or(0, |r| r.backlog_bytes),
        instance: row.map(|r| r.instance.clone()).filter(|s| !s.is_empty()),
    }
}

/// Merges the configured sites with the appliance registry.
pub fn site_views(config: &[SiteInfo], appliances: &[ApplianceRow], now_us: i64) -> Vec<SiteView> {
    let find =
        |site: &str, room: &str| appliances.iter().find(|a| a.site == site && a.room == room);
    let mut out: Vec<SiteView> = config
        .iter()
        .map(|site| {
            let mut rooms: Vec<RoomView> = site
                .rooms
                .iter()
                .map(|room| room_view(room, true, find(&site.id, room), now_us))
                .collect();
            rooms.extend(
                appliances
                    .iter()
                    .filter(|a| a.site == site.id && !site.rooms.contains(&a.room))
                    .map(|a| room_view(&a.room, false, Some(a), now_us)),
            );
            SiteView {
                id: site.id.clone(),
                name: site.name.clone(),
                region: site.region.clone(),
                configured: true,
                rooms,
            }
        })
        .collect();
    for a in appliances {
        if config.iter().any(|s| s.id == a.site) {
            continue;
        }
        let room = room_view(&a.room, false, Some(a), now_us);
        match out.iter_mut().find(|s| s.id == a.site) {
            Some(site) => site.rooms.push(room),
            None => out.push(SiteView {
                id: a.site.clone(),
                name: a.site.clone(),
                region: String::new(),
                configured: false,
                rooms: vec![room],
            }),
        }
    }
    out
}
