//! Who is asking and by which name: the client's address (behind trusted proxies, from
//! `X-Forwarded-For`) and the `Host` check that refuses names this server does not answer to
//! (DNS rebinding gets 421).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::Shared;
use crate::config::ProxyNet;

/// Addresses of `X-Forwarded-For` looked at, from the right: a chain of proxies is a handful;
/// a longer list is padding meant to cost the server time.
const MAX_FORWARDED_HOPS: usize = 16;

/// Longest `Host` value quoted back in a refusal.
const MAX_QUOTED_HOST: usize = 100;

/// The two ends of the TCP connection a request came on: serve the router with
/// `into_make_service_with_connect_info::<ClientConn>()` so that the `Host` check knows the
/// address the request arrived at. (`SocketAddr` connection info works too, without it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConn {
    /// The peer: the client, or a proxy.
    pub peer: SocketAddr,
    /// This server's end, when the socket could tell.
    pub local: Option<SocketAddr>,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientConn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientConn {
            peer: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

/// The connection's ends as far as the server was told.
pub(super) fn connection(req: &Request) -> (Option<IpAddr>, Option<IpAddr>) {
    let ext = req.extensions();
    if let Some(ConnectInfo(c)) = ext.get::<ConnectInfo<ClientConn>>() {
        return (Some(c.peer.ip()), c.local.map(|l| l.ip()));
    }
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    (peer, None)
}

/// An address as written in `X-Forwarded-For`: bare, `v4:port` or `[v6]:port`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    entry.split_once(':')?.0.parse().ok()
}

/// The client's address: the TCP peer's (`unknown` without one), unless the peer is a trusted
/// proxy; then the right-most `X-Forwarded-For` address that is not a trusted proxy (each
/// proxy appends the address it saw, so addresses left of the first untrusted one are the
/// client's own claims). If every address is a trusted proxy, the left-most; if an entry is
/// unreadable, the trusted hop that wrote it.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[ProxyNet],
) -> String {
    let Some(peer) = peer else {
        return "unknown".to_owned();
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer.to_string();
    }
    let entries: Vec<&str> = forwarded
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = forwarded_ip(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client.to_string()
}

/// The host name or address of a `Host` value, without its port, lower-cased and without a
/// trailing dot; `None` if it is not one.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => value,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether this server answers to `host` (a `Host` header's value): a loopback name or
/// address, the address the request arrived on, or a configured name. Anything else is a
/// name an attacker pointed at this address (DNS rebinding) or a misrouted request.
pub fn host_allowed(host: &str, configured: &[String], local: Option<IpAddr>) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name == "localhost" || configured.contains(&name) {
        return true;
    }
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = unmapped(ip);
            ip.is_loopback() || local.is_some_and(|l| unmapped(l) == ip)
        }
        Err(_) => false,
    }
}

/// Refuses a request whose `Host` (or absolute URI) names a host this server does not answer
/// to, before anything else runs.
pub(super) async fn check_host(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let local = connection(&req).1;
    let hosts = &s.state.http.hosts;
    let header = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let named: Vec<String> = header.into_iter().chain(authority).collect();
    if named.is_empty() {
        return ApiError::bad_request("the request has no Host header").into_response();
    }
    if let Some(bad) = named.iter().find(|h| !host_allowed(h, hosts, local)) {
        let quoted: String = bad.chars().take(MAX_QUOTED_HOST).collect();
        tracing::warn!(host = %quoted, "refused a request for another host");
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to host {quoted:?}; open it by one of its own \
                 names (an administrator lists them under [http] hosts in cloud.toml)"
            ),
        )
        .into_response();
    }
    next.run(req).await
}
