//! What Vigil's two web servers share: the cloud dashboard and the appliance's room screen.
//!
//! - [`layout`]: the page frame (top bar, navigation, account area) and its stylesheet, in
//!   maud, so every interpolated value is escaped unless it is typed as trusted
//!   ([`maud::PreEscaped`]);
//! - [`chart`]: server-rendered SVG line charts;
//! - [`http`]: cookies, the security headers every page carries, whether a browser came over
//!   TLS ([`http::Transport`]), and CSRF checks;
//! - [`secret`]: random tokens and constant-time comparison;
//! - [`service`]: readiness and the watchdog under systemd;
//! - [`text`]: escaping for the few strings built outside maud, query encoding, CSV fields.
//!
//! Dependencies run one way: the servers' `web` modules use this crate; this crate knows
//! nothing of users, stores, documents or clocks. `vigil-shared` (the domain, with no I/O)
//! stays free of HTTP; this crate may depend on axum.

pub mod chart;
pub mod http;
pub mod layout;
pub mod metrics;
pub mod secret;
pub mod service;
pub mod text;

pub use text::{Esc, csv_field, csv_row, escape, url_encode};
