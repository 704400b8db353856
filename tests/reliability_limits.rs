//! The sync server's connection limits over real QUIC on loopback with real certificates: one
//! connection per appliance (a newer one replaces the older, which is told why), and at most
//! `MAX_STREAMS_PER_APPLIANCE` document exchanges at once per appliance (the next stream
//! waits: backpressure, not a refusal). The connection cap and the per-appliance rate are
//! state machines tested with chosen times in `cloud/src/sync/limits.rs`.

mod support;

use std::path::Path;
use std::time::Duration;

use support::peer::connect;
use support::{clinic_ca, free_udp_port, write_cloud_config};
use vigil_cloud::app::Cloud;
use vigil_cloud::config::CloudConfig;
use vigil_cloud::pki::Ca;
use vigil_cloud::tls::MAX_STREAMS_PER_APPLIANCE;

async fn start_cloud(dir: &Path) -> (Cloud, Ca) {
    let ca = clinic_ca(dir);
    let config = CloudConfig::load(&write_cloud_config(dir, free_udp_port())).unwrap();
    (Cloud::start(config).await.unwrap(), ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_an_appliance_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let cert = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let other = ca.issue_appliance(&"austin".into(), &"2".into()).unwrap();
    let first = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .unwrap();
    let neighbour = connect(dir.path(), &other, cloud.sync_addr, None)
        .await
        .unwrap();
    let _second = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .unwrap();
    let reason = first.closed_reason().await;
    assert!(
        reason.contains("replaced by a newer connection from this appliance"),
        "{reason}"
    );
    // Another appliance's connection is untouched.
    assert!(neighbour.conn.close_reason().is_none());
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_gets_at_most_max_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, ca) = start_cloud(dir.path()).await;
    let cert = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let peer = connect(dir.path(), &cert, cloud.sync_addr, None)
        .await
        .unwrap();
    // Open streams, each left waiting on half a frame header, until the cloud grants no more.
    let mut open = Vec::new();
    let limit = MAX_STREAMS_PER_APPLIANCE as usize;
    while open.len() <= limit {
        let Ok(stream) = tokio::time::timeout(Duration::from_secs(2), peer.conn.open_bi()).await
        else {
            break;
        };
        let (mut send, recv) = stream.unwrap();
        send.write_all(&[0, 0]).await.unwrap();
        open.push((send, recv));
    }
    // The hello's control stream may still count as one of them.
    assert!(
        open.len() == limit || open.len() == limit - 1,
        "{} streams granted at once; the limit is {limit}",
        open.len()
    );
    assert!(
        peer.conn.close_reason().is_none(),
        "waiting, not disconnected"
    );
    cloud.shutdown().await;
}
