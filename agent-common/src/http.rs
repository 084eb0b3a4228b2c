//! Shared types of the HTTP request probes (`net/http.serverHandler.ServeHTTP`'s entry and
//! RETs). They live in the scheduler's eBPF object: a request's start, its parks and its end
//! go through the same ring buffer, in order, so each park is attributed to its request.

/// Per-binary layout of what the request probes read, at index `cookie` of `HTTP_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpConfig {
    /// Non-zero once filled.
    pub valid: u32,
    /// One of [`map_kind`].
    pub map_kind: u32,
    /// `net/http.Request`: `Method` (string), `Header` (map), `Pattern` (string; 0 = none).
    pub request_method: u32,
    pub request_header: u32,
    pub request_pattern: u32,
    /// Go ≤ 1.23 maps: `runtime.hmap.B` and `.buckets`.
    pub hmap_b: u32,
    pub hmap_buckets: u32,
    /// Go 1.24+ Swiss maps: `Map.dirPtr`, `Map.dirLen`, `table.groups`,
    /// `groupsReference.data`, `groupsReference.lengthMask`.
    pub swiss_dir_ptr: u32,
    pub swiss_dir_len: u32,
    pub swiss_table_groups: u32,
    pub swiss_groups_data: u32,
    pub swiss_groups_mask: u32,
}
const _: () = assert!(core::mem::size_of::<HttpConfig>() == 48);

/// How the binary's runtime lays out maps.
pub mod map_kind {
    /// Buckets of 8 (runtime/map.go, Go ≤ 1.23).
    pub const BUCKETS: u32 = 1;
    /// Swiss tables (internal/runtime/maps, Go 1.24+).
    pub const SWISS: u32 = 2;
}

/// Event kinds, after the scheduler's (they share the ring buffer and the first byte).
pub mod request_kind {
    /// `serverHandler.ServeHTTP` was called on this goroutine.
    pub const START: u8 = 3;
    /// It returned.
    pub const END: u8 = 4;
}

/// What a request event says besides its kind.
pub mod request_flags {
    /// A `Traceparent` header was found (its first value is in `text`).
    pub const TRACEPARENT: u8 = 1;
    /// The header map was larger than the walk covers: a `Traceparent` may have been missed.
    pub const HEADERS_TRUNCATED: u8 = 2;
}

/// Bytes of `text`.
pub const REQUEST_TEXT_LEN: usize = 64;
/// Bytes of `method`.
pub const REQUEST_METHOD_LEN: usize = 16;

/// A request began (`text`: the `Traceparent` value) or ended (`text`: `Request.Pattern`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    /// One of [`request_kind`].
    pub kind: u8,
    pub binary: u8,
    /// Of [`request_flags`].
    pub flags: u8,
    pub text_len: u8,
    pub method_len: u8,
    pub _pad: [u8; 3],
    pub pid: u32,
    pub _pad2: u32,
    pub goid: u64,
    pub g: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ns: u64,
    pub text: [u8; REQUEST_TEXT_LEN],
    pub method: [u8; REQUEST_METHOD_LEN],
}
const _: () =
    assert!(core::mem::size_of::<RequestEvent>() == 40 + REQUEST_TEXT_LEN + REQUEST_METHOD_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` plain integers with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::HttpConfig {}
    unsafe impl aya::Pod for super::RequestEvent {}
}
