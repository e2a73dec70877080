//! Poison records: what could not be done, and why, sent to `<queue>-poison` before the
//! original message is deleted. Nothing is lost: a record that would exceed the message
//! size limit is split into parts.

use lakevault_common::wire::{CopyBatch, CopyItem, MAX_MESSAGE_BYTES};
pub use lakevault_common::wire::{FailedItem, PoisonRecord};

/// Context of the message being poisoned.
#[derive(Debug, Clone)]
pub struct PoisonContext {
    pub queue: String,
    pub message_id: String,
    pub dequeue_count: u64,
}

impl PoisonContext {
    fn record(&self, reason: &str) -> PoisonRecord {
        PoisonRecord {
            v: 1,
            kind: "poison".into(),
            reason: reason.to_string(),
            queue: self.queue.clone(),
            message_id: self.message_id.clone(),
            dequeue_count: self.dequeue_count,
            failed_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            batch: None,
            failures: Vec::new(),
            original: None,
            part: None,
        }
    }
}

fn encode(r: &PoisonRecord) -> String {
    serde_json::to_string(r).unwrap_or_else(|e| panic!("a poison record always serialises: {e}"))
}

/// Records for a message whose text could not be used at all.
pub fn for_original(ctx: &PoisonContext, reason: &str, original: &str) -> Vec<String> {
    let mut whole = ctx.record(reason);
    whole.original = Some(original.to_string());
    let text = encode(&whole);
    if text.len() <= MAX_MESSAGE_BYTES {
        return vec![text];
    }
    // Split the original on character boundaries so each part's JSON fits.
    let empty = encode(&PoisonRecord {
        part: Some([u32::MAX, u32::MAX]),
        original: Some(String::new()),
        ..ctx.record(reason)
    })
    .len();
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for c in original.chars() {
        let escaped = serde_json::to_string(&c.to_string())
            .map(|s| s.len() - 2)
            .unwrap_or(6);
        if empty + current_len + escaped > MAX_MESSAGE_BYTES {
            chunks.push(std::mem::take(&mut current));
            current_len = 0;
        }
        current.push(c);
        current_len += escaped;
    }
    chunks.push(current);
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            encode(&PoisonRecord {
                original: Some(chunk),
                part: Some([i as u32, count]),
                ..ctx.record(reason)
            })
        })
        .collect()
}

/// Records for failed items of a decoded batch; items are spread over as many records as
/// needed to stay under the size limit.
pub fn for_items(
    ctx: &PoisonContext,
    reason: &str,
    batch: &CopyBatch,
    failed: Vec<(CopyItem, FailedItem)>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut record = ctx.record(reason);
    record.batch = Some(batch.with_items(Vec::new(), batch.attempt));
    for (item, failure) in failed {
        let mut candidate = record.clone();
        if let Some(b) = candidate.batch.as_mut() {
            b.items.push(item.clone());
        }
        candidate.failures.push(failure.clone());
        let has_items = record.batch.as_ref().is_some_and(|b| !b.items.is_empty());
        if encode(&candidate).len() > MAX_MESSAGE_BYTES && has_items {
            out.push(encode(&record));
            record = ctx.record(reason);
            record.batch = Some(batch.with_items(vec![item], batch.attempt));
            record.failures = vec![failure];
        } else {
            record = candidate;
        }
    }
    if record.batch.as_ref().is_some_and(|b| !b.items.is_empty()) {
        out.push(encode(&record));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PoisonContext {
        PoisonContext {
            queue: "q".into(),
            message_id: "m1".into(),
            dequeue_count: 1,
        }
    }

    #[test]
    fn small_original_is_one_record() {
        let r = for_original(&ctx(), "not JSON", "hello");
        assert_eq!(r.len(), 1);
        let rec: PoisonRecord = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(rec.original.as_deref(), Some("hello"));
        assert_eq!(rec.reason, "not JSON");
    }

    #[test]
    fn large_original_is_split_without_loss() {
        let original: String = "\"ü<&>\n".repeat(20_000);
        let r = for_original(&ctx(), "not JSON", &original);
        assert!(r.len() > 1);
        let mut joined = String::new();
        for (i, text) in r.iter().enumerate() {
            assert!(text.len() <= MAX_MESSAGE_BYTES);
            let rec: PoisonRecord = serde_json::from_str(text).unwrap();
            assert_eq!(rec.part, Some([i as u32, r.len() as u32]));
            joined.push_str(rec.original.as_deref().unwrap());
        }
        assert_eq!(joined, original);
    }
}
