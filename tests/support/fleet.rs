//! Many raw sync clients at once (the connections bench): the cloud's pushes answered for as
//! long as a connection lives, as an appliance's sync client does, while the same connection
//! uploads its own documents through [`super::peer::Peer`].
//!
//! Not an appliance: nothing is stored on disk and pushed documents are kept in memory only.

use std::collections::HashMap;

use automerge::AutoCommit;
use vigil_shared::sync::{DocSync, Role};
use vigil_shared::wire::{FrameDecoder, Message, SeqCounter, encode_message};

use super::peer::read;

/// Answers every push of the cloud on `conn` until the connection ends, keeping each pushed
/// document's copy so that the next push of it only carries what changed; returns how many
/// pushes were answered in full. A push that fails is dropped (the cloud offers the document
/// again on the next change or connection), as the appliance's client does.
pub async fn answer_pushes(conn: quinn::Connection) -> u64 {
    let mut copies: HashMap<String, AutoCommit> = HashMap::new();
    let mut seq = SeqCounter::new();
    let mut answered = 0;
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let mut decoder = FrameDecoder::new();
        let Ok(Some(first)) = read(&mut recv, &mut decoder).await else {
            continue;
        };
        let Message::Sync { doc_id, kind, .. } = &first else {
            continue;
        };
        let doc = copies.entry(doc_id.clone()).or_default();
        let mut exchange = DocSync::new(
            Role::Responder,
            doc_id.clone(),
            *kind,
            automerge::sync::State::new(),
        );
        let mut message = Some(first);
        let mut complete = true;
        while let Some(m) = message.take() {
            if exchange.incoming(doc, m).is_err() {
                complete = false;
                break;
            }
            match exchange.outgoing(doc, &mut seq) {
                Ok(Some(reply)) => {
                    let Ok(bytes) = encode_message(&reply) else {
                        complete = false;
                        break;
                    };
                    if send.write_all(&bytes).await.is_err() {
                        complete = false;
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    complete = false;
                    break;
                }
            }
            message = match read(&mut recv, &mut decoder).await {
                Ok(m) => m,
                Err(_) => {
                    complete = false;
                    None
                }
            };
        }
        let _ = send.finish();
        if complete {
            answered += 1;
        }
    }
    answered
}
