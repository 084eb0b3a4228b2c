//! The HTTP request probes (kernel side: in `agent-ebpf/src/bin/sched.rs`, shared types:
//! `agent_common::http`): `net/http.serverHandler.ServeHTTP`'s entry and its RETs, on the
//! goroutine serving the request. They live in the scheduler's object so that a request's
//! start, the parks of its goroutine and its end come through one ring buffer, in order.

use std::path::Path;

use agent_common::http::{HttpConfig, RequestEvent, map_kind, request_flags, request_kind};

use super::{Attachment, Family, ProbeError, Probes, Scope};
use crate::target::GoTarget;

const ENTRY: &str = "http_serve_entry";
const RETURN: &str = "http_serve_return";

/// The programs (in the scheduler's object).
pub const PROGRAMS: [&str; 2] = [ENTRY, RETURN];

pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

/// Where to attach in one binary, and what the probes read there.
#[derive(Debug, Clone)]
pub struct HttpPoints {
    pub entry: u64,
    pub returns: Vec<u64>,
    pub config: HttpConfig,
}

/// Where to attach in `target`, or why the request probes cannot (no `net/http` server in
/// the binary, or its layout unknown).
pub fn points(target: &GoTarget) -> Result<HttpPoints, String> {
    let bin = &target.binary;
    let serve = bin
        .function(SERVE_HTTP)
        .ok_or_else(|| format!("no function {SERVE_HTTP}: not a net/http server"))?;
    let offset = |vaddr: u64| {
        bin.file_offset(vaddr)
            .ok_or_else(|| format!("{SERVE_HTTP} at {vaddr:#x} is not in the file"))
    };
    let rets = bin.ret_instructions(&serve).map_err(|e| e.to_string())?;
    if rets.is_empty() {
        return Err(format!("no RET instruction in {SERVE_HTTP}"));
    }
    let o = &target.offsets;
    let need =
        |v: Option<u32>, what: &str| v.ok_or_else(|| format!("the offset of {what} is unknown"));
    // Swiss tables since Go 1.24, unless built with GOEXPERIMENT=noswissmap.
    let v = target.go_version();
    let no_swiss = bin
        .build_info()
        .setting("GOEXPERIMENT")
        .is_some_and(|e| e.split(',').any(|x| x == "noswissmap"));
    let swiss = (v.major, v.minor) >= (1, 24) && !no_swiss;
    let mut config = HttpConfig {
        valid: 1,
        map_kind: if swiss {
            map_kind::SWISS
        } else {
            map_kind::BUCKETS
        },
        request_method: need(o.request_method, "http.Request.Method")?,
        request_header: need(o.request_header, "http.Request.Header")?,
        request_pattern: o.request_pattern.unwrap_or(0),
        ..HttpConfig::default()
    };
    if swiss {
        config.swiss_dir_ptr = need(o.swiss_dir_ptr, "maps.Map.dirPtr")?;
        config.swiss_dir_len = need(o.swiss_dir_len, "maps.Map.dirLen")?;
        config.swiss_table_groups = need(o.swiss_table_groups, "maps.table.groups")?;
        config.swiss_groups_data = need(o.swiss_groups_data, "maps.groupsReference.data")?;
        config.swiss_groups_mask = need(o.swiss_groups_mask, "maps.groupsReference.lengthMask")?;
    } else {
        config.hmap_b = need(o.hmap_b, "runtime.hmap.B")?;
        config.hmap_buckets = need(o.hmap_buckets, "runtime.hmap.buckets")?;
    }
    Ok(HttpPoints {
        entry: offset(serve.entry)?,
        returns: rets.into_iter().map(offset).collect::<Result<_, _>>()?,
        config,
    })
}

pub(super) fn attach(
    probes: &mut Probes,
    points: &HttpPoints,
    path: &Path,
    scope: Scope,
    attachment: &mut Attachment,
) -> Result<(), ProbeError> {
    probes.set_http_config(attachment.slot, points.config)?;
    probes.attach_points(
        attachment,
        (Family::Http, RETURN),
        path,
        &points.returns,
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Http, ENTRY),
        path,
        &[points.entry],
        scope,
    )
}

/// A request began or ended on a goroutine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestProbeEvent {
    pub start: bool,
    pub binary: u8,
    pub pid: u32,
    pub goid: u64,
    pub g: u64,
    pub ns: u64,
    /// At the start: the first `Traceparent` value, if any (raw bytes, untrusted).
    pub traceparent: Option<Vec<u8>>,
    /// At the start: the header map was too large to walk whole.
    pub headers_truncated: bool,
    /// At the start: the method.
    pub method: Vec<u8>,
    /// At the end: the `ServeMux` route (Go 1.23+), if any.
    pub pattern: Option<Vec<u8>>,
}

/// Decodes a request record of the scheduler's ring buffer.
pub fn decode(bytes: &[u8]) -> Option<RequestProbeEvent> {
    if bytes.len() < size_of::<RequestEvent>() {
        return None;
    }
    // SAFETY: the length was checked; RequestEvent is plain integers, valid for any bytes.
    let e: RequestEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let start = match e.kind {
        request_kind::START => true,
        request_kind::END => false,
        _ => return None,
    };
    let text = e.text[..(e.text_len as usize).min(e.text.len())].to_vec();
    Some(RequestProbeEvent {
        start,
        binary: e.binary,
        pid: e.pid,
        goid: e.goid,
        g: e.g,
        ns: e.ns,
        traceparent: (start && e.flags & request_flags::TRACEPARENT != 0).then(|| text.clone()),
        headers_truncated: e.flags & request_flags::HEADERS_TRUNCATED != 0,
        method: e.method[..(e.method_len as usize).min(e.method.len())].to_vec(),
        pattern: (!start && !text.is_empty()).then_some(text),
    })
}
