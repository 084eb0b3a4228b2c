//! The `traceparent` parser on arbitrary bytes (they come from whoever sends the target a
//! request): it never panics, and whatever it accepts is well formed and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../agent/src/aggregate/traceparent.rs"]
#[allow(dead_code)]
mod traceparent;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = traceparent::parse(data) {
        assert_ne!(t.trace_id, [0; 16]);
        assert_ne!(t.parent_id, [0; 8]);
        let canonical = format!(
            "00-{}-{}-{:02x}",
            traceparent::hex(&t.trace_id),
            traceparent::hex(&t.parent_id),
            t.flags
        );
        assert_eq!(traceparent::parse(canonical.as_bytes()), Ok(t));
        // What was accepted holds the same ids, in lowercase hex.
        let text = String::from_utf8_lossy(data.trim_ascii());
        assert!(text.contains(&traceparent::hex(&t.trace_id)));
    }
});
