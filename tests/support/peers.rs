//! A site whose rooms are peers: real `vigil-edge` processes, each listening for its site's
//! peers on a loopback port of its own and calling the ones its test names, with appliance
//! certificates from one clinic CA, and (optionally) a real `vigil-cloud` behind a relay.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vigil::relay::{Relay, RelayHandle};

use super::*;

/// One appliance of the test site.
pub struct PeerRoom {
    pub site: String,
    pub room: String,
    pub config: PathBuf,
    pub proc: Proc,
    pub http: Http,
    /// The UDP port it listens on for peers.
    pub peer_port: u16,
}

impl PeerRoom {
    /// Kills the process (SIGKILL): no clean shutdown.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same configuration and database.
    pub fn restart(&mut self) {
        (self.proc, self.http) = start_edge(&self.config);
    }

    /// This room's peer address.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }
}

/// What a test room is: its site and room, the peers it calls (addresses), and more config
/// (a `[source]` section, say).
pub struct RoomSpec {
    pub site: &'static str,
    pub room: &'static str,
    pub calls: Vec<String>,
    pub extra: String,
}

/// The site: a CA, maybe a cloud behind a relay, and its rooms.
pub struct PeerSite {
    pub dir: tempfile::TempDir,
    pub cloud: Option<(Proc, Http)>,
    /// In front of the cloud's sync port (or of nothing, with no cloud).
    pub relay: RelayHandle,
    pub rooms: Vec<PeerRoom>,
}

/// Staff of the seeded site configuration: (id, name, role, PIN).
pub const STAFF: [(&str, &str, &str, &str); 2] = [
    ("nurse-ana", "Ana Ruiz", "nurse", "246802"),
    ("dr-kim", "Dr Sam Kim", "clinician", "135790"),
];

impl PeerSite {
    /// Free UDP ports for `n` rooms' peer sockets, so each test can name them before start.
    pub fn ports(n: usize) -> Vec<u16> {
        (0..n).map(|_| free_udp_port()).collect()
    }

    /// Starts the cloud (if `with_cloud`; otherwise the appliances' cloud address answers
    /// nothing) and every room, listening on `ports[i]`. With `seed_staff`, every room's
    /// database gets the site's configuration with [`STAFF`] before it starts (no cloud
    /// needed to sign in to a room screen).
    pub async fn start(
        with_cloud: bool,
        seed_staff: bool,
        ports: &[u16],
        specs: Vec<RoomSpec>,
    ) -> PeerSite {
        let dir = tempfile::tempdir().unwrap();
        let ca = clinic_ca(dir.path());
        let cloud_port = free_udp_port();
        let cloud = with_cloud.then(|| {
            let config = write_cloud_config(dir.path(), cloud_port);
            start_cloud(&config)
        });
        let relay = Relay::start_with_seed(
            "127.0.0.1:0".parse().unwrap(),
            format!("127.0.0.1:{cloud_port}").parse().unwrap(),
            17,
        )
        .await
        .unwrap();
        let mut rooms = Vec::new();
        for (spec, port) in specs.into_iter().zip(ports) {
            if seed_staff {
                seed_site_config(
                    &edge_db(dir.path(), spec.site, spec.room),
                    spec.site,
                    &STAFF,
                    |_| {},
                );
            }
            let calls = spec
                .calls
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let extra = format!(
                "peer_bind = \"127.0.0.1:{port}\"\npeers = [{calls}]\n{}{}",
                spec.extra,
                cloud_section(
                    &ca,
                    dir.path(),
                    relay.local_addr().port(),
                    spec.site,
                    spec.room
                )
            );
            let config = write_edge_config(dir.path(), spec.site, spec.room, &extra);
            let (proc, http) = start_edge(&config);
            rooms.push(PeerRoom {
                site: spec.site.into(),
                room: spec.room.into(),
                config,
                proc,
                http,
                peer_port: *port,
            });
        }
        PeerSite {
            dir,
            cloud,
            relay,
            rooms,
        }
    }

    /// Austin's rooms 1 and 2, each calling the other, with `extra[i]` in room i+1's
    /// configuration; with a cloud behind the relay or none, with the site's staff seeded or
    /// not. Returns the site and the rooms' peer ports.
    pub async fn austin_pair(
        with_cloud: bool,
        seed_staff: bool,
        extra: [String; 2],
    ) -> (PeerSite, Vec<u16>) {
        let ports = PeerSite::ports(2);
        let [one, two] = extra;
        let specs = vec![
            RoomSpec {
                site: "austin",
                room: "1",
                calls: vec![format!("127.0.0.1:{}", ports[1])],
                extra: one,
            },
            RoomSpec {
                site: "austin",
                room: "2",
                calls: vec![format!("127.0.0.1:{}", ports[0])],
                extra: two,
            },
        ];
        let site = PeerSite::start(with_cloud, seed_staff, &ports, specs).await;
        (site, ports)
    }

    /// The cloud's API client.
    pub fn cloud(&self) -> &Http {
        &self.cloud.as_ref().expect("this site has a cloud").1
    }

    /// Waits until room `a`'s appliance is connected to room `b`'s.
    pub async fn peered(&self, a: usize, b: usize) {
        let want = self.rooms[b].room.clone();
        let http = &self.rooms[a].http;
        eventually(Duration::from_secs(30), "the rooms to connect", || async {
            let (_, s) = http.get("/api/v1/status").await;
            s["peers"]["rooms"].get(&want).map(|_| ())
        })
        .await;
    }
}

/// A patient as an appliance's API returns it (`None` if it does not hold it).
pub async fn patient(edge: &Http, id: &str) -> Option<Value> {
    let (st, p) = edge.get(&format!("/api/v1/patients/{id}")).await;
    (st == 200).then_some(p)
}

/// Signs `staff` in to a room screen over HTTP; the session cookie and the forms' CSRF token.
pub async fn screen_sign_in(
    base: &str,
    staff: &str,
    pin: &str,
) -> (reqwest::Client, String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!("{base}/screen/login"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&res, vigil_edge::web::screen::LOGIN_CSRF_COOKIE).unwrap();
    let csrf = csrf_field(&res.text().await.unwrap());
    let res = http
        .post(format!("{base}/screen/login"))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[("staff", staff), ("pin", pin), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{staff} signs in");
    let session = set_cookie(&res, "vigil_room").unwrap();
    let page = http
        .get(format!("{base}/screen"))
        .header(reqwest::header::COOKIE, &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (http, session, csrf_field(&page))
}
