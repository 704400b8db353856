//! The fault-injecting relay (`vigil::relay`) with plain UDP sockets on loopback as clients
//! and as the upstream: forwarding both ways with one upstream port per client, cut, loss,
//! duplication, delay, reordering, the bounded delay queue and flow table, timelines on a
//! paused clock, the `vigil relay` command — and real QUIC to a real cloud surviving a cut.
//!
//! Results are asserted from message contents and the relay's counters, never from wall-clock
//! times. Waits poll the counters; their deadline only turns a hang into a failure.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use vigil::relay::{Direction, Faults, Relay, RelayHandle, RelayOptions, RelayStats};

/// How long a wait may take before the test fails as hung. Generous: it decides nothing.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// How often waits poll the relay's counters.
const POLL: Duration = Duration::from_millis(5);

/// Datagrams sent before waiting for the relay to take them, so the kernel's receive buffer
/// never overflows and drops datagrams the relay's counters then cannot account for.
const BATCH: usize = 50;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// What an upstream received: each datagram with its source, in arrival order.
type Received = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// An upstream on loopback that records each datagram with its source and, if it echoes,
/// sends it back.
struct Upstream {
    addr: SocketAddr,
    seen: Received,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(echo: bool) -> Upstream {
        let socket = UdpSocket::bind(loopback()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0_u8; 65_535];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                log.lock().unwrap().push((from, buf[..n].to_vec()));
                if echo {
                    socket.send_to(&buf[..n], from).await.unwrap();
                }
            }
        });
        Upstream { addr, seen, task }
    }

    fn seen(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }

    fn payloads(&self) -> Vec<Vec<u8>> {
        self.seen().into_iter().map(|(_, p)| p).collect()
    }

    /// Waits until `n` datagrams have arrived and returns their payloads.
    async fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        tokio::time::timeout(HANG_GUARD, async {
            while self.seen.lock().unwrap().len() < n {
                tokio::time::sleep(POLL).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("upstream saw {} of {n} datagrams", self.seen().len()));
        self.payloads()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client() -> UdpSocket {
    UdpSocket::bind(loopback()).await.unwrap()
}

fn msg(i: usize) -> Vec<u8> {
    format!("datagram {i:04}").into_bytes()
}

/// Waits until the relay's counters satisfy `ready`, and returns them.
async fn until(relay: &RelayHandle, what: &str, ready: impl Fn(&RelayStats) -> bool) -> RelayStats {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let stats = relay.stats();
            if ready(&stats) {
                return stats;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waiting for {what}; stats: {:#?}", relay.stats()))
}

/// Sends `messages` from `client` in batches, each taken by the relay before the next.
async fn send_paced(relay: &RelayHandle, client: &UdpSocket, messages: &[Vec<u8>]) {
    let before = relay.stats().to_upstream.received;
    for (i, m) in messages.iter().enumerate() {
        client.send_to(m, relay.local_addr()).await.unwrap();
        if (i + 1) % BATCH == 0 || i + 1 == messages.len() {
            let target = before + (i as u64 + 1);
            until(relay, "the relay to take a batch", |s| {
                s.to_upstream.received >= target
            })
            .await;
        }
    }
}

/// Receives `n` datagrams on `socket`.
async fn recv_n(socket: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0_u8; 65_535];
    while out.len() < n {
        let len = tokio::time::timeout(HANG_GUARD, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("received {} of {n} datagrams", out.len()))
            .unwrap();
        out.push(buf[..len].to_vec());
    }
    out
}

#[tokio::test]
async fn forwards_both_ways_with_one_upstream_port_per_client() {
    let upstream = Upstream::start(true).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    let clients = [client().await, client().await, client().await];
    for (c, socket) in clients.iter().enumerate() {
        for i in 0..5 {
            let m = format!("client {c} datagram {i}");
            socket
                .send_to(m.as_bytes(), relay.local_addr())
                .await
                .unwrap();
        }
    }
    for (c, socket) in clients.iter().enumerate() {
        let expected: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("client {c} datagram {i}").into_bytes())
            .collect();
        assert_eq!(
            recv_n(socket, 5).await,
            expected,
            "client {c} gets its own echoes"
        );
    }
    // The upstream sees each client from one port of its own, none of them the relay's own.
    let seen = upstream.seen();
    let mut ports: Vec<u16> = seen.iter().map(|(from, _)| from.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{seen:?}");
    assert!(!ports.contains(&relay.local_addr().port()));
    for c in 0..3 {
        let prefix = format!("client {c} ");
        let from: Vec<u16> = seen
            .iter()
            .filter(|(_, p)| p.starts_with(prefix.as_bytes()))
            .map(|(from, _)| from.port())
            .collect();
        assert_eq!(from.len(), 5);
        assert!(from.iter().all(|p| *p == from[0]), "client {c}: {from:?}");
    }
    let stats = relay.stats();
    assert_eq!(stats.flows_opened, 3);
    assert_eq!(stats.flows_active, 3);
    assert_eq!(stats.to_upstream.forwarded, 15);
    assert_eq!(stats.to_client.forwarded, 15);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_cut_drops_everything_until_lifted() {
    let upstream = Upstream::start(true).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    let socket = client().await;

    relay.set(Faults::CUT).unwrap();
    let during: Vec<Vec<u8>> = (0..10).map(msg).collect();
    send_paced(&relay, &socket, &during).await;
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.dropped_cut, 10);
    assert_eq!(stats.to_upstream.forwarded, 0);

    relay.set(Faults::OK).unwrap();
    socket.send_to(b"after", relay.local_addr()).await.unwrap();
    assert_eq!(recv_n(&socket, 1).await, [b"after".to_vec()]);
    assert_eq!(
        upstream.payloads(),
        [b"after".to_vec()],
        "nothing sent during the cut ever arrives"
    );

    // A one-way cut: the upstream hears the client, the client hears nothing back.
    relay
        .set_direction(Direction::ToClient, Faults::CUT)
        .unwrap();
    assert_eq!(relay.faults(Direction::ToUpstream), Faults::OK);
    socket
        .send_to(b"one way", relay.local_addr())
        .await
        .unwrap();
    until(&relay, "the reply dropped", |s| {
        s.to_client.dropped_cut == 1
    })
    .await;
    assert_eq!(upstream.payloads().last(), Some(&b"one way".to_vec()));
    relay.set(Faults::OK).unwrap();
    socket.send_to(b"back", relay.local_addr()).await.unwrap();
    assert_eq!(
        recv_n(&socket, 1).await,
        [b"back".to_vec()],
        "the reply sent during the one-way cut never arrives"
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn loss_drops_about_half_and_the_seed_decides_which() {
    const N: usize = 1_000;
    let messages: Vec<Vec<u8>> = (0..N).map(msg).collect();
    let half_loss = Faults {
        loss_pct: 50.0,
        ..Faults::OK
    };
    // (seed, run) -> which datagrams arrived
    let mut runs: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
    for seed in [11, 11, 12] {
        let upstream = Upstream::start(false).await;
        let relay = Relay::start_with_seed(loopback(), upstream.addr, seed)
            .await
            .unwrap();
        relay
            .set_direction(Direction::ToUpstream, half_loss)
            .unwrap();
        let socket = client().await;
        send_paced(&relay, &socket, &messages).await;
        let stats = relay.stats().to_upstream;
        assert_eq!(stats.received, N as u64);
        assert_eq!(stats.forwarded + stats.dropped_loss, N as u64, "{stats:?}");
        assert!(
            (350..=650).contains(&stats.dropped_loss),
            "seed {seed}: {} of {N} lost",
            stats.dropped_loss
        );
        let arrived = upstream.wait_for(stats.forwarded as usize).await;
        assert_eq!(arrived.len() as u64, stats.forwarded);
        runs.push((seed, arrived));
        relay.shutdown().await;
    }
    assert_eq!(
        runs[0].1, runs[1].1,
        "the same seed loses the same datagrams"
    );
    assert_ne!(runs[0].1, runs[2].1, "another seed loses others");
}

#[tokio::test]
async fn duplicate_100_percent_delivers_everything_twice() {
    let upstream = Upstream::start(false).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    relay
        .set_direction(
            Direction::ToUpstream,
            Faults {
                duplicate_pct: 100.0,
                ..Faults::OK
            },
        )
        .unwrap();
    let socket = client().await;
    let messages: Vec<Vec<u8>> = (0..20).map(msg).collect();
    send_paced(&relay, &socket, &messages).await;
    let mut arrived = upstream.wait_for(40).await;
    arrived.sort();
    let mut expected: Vec<Vec<u8>> = messages.iter().chain(&messages).cloned().collect();
    expected.sort();
    assert_eq!(arrived, expected);
    let stats = relay.stats().to_upstream;
    assert_eq!((stats.duplicated, stats.forwarded), (20, 40));
    relay.shutdown().await;
}

#[tokio::test]
async fn delayed_datagrams_all_arrive_in_order_unless_jittered() {
    let ms = Duration::from_millis;
    // (faults on both directions, whether the echoes must come back in sending order)
    let table = [
        (
            Faults {
                delay: ms(200),
                ..Faults::OK
            },
            true,
        ),
        (
            Faults {
                delay: ms(10),
                jitter: ms(50),
                ..Faults::OK
            },
            false,
        ),
    ];
    for (faults, in_order) in table {
        let upstream = Upstream::start(true).await;
        let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
        relay.set(faults).unwrap();
        let socket = client().await;
        let messages: Vec<Vec<u8>> = (0..20).map(msg).collect();
        send_paced(&relay, &socket, &messages).await;
        let mut echoes = recv_n(&socket, 20).await;
        if !in_order {
            echoes.sort();
        }
        assert_eq!(echoes, messages, "{faults}");
        let stats = relay.stats();
        assert_eq!(stats.to_upstream.delayed, 20, "{faults}");
        assert_eq!(stats.to_client.delayed, 20, "{faults}");
        assert_eq!(stats.to_client.forwarded, 20, "{faults}");
        relay.shutdown().await;
    }
}

#[tokio::test]
async fn reorder_lets_later_datagrams_overtake() {
    let upstream = Upstream::start(false).await;
    let relay = Relay::start_with_seed(loopback(), upstream.addr, 3)
        .await
        .unwrap();
    relay
        .set_direction(
            Direction::ToUpstream,
            Faults {
                reorder_pct: 30.0,
                ..Faults::OK
            },
        )
        .unwrap();
    let socket = client().await;
    // One burst, well within the reorder hold, so a held datagram has later ones to let by.
    let messages: Vec<Vec<u8>> = (0..100).map(msg).collect();
    for m in &messages {
        socket.send_to(m, relay.local_addr()).await.unwrap();
    }
    let arrived = upstream.wait_for(100).await;
    assert_ne!(arrived, messages, "some datagrams overtaken");
    let mut sorted = arrived.clone();
    sorted.sort();
    assert_eq!(sorted, messages, "each arrives exactly once");
    let stats = relay.stats().to_upstream;
    assert!((10..=60).contains(&stats.reordered), "{stats:?}");
    assert_eq!(stats.delayed, stats.reordered);
    relay.shutdown().await;
}

#[tokio::test]
async fn datagrams_on_the_wire_when_a_cut_starts_are_lost() {
    let upstream = Upstream::start(false).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    relay
        .set_direction(
            Direction::ToUpstream,
            Faults {
                delay: Duration::from_secs(2),
                ..Faults::OK
            },
        )
        .unwrap();
    let socket = client().await;
    let messages: Vec<Vec<u8>> = (0..5).map(msg).collect();
    send_paced(&relay, &socket, &messages).await;
    assert_eq!(relay.stats().to_upstream.delayed, 5);
    relay
        .set_direction(Direction::ToUpstream, Faults::CUT)
        .unwrap();
    let stats = until(&relay, "the held datagrams to meet the cut", |s| {
        s.to_upstream.dropped_cut == 5
    })
    .await;
    assert_eq!((stats.to_upstream.forwarded, stats.in_flight), (0, 0));
    assert!(upstream.seen().is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn a_full_delay_queue_drops_and_counts() {
    let upstream = Upstream::start(false).await;
    let options = RelayOptions {
        max_in_flight: 5,
        ..RelayOptions::default()
    };
    let relay = Relay::start_with(loopback(), upstream.addr, options)
        .await
        .unwrap();
    relay
        .set(Faults {
            delay: Duration::from_secs(20),
            ..Faults::OK
        })
        .unwrap();
    let socket = client().await;
    let messages: Vec<Vec<u8>> = (0..10).map(msg).collect();
    send_paced(&relay, &socket, &messages).await;
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.delayed, 5);
    assert_eq!(stats.to_upstream.dropped_queue_full, 5);
    assert_eq!(stats.in_flight, 5);
    relay.shutdown().await;
}

#[tokio::test]
async fn the_flow_table_is_bounded() {
    let upstream = Upstream::start(true).await;
    let options = RelayOptions {
        max_flows: 2,
        ..RelayOptions::default()
    };
    let relay = Relay::start_with(loopback(), upstream.addr, options)
        .await
        .unwrap();
    let clients = [client().await, client().await, client().await];
    for (c, socket) in clients.iter().take(2).enumerate() {
        socket.send_to(&msg(c), relay.local_addr()).await.unwrap();
        assert_eq!(recv_n(socket, 1).await, [msg(c)]);
    }
    clients[2]
        .send_to(&msg(2), relay.local_addr())
        .await
        .unwrap();
    let stats = until(&relay, "the third client refused", |s| {
        s.to_upstream.received == 3
    })
    .await;
    assert_eq!(stats.dropped_flow_limit, 1, "{stats:?}");
    assert_eq!((stats.flows_opened, stats.flows_active), (2, 2));
    assert_eq!(upstream.payloads(), [msg(0), msg(1)]);
    relay.shutdown().await;
}

#[tokio::test]
async fn idle_flows_expire_and_a_returning_client_gets_a_new_one() {
    let upstream = Upstream::start(true).await;
    let options = RelayOptions {
        flow_idle_timeout: Duration::from_millis(50),
        ..RelayOptions::default()
    };
    let relay = Relay::start_with(loopback(), upstream.addr, options)
        .await
        .unwrap();
    let socket = client().await;
    socket.send_to(b"first", relay.local_addr()).await.unwrap();
    assert_eq!(recv_n(&socket, 1).await, [b"first".to_vec()]);
    until(&relay, "the flow to expire", |s| {
        s.flows_expired == 1 && s.flows_active == 0
    })
    .await;
    socket.send_to(b"again", relay.local_addr()).await.unwrap();
    assert_eq!(recv_n(&socket, 1).await, [b"again".to_vec()]);
    let stats = relay.stats();
    assert_eq!(
        (stats.flows_opened, stats.flows_active),
        (2, 1),
        "{stats:?}"
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_listening_socket() {
    let upstream = Upstream::start(true).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    relay
        .set(Faults {
            delay: Duration::from_secs(20),
            ..Faults::OK
        })
        .unwrap();
    let socket = client().await;
    send_paced(&relay, &socket, &[msg(0)]).await;
    let addr = relay.local_addr();
    relay.shutdown().await;
    UdpSocket::bind(addr)
        .await
        .expect("the relay's port is free again after shutdown");
    assert!(upstream.seen().is_empty(), "held datagrams are dropped");
}

#[tokio::test]
async fn invalid_faults_and_options_are_refused() {
    let upstream = Upstream::start(true).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();
    let bad = [
        Faults {
            loss_pct: 150.0,
            ..Faults::OK
        },
        Faults {
            reorder_pct: f64::NAN,
            ..Faults::OK
        },
        Faults {
            delay: Duration::from_secs(3_600),
            ..Faults::OK
        },
    ];
    for faults in bad {
        assert!(relay.set(faults).is_err(), "{faults:?}");
        assert!(relay.set_direction(Direction::ToClient, faults).is_err());
        assert_eq!(relay.faults(Direction::ToUpstream), Faults::OK);
        assert_eq!(relay.faults(Direction::ToClient), Faults::OK);
    }
    relay.shutdown().await;

    let bad_options = [
        RelayOptions {
            max_flows: 0,
            ..RelayOptions::default()
        },
        RelayOptions {
            max_flows: vigil::relay::MAX_FLOWS + 1,
            ..RelayOptions::default()
        },
        RelayOptions {
            max_in_flight: 0,
            ..RelayOptions::default()
        },
        RelayOptions {
            flow_idle_timeout: Duration::ZERO,
            ..RelayOptions::default()
        },
    ];
    for options in bad_options {
        let err = Relay::start_with(loopback(), upstream.addr, options.clone())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{options:?}");
    }
}

/// Timelines on the real clock, checked by what they applied rather than when: the root
/// package's tokio has no `test-util`, so no paused clock. The pure schedule (`Timeline::at`)
/// is tested on its own in the module. The test runtime is single-threaded, so the steps
/// counter and the faults are read together, never mid-step.
#[tokio::test]
async fn timelines_apply_their_steps_in_order() {
    let upstream = Upstream::start(true).await;
    let relay = Relay::start(loopback(), upstream.addr).await.unwrap();

    // A one-off timeline ends in its last step's faults.
    relay.run_timeline("0s loss=10%; 50ms cut; 100ms dup=5%".parse().unwrap());
    until(&relay, "three steps", |s| s.timeline_steps == 3).await;
    let dup = Faults {
        duplicate_pct: 5.0,
        ..Faults::OK
    };
    for direction in Direction::BOTH {
        assert_eq!(relay.faults(direction), dup);
    }

    // A flap alternates, starting with the link up: after an odd count of its steps the link
    // is up, after an even count it is cut.
    let base = relay.stats().timeline_steps;
    relay
        .flap(Duration::from_millis(60), Duration::from_millis(40))
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while seen.len() < 6 {
            let n = relay.stats().timeline_steps - base;
            let faults = relay.faults(Direction::ToUpstream);
            if n > 0 && seen.last().is_none_or(|(last, _)| *last != n) {
                seen.push((n, faults));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the flap keeps going");
    for (n, faults) in &seen {
        let expected = if n % 2 == 1 { Faults::OK } else { Faults::CUT };
        assert_eq!(*faults, expected, "after flap step {n}: {seen:?}");
    }

    // Stopped, it applies nothing more and leaves its last faults in force.
    relay.stop_timeline();
    let n = relay.stats().timeline_steps - base;
    let expected = if n % 2 == 1 { Faults::OK } else { Faults::CUT };
    assert_eq!(relay.faults(Direction::ToClient), expected);

    // A new timeline replaces a running one.
    relay.run_timeline("0s cut; 1h ok".parse().unwrap());
    let cut = until(&relay, "the cut", |s| s.timeline_steps == base + n + 1).await;
    assert_eq!(relay.faults(Direction::ToClient), Faults::CUT);
    relay.run_timeline("0s reorder=1%".parse().unwrap());
    until(&relay, "the replacement", |s| {
        s.timeline_steps == cut.timeline_steps + 1
    })
    .await;
    assert_eq!(relay.faults(Direction::ToClient).reorder_pct, 1.0);
    relay.shutdown().await;
}

#[tokio::test]
async fn the_relay_command_forwards_and_stops_on_sigterm() {
    let upstream = Upstream::start(true).await;
    let exe = Path::new(env!("CARGO_BIN_EXE_vigil"));
    let mut relay = support::Proc::spawn(
        exe,
        &[
            "relay",
            "--upstream",
            &upstream.addr.to_string(),
            "--timeline",
            "0s ok; 1h cut",
            "--seed",
            "9",
        ],
    );
    let addr: SocketAddr = relay
        .wait_for("relay", HANG_GUARD)
        .parse()
        .expect("`relay: ADDR` line");
    assert_eq!(relay.wait_for("relay seed", HANG_GUARD), "9");
    assert_eq!(
        relay.wait_for("relay timeline", HANG_GUARD),
        "0s ok; 3600s cut"
    );
    let socket = client().await;
    socket.send_to(b"through", addr).await.unwrap();
    assert_eq!(recv_n(&socket, 1).await, [b"through".to_vec()]);
    assert!(relay.terminate().success());
    let stats = relay.wait_for("relay stats", HANG_GUARD);
    assert!(stats.contains("forwarded 1"), "{stats}");

    // A bad timeline is refused before anything listens, naming the token.
    let out = std::process::Command::new(exe)
        .args([
            "relay",
            "--upstream",
            "127.0.0.1:9",
            "--timeline",
            "0s ok; 5s flood",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`flood`"), "{stderr}");
}

mod quic {
    //! Real QUIC through the relay: the raw sync client of the test support (an appliance's
    //! TLS configuration, frames by hand), and a document upload across a cut.

    use std::time::Duration;

    use vigil::relay::{Faults, Relay};
    use vigil_cloud::app::Cloud;
    use vigil_cloud::config::CloudConfig;

    use super::support::peer::{connect, patient};
    use super::support::{clinic_ca, free_udp_port, write_cloud_config};
    use super::{HANG_GUARD, loopback};

    /// How long the handshake attempted during the cut may go unanswered before it fails, and
    /// so about how long the cut lasts. The appliance's own idle timeout is 30 s.
    const HANDSHAKE_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quic_survives_a_cut_and_new_connections_wait_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let ca = clinic_ca(dir.path());
        let config = CloudConfig::load(&write_cloud_config(dir.path(), free_udp_port())).unwrap();
        let cloud = Cloud::start(config).await.unwrap();
        let relay = Relay::start_with_seed(loopback(), cloud.sync_addr, 5)
            .await
            .unwrap();
        let room_1 = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
        let room_2 = ca.issue_appliance(&"austin".into(), &"2".into()).unwrap();

        let mut before = connect(dir.path(), &room_1, relay.local_addr(), None)
            .await
            .expect("connects through the relay");

        // Cut. A connection made before keeps trying to upload; a new one cannot start.
        relay.set(Faults::CUT).unwrap();
        let upload = tokio::spawn(async move {
            // Document ids are UUIDs: the cloud refuses any other.
            let id = "4e1a7e1a-0000-4000-8000-000000000001";
            let mut doc = patient(id, "austin");
            let confirmed = before.upload(id, doc.automerge()).await;
            (confirmed, doc.automerge().get_heads(), before)
        });
        let refused = connect(
            dir.path(),
            &room_2,
            relay.local_addr(),
            Some(HANDSHAKE_IDLE_TIMEOUT),
        )
        .await;
        assert!(refused.is_err(), "no new connection during a cut");
        let stats = relay.stats();
        assert!(stats.to_upstream.dropped_cut > 0, "{stats:?}");

        // Lifted: a new connection succeeds, and the upload begun during the cut completes.
        relay.set(Faults::OK).unwrap();
        let after = connect(dir.path(), &room_2, relay.local_addr(), None)
            .await
            .expect("connects once the cut is lifted");
        let (confirmed, heads, before) = tokio::time::timeout(HANG_GUARD, upload)
            .await
            .expect("the upload finishes after the cut")
            .unwrap();
        assert_eq!(confirmed.expect("upload across the cut"), heads);
        assert!(before.conn.close_reason().is_none());
        assert!(after.conn.close_reason().is_none());
        // Three client endpoints, three flows: QUIC sees one 5-tuple per appliance.
        assert_eq!(relay.stats().flows_opened, 3);

        relay.shutdown().await;
        cloud.shutdown().await;
    }
}
