//! The dashboard's pages about rooms and sessions, a module each: the overview (regions →
//! sites → rooms), the session list with filters, paging and CSV, one session with its charts,
//! the admin's audit log and each user's account page. The reports are in
//! [`super::reports`]. What more than one of these pages draws is here.

pub(crate) mod account;
pub(crate) mod attention;
pub(crate) mod audit;
pub(crate) mod fleet;
pub(crate) mod overview;
pub(crate) mod session;
pub(crate) mod sessions;

use maud::Markup;
use vigil_shared::zone::SiteZone;
use vigil_web::layout::badge;

/// An instant to the minute in `zone`, or a dash for none.
fn opt_minute(zone: &SiteZone, us: Option<i64>) -> String {
    us.map_or_else(|| "—".to_owned(), |us| zone.minute(us))
}

/// A session's state (as the document spells it) as a badge.
fn state_badge(state: &str) -> Markup {
    let class = match state {
        "in_progress" => "low",
        "completed" => "ok",
        "aborted" => "bad",
        _ => "",
    };
    badge(class, &state.replace('_', " "))
}
