//! The scheduler probe family: how long goroutines stay parked, and why.
//!
//! Two probes per park, no uretprobe (Go moves goroutine stacks, which breaks uretprobes):
//! - `gopark_entry` at `runtime.gopark`'s entry records (pid, g) → (goid, reason, time) in
//!   `PARKED`;
//! - `gopark_return` at each RET instruction of `runtime.gopark` fires when the goroutine runs
//!   again (`gopark` returns from `mcall(park_m)` only once the scheduler has resumed it,
//!   `runtime/proc.go`), takes the entry out of `PARKED` and writes one [`BlockHead`] (a
//!   [`BlockEvent`], with the stack frames, for a long park).
//!
//! So the blocked time measured is park → running: it includes the wait in the run queue
//! after the goroutine was made ready.
//!
//! Events are submitted without waking the consumer (`BPF_RB_NO_WAKEUP`): the agent drains the
//! ring buffer on a short timer, which spares the target the wakeup's cost on every park.
#![no_std]
#![no_main]

use agent_common::{
    DropCause, MAX_BINARIES, Stat,
    http::{
        HttpConfig, REQUEST_METHOD_LEN, REQUEST_TEXT_LEN, RequestEvent, request_flags, request_kind,
    },
    sched::{BlockEvent, BlockHead, MAX_FRAMES, ParkKey, Parked, event_kind},
};
use agent_ebpf::{
    binary_config, count, count_drop, current_g, current_pid, frame_pointer, go_arg, gomap,
    read_user_u64, stack_pointer, try_read_user_u64,
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::bpf_ktime_get_ns,
    macros::{map, uprobe},
    maps::{Array, HashMap, RingBuf},
    programs::ProbeContext,
};

/// Blocks at least this long get their stack frames captured (set at load time).
#[unsafe(no_mangle)]
static FRAME_MIN_NS: u64 = 1_000_000;

/// Goroutines parked right now. Sized by the agent at load time (`--max-parked`).
#[map]
static PARKED: HashMap<ParkKey, Parked> = HashMap::with_max_entries(65_536, 0);

/// What the request probes read, per binary (indexed by the attach cookie).
#[map]
static HTTP_CONFIG: Array<HttpConfig> = Array::with_max_entries(MAX_BINARIES, 0);

/// The `*http.Request` each goroutine serving a request is serving, for the request's end.
#[map]
static SERVING: HashMap<ParkKey, u64> = HashMap::with_max_entries(65_536, 0);

/// Completed parks, for the agent. Sized by the agent at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[uprobe]
pub fn gopark_entry(ctx: ProbeContext) -> u32 {
    match try_gopark_entry(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// `func gopark(unlockf func(*g, unsafe.Pointer) bool, lock unsafe.Pointer, reason waitReason,
/// traceReason traceBlockReason, traceskip int)`: `reason` (a uint8) is the third argument.
fn try_gopark_entry(ctx: &ProbeContext) -> Result<u32, u32> {
    count(Stat::Parks);
    let (_, config) = binary_config(ctx)?;
    let g = current_g(ctx);
    let goid = read_user_u64(g + config.goid_offset as u64)?;
    let key = ParkKey {
        pid: current_pid(),
        _pad: 0,
        g,
    };
    let parked = Parked {
        goid,
        // SAFETY: plain helper call.
        park_ns: unsafe { bpf_ktime_get_ns() },
        reason: go_arg(ctx, 2) as u8,
        _pad: [0; 7],
    };
    // Overwrites a stale entry of this g (a park whose return we missed while attaching).
    if PARKED.insert(key, parked, 0).is_err() {
        count_drop(DropCause::InflightFull);
    }
    Ok(0)
}

#[uprobe]
pub fn gopark_return(ctx: ProbeContext) -> u32 {
    match try_gopark_return(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_gopark_return(ctx: &ProbeContext) -> Result<u32, u32> {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let g = current_g(ctx);
    let key = ParkKey {
        pid: current_pid(),
        _pad: 0,
        g,
    };
    // SAFETY: the value is copied out at once; only this goroutine, running on this thread
    // now, writes its own entry.
    let parked = unsafe { PARKED.get(key) }.copied();
    if parked.is_some() {
        let _ = PARKED.remove(key);
    }
    let (slot, config) = binary_config(ctx)?;
    let mut head = BlockHead {
        kind: event_kind::BLOCK,
        reason: 0,
        nframes: 0,
        binary: slot as u8,
        pid: key.pid,
        goid: 0,
        g,
        park_ns: 0,
        resume_ns: now,
    };
    let frames_wanted = match parked {
        Some(p) => {
            count(Stat::Resumes);
            head.reason = p.reason;
            head.goid = p.goid;
            head.park_ns = p.park_ns;
            // SAFETY: reading a load-time constant.
            now.wrapping_sub(p.park_ns) >= unsafe { core::ptr::read_volatile(&FRAME_MIN_NS) }
        }
        None => {
            count(Stat::ResumesUnmatched);
            head.kind = event_kind::RESUME_UNMATCHED;
            head.goid = read_user_u64(g + config.goid_offset as u64).unwrap_or(0);
            false
        }
    };
    if frames_wanted {
        let Some(mut event) = EVENTS.reserve::<BlockEvent>(0) else {
            count_drop(DropCause::RingbufFull);
            return Err(1);
        };
        let out = event.as_mut_ptr();
        // SAFETY: `out` points at a reserved, exclusively owned ring buffer record.
        unsafe {
            (*out).head = head;
            (*out).head.nframes = capture_frames(ctx, &mut (*out).frames);
        }
        event.submit(BPF_RB_NO_WAKEUP as u64);
    } else if EVENTS
        .output::<BlockHead>(&head, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count_drop(DropCause::RingbufFull);
        return Err(1);
    }
    Ok(0)
}

/// `func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request)`: `sh` (one pointer)
/// in RAX, `rw` (an interface) in RBX and RCX, `req` in RDI. Reads the method and the first
/// `Traceparent` value, and nothing else of the request.
#[uprobe]
pub fn http_serve_entry(ctx: ProbeContext) -> u32 {
    match try_http_serve(&ctx, true) {
        Ok(r) | Err(r) => r,
    }
}

/// At each RET of `serverHandler.ServeHTTP`: the request is done; its `Pattern` (the route
/// `ServeMux` matched, Go 1.23+) is read now that it is set.
#[uprobe]
pub fn http_serve_return(ctx: ProbeContext) -> u32 {
    match try_http_serve(&ctx, false) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn try_http_serve(ctx: &ProbeContext, start: bool) -> Result<u32, u32> {
    let (slot, config) = binary_config(ctx)?;
    let http = match HTTP_CONFIG.get(slot) {
        Some(c) if c.valid != 0 => *c,
        _ => return Err(1),
    };
    let g = current_g(ctx);
    let key = ParkKey {
        pid: current_pid(),
        _pad: 0,
        g,
    };
    let req = if start {
        let req = go_arg(ctx, 3);
        if SERVING.insert(key, req, 0).is_err() {
            count_drop(DropCause::InflightFull);
        }
        req
    } else {
        // SAFETY: copied out at once; only this goroutine writes its own entry.
        let req = unsafe { SERVING.get(key) }.copied().unwrap_or(0);
        let _ = SERVING.remove(key);
        req
    };
    let goid = read_user_u64(g + config.goid_offset as u64)?;
    let Some(mut entry) = EVENTS.reserve::<RequestEvent>(0) else {
        count_drop(DropCause::RingbufFull);
        return Err(1);
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved, exclusively owned ring buffer record; every field is
    // written before it is submitted.
    unsafe {
        (*e).kind = if start {
            request_kind::START
        } else {
            request_kind::END
        };
        (*e).binary = slot as u8;
        (*e).flags = 0;
        (*e).text_len = 0;
        (*e).method_len = 0;
        (*e)._pad = [0; 3];
        (*e).pid = key.pid;
        (*e)._pad2 = 0;
        (*e).goid = goid;
        (*e).g = g;
        (*e).ns = bpf_ktime_get_ns();
        if req != 0 {
            if start {
                (*e).method_len = copy_string(req + http.request_method as u64, &mut (*e).method);
                let headers = try_read_user_u64(req + http.request_header as u64).unwrap_or(0);
                let (found, complete) = gomap::header_value(headers, b"Traceparent", &http);
                if !complete {
                    (*e).flags |= request_flags::HEADERS_TRUNCATED;
                }
                if let Some((ptr, len)) = found {
                    (*e).flags |= request_flags::TRACEPARENT;
                    (*e).text_len = copy_bytes(ptr, len, &mut (*e).text);
                }
            } else if http.request_pattern != 0 {
                (*e).text_len = copy_string(req + http.request_pattern as u64, &mut (*e).text);
            }
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    Ok(0)
}

/// Copies the Go string whose header is at `header`, truncated to the buffer.
#[inline(always)]
fn copy_string<const N: usize>(header: u64, out: &mut [u8; N]) -> u8 {
    let (Ok(ptr), Ok(len)) = (try_read_user_u64(header), try_read_user_u64(header + 8)) else {
        return 0;
    };
    copy_bytes(ptr, len, out)
}

#[inline(always)]
fn copy_bytes<const N: usize>(ptr: u64, len: u64, out: &mut [u8; N]) -> u8 {
    if ptr == 0 || len == 0 {
        return 0;
    }
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    // The mask keeps the size provably within the buffer for the verifier.
    let n = n & (2 * N as u32 - 1);
    if n as usize > N {
        return 0;
    }
    // SAFETY: `out` has room for `n` bytes; the helper checks the source address.
    let r = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            out.as_mut_ptr().cast(),
            n,
            ptr as *const _,
        )
    };
    if r == 0 { n as u8 } else { 0 }
}

const _: () = assert!(REQUEST_TEXT_LEN < 256 && REQUEST_METHOD_LEN < 256);

/// Walks the frame-pointer chain from a RET of `runtime.gopark`: there `gopark`'s frame is
/// gone, `[RSP]` is the return address into its caller and RBP is the caller's frame pointer
/// (Go keeps frame pointers on amd64). Each frame is `[saved RBP, return address]`.
#[inline(always)]
fn capture_frames(ctx: &ProbeContext, frames: &mut [u64; MAX_FRAMES]) -> u8 {
    let Ok(first) = try_read_user_u64(stack_pointer(ctx)) else {
        return 0;
    };
    frames[0] = first;
    let mut n: u8 = 1;
    let mut fp = frame_pointer(ctx);
    for slot in frames.iter_mut().skip(1) {
        if fp == 0 {
            break;
        }
        let Ok(ret) = try_read_user_u64(fp + 8) else {
            break;
        };
        let Ok(next) = try_read_user_u64(fp) else {
            break;
        };
        if ret == 0 {
            break;
        }
        *slot = ret;
        n += 1;
        // Frames grow towards higher addresses; anything else is the end of the chain.
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
