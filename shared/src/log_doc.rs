//! Append-only log documents: an Automerge list under the root key `entries`, one JSON string
//! per entry, to which writers only add. A room's audit documents ([`crate::audit`]) and a
//! site's controlled-substance ledger ([`crate::ledger::doc`]) are two.
//!
//! One entry is one string value, so a batch of entries is one `splice` and one op each; JSON
//! keeps the document readable in any Automerge tool. [`check_append_only`] is the receiving
//! side's check that a change only added entries.

use std::collections::HashSet;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ValueRef};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::doc::DocError;

/// Root key of the entry list.
pub const ENTRIES_KEY: &str = "entries";

/// An entry of a log document.
pub trait LogEntry: Serialize + DeserializeOwned {
    /// The log's name in messages: `audit`, `ledger`.
    const LOG: &'static str;
    /// The longest stored entry (its JSON), in bytes; longer is refused before it is parsed.
    const MAX_BYTES: usize;
    /// Checks the entry's own fields; `index` names it in the error.
    fn check(&self, index: usize) -> Result<(), DocError>;
}

/// A malformed entry of log `T`.
pub fn entry_error<T: LogEntry>(index: usize, reason: String) -> DocError {
    DocError::LogEntry {
        log: T::LOG,
        index,
        reason,
    }
}

/// A log document of `T` without the expected shape.
pub fn shape_error<T: LogEntry>(reason: &str) -> DocError {
    DocError::LogShape {
        log: T::LOG,
        reason: reason.to_owned(),
    }
}

/// The entry list's object id.
pub fn entries_list<T: LogEntry>(doc: &AutoCommit) -> Result<ObjId, DocError> {
    match doc.get(automerge::ROOT, ENTRIES_KEY)? {
        Some((Value::Object(ObjType::List), id)) => Ok(id),
        _ => Err(shape_error::<T>("no entries list")),
    }
}

/// Creates the (empty) entry list.
pub fn create_list(doc: &mut AutoCommit) -> Result<ObjId, DocError> {
    Ok(doc.put_object(automerge::ROOT, ENTRIES_KEY, ObjType::List)?)
}

/// Every entry, in list order; refuses more than `max` or a malformed one.
pub fn read_entries<T: LogEntry>(
    doc: &AutoCommit,
    list: &ObjId,
    max: usize,
) -> Result<Vec<T>, DocError> {
    let len = doc.length(list);
    if len > max {
        return Err(full::<T>(len, 0, max));
    }
    doc.list_range(list, ..)
        .map(|item| from_stored::<T>(item.index, &item.value))
        .collect()
}

/// Appends entries in one splice; refuses past `max` or an entry its own check refuses. On
/// error the document is unchanged.
pub fn append<T: LogEntry>(
    doc: &mut AutoCommit,
    list: &ObjId,
    entries: &[T],
    max: usize,
) -> Result<(), DocError> {
    let len = doc.length(list);
    if len + entries.len() > max {
        return Err(full::<T>(len, entries.len(), max));
    }
    let mut values = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        e.check(len + i)?;
        let text = serde_json::to_string(e).map_err(|e| shape_error::<T>(&e.to_string()))?;
        if text.len() > T::MAX_BYTES {
            return Err(entry_error::<T>(
                len + i,
                format!("{} bytes, at most {} allowed", text.len(), T::MAX_BYTES),
            ));
        }
        values.push(ScalarValue::Str(text.into()));
    }
    if let Err(e) = doc.splice(list, len, 0, values) {
        doc.rollback();
        return Err(e.into());
    }
    Ok(())
}

/// Checks that the changes `doc` received since `before` (its heads before them) only add
/// entries: every entry of the list at `before` is still there, unchanged (same value op) and
/// in the same order, and the list itself is the same object. Entries may be added anywhere,
/// not only at the end: two concurrent appends (two rooms writing offline, or a database
/// restored from a copy and merged) interleave in the merged list, and adding entries is all
/// such a change does. Editing, removing or replacing one is refused.
///
/// Works on Automerge's op ids, not on the entries' text, so it costs one pass over each list
/// version and parses only the entries added, which it returns in list order. With `before`
/// empty (a new document) every entry is added.
pub fn check_append_only<T: LogEntry>(
    doc: &AutoCommit,
    before: &[ChangeHash],
    max: usize,
) -> Result<Vec<T>, DocError> {
    let list = entries_list::<T>(doc)?;
    let old_keys: Vec<OpKey> = if before.is_empty() {
        Vec::new()
    } else {
        match doc.get_at(automerge::ROOT, ENTRIES_KEY, before)? {
            Some((Value::Object(ObjType::List), old_list)) if old_list == list => doc
                .list_range_at(&list, .., before)
                .map(|item| op_key(&item.id()))
                .collect(),
            Some(_) => return Err(rewritten::<T>("the change replaces the entry list")),
            // A document whose entry list did not exist yet at `before`: everything in it is
            // new.
            None => Vec::new(),
        }
    };
    let old_set: HashSet<&OpKey> = old_keys.iter().collect();
    let len = doc.length(&list);
    if len > max {
        return Err(full::<T>(len, 0, max));
    }
    // An old entry's value op missing from the new list, in order: it was overwritten (a new
    // op replaced it) or deleted. Automerge has no move, so that is all it can be.
    let gone = |position: usize| {
        rewritten::<T>(&format!(
            "the change edits or removes the entry at position {position}"
        ))
    };
    let mut next_old = 0;
    let mut added = Vec::new();
    for item in doc.list_range(&list, ..) {
        let key = op_key(&item.id());
        if old_keys.get(next_old) == Some(&key) {
            next_old += 1;
        } else if old_set.contains(&key) {
            return Err(gone(next_old));
        } else {
            added.push(from_stored::<T>(item.index, &item.value)?);
        }
    }
    if next_old < old_keys.len() {
        return Err(gone(next_old));
    }
    Ok(added)
}

/// Reads one stored entry (a string value of the list), checking its bounds.
fn from_stored<T: LogEntry>(index: usize, value: &ValueRef<'_>) -> Result<T, DocError> {
    let ValueRef::Scalar(automerge::ScalarValueRef::Str(text)) = value else {
        return Err(entry_error::<T>(index, "not a string".into()));
    };
    if text.len() > T::MAX_BYTES {
        return Err(entry_error::<T>(
            index,
            format!("{} bytes, at most {} allowed", text.len(), T::MAX_BYTES),
        ));
    }
    let entry: T =
        serde_json::from_str(text).map_err(|e| entry_error::<T>(index, e.to_string()))?;
    entry.check(index)?;
    Ok(entry)
}

fn full<T: LogEntry>(len: usize, adding: usize, max: usize) -> DocError {
    DocError::LogFull {
        log: T::LOG,
        len,
        adding,
        max,
    }
}

fn rewritten<T: LogEntry>(reason: &str) -> DocError {
    DocError::LogRewritten {
        log: T::LOG,
        reason: reason.to_owned(),
    }
}

/// A list item's op, as counter and actor bytes: stable across save and load, unlike the
/// actor's index inside one document.
type OpKey = (u64, Vec<u8>);

fn op_key(id: &ObjId) -> OpKey {
    match id {
        ObjId::Root => (0, Vec::new()),
        ObjId::Id(counter, actor, _) => (*counter, actor.to_bytes().to_vec()),
    }
}
