//! A raw sync client for tests: the appliance's real TLS configuration (its certificate files,
//! `vigil_edge::sync::client_config`), with frames written by hand, so tests can act as an
//! honest appliance, a hostile one, or one behind a broken network.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use automerge::AutoCommit;
use vigil_cloud::pki::IssuedCert;
use vigil_edge::sync::{CloudSettings, client_config};
use vigil_shared::doc::{
    CoursePlan, DocKind, PatientDoc, PatientRecord, Screening, SessionDoc, SessionMeta,
};
use vigil_shared::sync::{DocSync, Incoming, Role};
use vigil_shared::wire::{self, FrameDecoder, Message, SeqCounter, encode_message};

/// A connected, welcomed sync client.
pub struct Peer {
    pub conn: quinn::Connection,
    pub seq: SeqCounter,
    _endpoint: quinn::Endpoint,
}

/// Connects to `addr` with `cert` and says hello; `idle_timeout` replaces the appliance's.
pub async fn connect(
    dir: &Path,
    cert: &IssuedCert,
    addr: SocketAddr,
    idle_timeout: Option<Duration>,
) -> Result<Peer, String> {
    let hello = wire::hello("test");
    connect_with(
        dir,
        (&cert.cert_path, &cert.key_path),
        addr,
        idle_timeout,
        &hello,
    )
    .await
    .map(|(peer, _)| peer)
}

/// Connects to `addr` with the certificate and key files `files`, sends `hello` (any version
/// range) and returns the peer and the version the cloud chose, or why it refused.
pub async fn connect_with(
    dir: &Path,
    files: (&Path, &Path),
    addr: SocketAddr,
    idle_timeout: Option<Duration>,
    hello: &Message,
) -> Result<(Peer, u16), String> {
    let settings = CloudSettings {
        addr: Some(addr.into()),
        addrs: Vec::new(),
        server_name: "localhost".into(),
        ca_cert: dir.join("pki/ca.pem"),
        cert: files.0.to_owned(),
        key: files.1.to_owned(),
    };
    let mut config = client_config(&settings).map_err(|e| e.to_string())?;
    if let Some(idle) = idle_timeout {
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(idle.try_into().unwrap()));
        config.transport_config(Arc::new(transport));
    }
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&encode_message(hello).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().unwrap();
    match read(&mut recv, &mut FrameDecoder::new()).await {
        Ok(Some(Message::Welcome { version, .. })) => Ok((
            Peer {
                conn,
                seq: SeqCounter::new(),
                _endpoint: endpoint,
            },
            version,
        )),
        Ok(Some(Message::Reject { code, reason })) => Err(format!("{code}: {reason}")),
        other => Err(format!("no welcome: {other:?}; {:?}", conn.close_reason())),
    }
}

/// The next message of a stream; `None` at its end.
pub async fn read(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Message>, String> {
    loop {
        if let Some(m) = decoder.next_message().map_err(|e| e.to_string())? {
            return Ok(Some(m));
        }
        match recv
            .read_chunk(65_536, true)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(c) => decoder.push(&c.bytes),
            None => return Ok(None),
        }
    }
}

/// A session document of `site` and `room` for `patient_id`, with a dose started.
pub fn session(id: &str, site: &str, room: &str, patient_id: &str) -> SessionDoc {
    SessionDoc::create(&SessionMeta {
        patient_id: patient_id.into(),
        ..vigil_shared::fixtures::session_meta(id, site, room, 1_700_000_000_000_000)
    })
    .unwrap()
}

/// A patient document with the given id and site.
pub fn patient(id: &str, site: &str) -> PatientDoc {
    PatientDoc::create(&PatientRecord {
        id: id.into(),
        site: site.into(),
        given_name: "Pat".into(),
        family_name: site.into(),
        birth_date: "1970-01-01".into(),
        sex: "female".into(),
        phone: None,
        screening: Screening::default(),
        medications: vec![],
        course: CoursePlan::default(),
        outcome_scores: vec![],
    })
    .unwrap()
}

impl Peer {
    /// Syncs a patient document up as an appliance does; returns the heads the cloud
    /// confirmed durable.
    pub async fn upload(
        &mut self,
        id: &str,
        doc: &mut AutoCommit,
    ) -> Result<Vec<automerge::ChangeHash>, String> {
        self.upload_kind(id, DocKind::Patient, doc).await
    }

    /// Syncs a document of any kind up as an appliance does (what the cloud has and `doc`
    /// lacks is merged into `doc`); returns the heads the cloud confirmed durable, or the
    /// cloud's refusal as `code: reason`.
    pub async fn upload_kind(
        &mut self,
        id: &str,
        kind: DocKind,
        doc: &mut AutoCommit,
    ) -> Result<Vec<automerge::ChangeHash>, String> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut exchange = DocSync::new(Role::Initiator, id, kind, automerge::sync::State::new());
        let mut decoder = FrameDecoder::new();
        let mut confirmed = Vec::new();
        while let Some(m) = exchange
            .outgoing(doc, &mut self.seq)
            .map_err(|e| e.to_string())?
        {
            send.write_all(&encode_message(&m).unwrap())
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let reply = read(&mut recv, &mut decoder).await?.ok_or("stream ended")?;
                if let Message::Reject { code, reason } = &reply {
                    return Err(format!("{code}: {reason}"));
                }
                match exchange.incoming(doc, reply).map_err(|e| e.to_string())? {
                    Incoming::Durable(h) => confirmed = h,
                    Incoming::Changed(_) => break,
                }
            }
        }
        send.finish().unwrap();
        Ok(confirmed)
    }

    /// Answers the cloud's pushes as an appliance does, with `doc` as this side's copy of
    /// document `id`: pushes of other documents are answered from empty copies and dropped,
    /// until the push of `id` has run (at most 10 s). `doc` ends up with the cloud's version
    /// merged in; what `doc` had that the cloud lacked was sent back. The cloud's refusal
    /// comes back as `code: reason`.
    pub async fn answer_push(&mut self, id: &str, doc: &mut AutoCommit) -> Result<(), String> {
        let wanted = async {
            loop {
                let (mut send, mut recv) =
                    self.conn.accept_bi().await.map_err(|e| e.to_string())?;
                let mut decoder = FrameDecoder::new();
                let Some(first) = read(&mut recv, &mut decoder).await? else {
                    continue;
                };
                let Message::Sync { doc_id, kind, .. } = &first else {
                    return Err(format!("a push began with {}", first.name()));
                };
                let mine = doc_id == id;
                let mut other = AutoCommit::new();
                let target: &mut AutoCommit = if mine { &mut *doc } else { &mut other };
                let mut exchange = DocSync::new(
                    Role::Responder,
                    doc_id.clone(),
                    *kind,
                    automerge::sync::State::new(),
                );
                let mut message = Some(first);
                while let Some(m) = message.take() {
                    if let Message::Reject { code, reason } = &m {
                        return Err(format!("{code}: {reason}"));
                    }
                    exchange.incoming(target, m).map_err(|e| e.to_string())?;
                    if let Some(reply) = exchange
                        .outgoing(target, &mut self.seq)
                        .map_err(|e| e.to_string())?
                    {
                        send.write_all(&encode_message(&reply).unwrap())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    message = read(&mut recv, &mut decoder).await?;
                }
                let _ = send.finish();
                if mine {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wanted)
            .await
            .map_err(|_| format!("no push of {id} within 10 s"))?
    }

    /// Writes raw bytes on a new stream and returns what came back before the stream ended.
    pub async fn raw(&mut self, bytes: &[u8]) -> Vec<Message> {
        let Ok((mut send, mut recv)) = self.conn.open_bi().await else {
            return vec![];
        };
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        let mut out = Vec::new();
        let mut decoder = FrameDecoder::new();
        while let Ok(Some(m)) = read(&mut recv, &mut decoder).await {
            out.push(m);
        }
        out
    }

    /// Waits (at most 10 s) for the cloud to close the connection, and says why it did.
    pub async fn closed_reason(&self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("connection closed")
            .to_string()
    }
}
