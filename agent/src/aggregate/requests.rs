//! HTTP requests of one process and the blocking inside them.
//!
//! The request probes report when `serverHandler.ServeHTTP` starts and ends on a goroutine;
//! they come through the scheduler's ring buffer, between that goroutine's parks, in order.
//! So every park of the goroutine while it serves the request belongs to the request.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::{
    symbols::Frame,
    traceparent::{self, TraceContext},
};

/// Requests kept per process for `/api/v1/requests` (the oldest go first).
pub const MAX_RECENT: usize = 10_000;
/// Blocks kept per request for child spans (the longest ones first beyond this).
pub const MAX_BLOCK_SPANS: usize = 64;

/// A request being served.
#[derive(Debug, Clone)]
pub struct ActiveRequest {
    pub start_ns: u64,
    pub trace: TraceOrigin,
    /// The span gort gives the request (for OTLP and exemplars).
    pub span_id: [u8; 8],
    pub method: String,
    pub blocking: BTreeMap<u8, (u64, u64)>,
    /// The longest block: (reason, park_ns, resume_ns, frames).
    pub longest: Option<(u8, u64, u64, Box<[u64]>)>,
    /// Blocks long enough for a child span: (reason, park_ns, resume_ns, frames).
    pub block_spans: Vec<(u8, u64, u64, Box<[u64]>)>,
}

impl ActiveRequest {
    pub fn trace_id(&self) -> [u8; 16] {
        match self.trace {
            TraceOrigin::Header(t) => t.trace_id,
            TraceOrigin::Generated(id) => id,
        }
    }
}

/// The span a block happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Where a request's trace id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOrigin {
    /// The request's own `traceparent`.
    Header(TraceContext),
    /// None, or an invalid one: gort made a trace id up.
    Generated([u8; 16]),
}

/// A finished request, as `/api/v1/requests`, NDJSON and OTLP spans show it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub trace_id_generated: bool,
    /// The span gort gives the request (for OTLP).
    pub span_id: String,
    /// W3C trace flags of the incoming context (1: sampled).
    pub trace_flags: u8,
    pub pid: u32,
    pub service: String,
    pub goid: u64,
    pub method: String,
    /// The `ServeMux` route (Go 1.23+), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip)]
    #[expect(dead_code, reason = "kept for ordering by the monotonic clock")]
    pub start_ns: u64,
    #[serde(skip)]
    pub end_ns: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub duration_ns: u64,
    pub blocked_ns: u64,
    pub blocking: Vec<RequestBlocking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_block: Option<LongestBlock>,
    /// Blocks of at least `--span-min-block`, for child spans.
    #[serde(skip)]
    pub block_spans: Vec<BlockSpan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestBlocking {
    pub reason: String,
    pub count: u64,
    pub blocked_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LongestBlock {
    pub reason: String,
    pub ns: u64,
    /// `function file:line` of the first frame outside the runtime and standard library.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BlockSpan {
    pub reason: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub frame: Option<Frame>,
}

/// Requests of one process.
#[derive(Debug, Default)]
pub struct Requests {
    /// By goroutine.
    pub active: HashMap<u64, ActiveRequest>,
    pub recent: VecDeque<RequestRecord>,
    /// `traceparent` values rejected as the W3C specification says.
    pub traceparent_invalid: u64,
    /// Requests whose header map was too large to walk whole.
    pub headers_truncated: u64,
    /// Requests that never returned from ServeHTTP (a handler's panic that net/http
    /// recovered, then the connection's goroutine exited): dropped, not recorded.
    pub abandoned: u64,
    pub completed: u64,
    /// Parks inside completed requests by wait reason: (count, blocked ns).
    pub blocked_by_reason: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Requests {
    /// A request began on `goid`.
    pub fn on_start(
        &mut self,
        goid: u64,
        start_ns: u64,
        raw_traceparent: Option<&[u8]>,
        method: String,
        truncated: bool,
    ) {
        if truncated {
            self.headers_truncated += 1;
        }
        let trace = match raw_traceparent.map(traceparent::parse) {
            Some(Ok(t)) => TraceOrigin::Header(t),
            Some(Err(_)) => {
                self.traceparent_invalid += 1;
                TraceOrigin::Generated(random_id())
            }
            None => TraceOrigin::Generated(random_id()),
        };
        let previous = self.active.insert(
            goid,
            ActiveRequest {
                start_ns,
                trace,
                span_id: random_id()[..8].try_into().expect("8 of 16 bytes"),
                method,
                blocking: BTreeMap::new(),
                longest: None,
                block_spans: Vec::new(),
            },
        );
        if previous.is_some() {
            self.abandoned += 1;
        }
    }

    /// A park of `goid` ended; counted if it serves a request. Returns the request's trace
    /// context when its trace is recorded (the caller sampled it, or gort made it up), for
    /// exemplars.
    pub fn on_block(
        &mut self,
        goid: u64,
        reason: u8,
        park_ns: u64,
        resume_ns: u64,
        frames: &[u64],
        span_min_ns: u64,
    ) -> Option<SpanContext> {
        let r = self.active.get_mut(&goid)?;
        if park_ns < r.start_ns {
            return None;
        }
        let ns = resume_ns.saturating_sub(park_ns);
        let e = r.blocking.entry(reason).or_default();
        e.0 += 1;
        e.1 += ns;
        if r.longest.as_ref().is_none_or(|l| ns > l.2 - l.1) {
            r.longest = Some((reason, park_ns, resume_ns, frames.into()));
        }
        if ns >= span_min_ns {
            if r.block_spans.len() == MAX_BLOCK_SPANS {
                // Keep the longest ones.
                if let Some((i, _)) = r
                    .block_spans
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.2 - b.1)
                {
                    if r.block_spans[i].2 - r.block_spans[i].1 < ns {
                        r.block_spans.swap_remove(i);
                    }
                }
            }
            if r.block_spans.len() < MAX_BLOCK_SPANS {
                r.block_spans
                    .push((reason, park_ns, resume_ns, frames.into()));
            }
        }
        match r.trace {
            TraceOrigin::Header(t) if t.flags & 1 == 0 => None,
            TraceOrigin::Header(t) => Some(SpanContext {
                trace_id: t.trace_id,
                span_id: r.span_id,
            }),
            TraceOrigin::Generated(trace_id) => Some(SpanContext {
                trace_id,
                span_id: r.span_id,
            }),
        }
    }

    /// The goroutine `goid` exited: a request it still serves never returned.
    pub fn abandon(&mut self, goid: u64) {
        if self.active.remove(&goid).is_some() {
            self.abandoned += 1;
        }
    }

    /// The request on `goid` ended; returns it for recording.
    pub fn on_end(&mut self, goid: u64) -> Option<ActiveRequest> {
        self.active.remove(&goid)
    }

    pub fn record(&mut self, record: RequestRecord) {
        self.completed += 1;
        for b in &record.blocking {
            let entry = self.blocked_by_reason.entry(b.reason.clone()).or_default();
            entry.0 += b.count;
            entry.1 += b.blocked_ns;
        }
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(record);
    }
}

/// A random 16-byte id (a trace id; the first 8 bytes make a span id).
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    // An id that is all zeros is invalid; the chance is nil, the check is cheap.
    while id == [0; 16] {
        if getrandom::fill(&mut id).is_err() {
            // No entropy source: time and a counter still make distinct ids.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            id[..8].copy_from_slice(&n.to_le_bytes());
            id[8..].copy_from_slice(&crate::collect::monotonic_ns().to_le_bytes());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_inside_the_request_are_its_own() {
        let mut r = Requests::default();
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        r.on_block(5, 14, 0, 10, &[], 1_000); // before: not this request's
        r.on_start(5, 100, Some(tp), "GET".into(), false);
        r.on_block(5, 14, 200, 1_200, &[0x401000], 1_000);
        r.on_block(5, 2, 1_300, 1_400, &[], 1_000);
        r.on_block(6, 14, 150, 5_000, &[], 1_000); // another goroutine
        let a = r.on_end(5).unwrap();
        assert_eq!(a.blocking[&14], (1, 1_000));
        assert_eq!(a.blocking[&2], (1, 100));
        assert_eq!(
            a.longest.as_ref().map(|l| (l.0, l.2 - l.1)),
            Some((14, 1_000))
        );
        assert_eq!(a.block_spans.len(), 1);
        assert!(matches!(a.trace, TraceOrigin::Header(t) if t.flags == 1));

        r.on_start(6, 0, Some(b"00-zz"), "GET".into(), true);
        assert!(matches!(r.active[&6].trace, TraceOrigin::Generated(_)));
        assert_eq!((r.traceparent_invalid, r.headers_truncated), (1, 1));
    }
}
