//! Looking up one key of a Go `map[string][]string` (an `http.Header`) from a probe, without
//! the map's hash function: walk the occupied slots, bounded, and compare keys.
//!
//! Two layouts: Go ≤ 1.23 buckets of 8 (runtime/map.go: `tophash [8]uint8`, 8 keys, 8
//! values, an overflow pointer; `tophash` < `minTopHash` (5) marks an empty slot) and Go
//! 1.24+ Swiss tables (internal/runtime/maps: groups of a control word and 8 slots; a control
//! byte with the high bit set marks an empty or deleted slot; a map of at most 8 entries is
//! one group, `dirLen == 0`).

use agent_common::http::{HttpConfig, map_kind};

use crate::try_read_user_u64;

/// A Go string header's size, and a `[]string` header's.
const STRING: u64 = 16;
const SLICE: u64 = 24;
/// Go ≤ 1.23: a bucket of `map[string][]string`.
const BUCKET_KEYS: u64 = 8;
const BUCKET_VALUES: u64 = BUCKET_KEYS + 8 * STRING;
const BUCKET_OVERFLOW: u64 = BUCKET_VALUES + 8 * SLICE;
const BUCKET_SIZE: u64 = BUCKET_OVERFLOW + 8;
const MIN_TOP_HASH: u64 = 5;
/// Go 1.24+: a group of `map[string][]string`: control word, then 8 (key, value) slots.
const SLOT_SIZE: u64 = STRING + SLICE;
const GROUP_SIZE: u64 = 8 + 8 * SLOT_SIZE;

/// Buckets (Go ≤ 1.23) or tables × groups (Go 1.24+) walked at most.
const MAX_BUCKETS: u64 = 16;
const MAX_TABLES: u64 = 4;
const MAX_GROUPS: u64 = 4;

/// The first value of key `want` (its string header: data pointer and length), if found, and
/// whether the walk covered the whole map.
#[inline(always)]
pub fn header_value(map: u64, want: &[u8; 11], c: &HttpConfig) -> (Option<(u64, u64)>, bool) {
    if map == 0 {
        return (None, true);
    }
    match c.map_kind {
        map_kind::BUCKETS => buckets(map, want, c),
        map_kind::SWISS => swiss(map, want, c),
        _ => (None, false),
    }
}

#[inline(always)]
fn buckets(map: u64, want: &[u8; 11], c: &HttpConfig) -> (Option<(u64, u64)>, bool) {
    let Ok(b) = try_read_user_u64(map + c.hmap_b as u64) else {
        return (None, false);
    };
    let Ok(base) = try_read_user_u64(map + c.hmap_buckets as u64) else {
        return (None, false);
    };
    let n = 1u64 << (b & 0xff).min(63);
    let complete = n <= MAX_BUCKETS;
    for i in 0..MAX_BUCKETS {
        if i >= n {
            break;
        }
        let mut bucket = base + i * BUCKET_SIZE;
        // The bucket and one overflow bucket.
        for _ in 0..2 {
            if bucket == 0 {
                break;
            }
            let Ok(tophash) = try_read_user_u64(bucket) else {
                break;
            };
            for slot in 0..8u64 {
                if (tophash >> (8 * slot)) & 0xff < MIN_TOP_HASH {
                    continue;
                }
                let key = bucket + BUCKET_KEYS + slot * STRING;
                if key_is(key, want) {
                    return (first_value(bucket + BUCKET_VALUES + slot * SLICE), true);
                }
            }
            bucket = try_read_user_u64(bucket + BUCKET_OVERFLOW).unwrap_or(0);
        }
    }
    (None, complete)
}

#[inline(always)]
fn swiss(map: u64, want: &[u8; 11], c: &HttpConfig) -> (Option<(u64, u64)>, bool) {
    let Ok(dir) = try_read_user_u64(map + c.swiss_dir_ptr as u64) else {
        return (None, false);
    };
    let Ok(dir_len) = try_read_user_u64(map + c.swiss_dir_len as u64) else {
        return (None, false);
    };
    if dir_len == 0 {
        // A small map: one group.
        return (group(dir, want), true);
    }
    let mut complete = dir_len <= MAX_TABLES;
    for t in 0..MAX_TABLES {
        if t >= dir_len {
            break;
        }
        let Ok(table) = try_read_user_u64(dir + 8 * t) else {
            break;
        };
        let groups = table + c.swiss_table_groups as u64;
        let Ok(data) = try_read_user_u64(groups + c.swiss_groups_data as u64) else {
            break;
        };
        let Ok(mask) = try_read_user_u64(groups + c.swiss_groups_mask as u64) else {
            break;
        };
        if mask >= MAX_GROUPS {
            complete = false;
        }
        for gi in 0..MAX_GROUPS {
            if gi > mask {
                break;
            }
            if let Some(v) = group(data + gi * GROUP_SIZE, want) {
                return (Some(v), true);
            }
        }
    }
    (None, complete)
}

#[inline(always)]
fn group(group: u64, want: &[u8; 11]) -> Option<(u64, u64)> {
    let ctrl = try_read_user_u64(group).ok()?;
    for slot in 0..8u64 {
        // High bit set: empty (0x80) or deleted (0xfe).
        if (ctrl >> (8 * slot)) & 0x80 != 0 {
            continue;
        }
        let key = group + 8 + slot * SLOT_SIZE;
        if key_is(key, want) {
            return first_value(key + STRING);
        }
    }
    None
}

/// Whether the Go string whose header is at `header` equals `want`.
#[inline(always)]
fn key_is(header: u64, want: &[u8; 11]) -> bool {
    let Ok(len) = try_read_user_u64(header + 8) else {
        return false;
    };
    if len != want.len() as u64 {
        return false;
    }
    let Ok(ptr) = try_read_user_u64(header) else {
        return false;
    };
    let mut got = [0u8; 16];
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error, not a fault.
    if unsafe { aya_ebpf::helpers::bpf_probe_read_user_buf(ptr as *const u8, &mut got[..11]) }
        .is_err()
    {
        return false;
    }
    got[..11] == want[..]
}

/// The first string of the `[]string` whose header is at `slice`.
#[inline(always)]
fn first_value(slice: u64) -> Option<(u64, u64)> {
    let data = try_read_user_u64(slice).ok()?;
    let len = try_read_user_u64(slice + 8).ok()?;
    if data == 0 || len == 0 {
        return None;
    }
    let ptr = try_read_user_u64(data).ok()?;
    let n = try_read_user_u64(data + 8).ok()?;
    Some((ptr, n))
}
