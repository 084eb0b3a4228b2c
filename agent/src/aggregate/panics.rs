//! Panics and fatal errors of one process: what was panicked with (the message as Go prints
//! it where gort can tell), where, on which goroutine, and whether a deferred call recovered
//! it. Kept after the process has died: that is when they matter most.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::symbols::Frame;

/// Panics kept per process (the oldest go first).
pub const MAX_RECORDS: usize = 1_000;
/// Distinct `site` label values per process; the rest count as "other".
pub const MAX_SITES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still unwinding (deferred calls running).
    Unwinding,
    /// A deferred call recovered it.
    Recovered,
    /// Not recovered: the process died of it.
    Fatal,
}

#[derive(Debug, Clone, Serialize)]
pub struct PanicRecord {
    pub goid: u64,
    /// CLOCK_MONOTONIC.
    #[serde(skip)]
    pub at_ns: u64,
    pub at_unix_ns: u64,
    /// `panic` or `fatal error` (`runtime.throw`: concurrent map writes, deadlock, ...).
    pub kind: &'static str,
    /// The dynamic type of the panic value, as the runtime names it.
    pub value_type: Option<String>,
    /// The message, as the program would print it after `panic: ` or `fatal error: `.
    pub message: String,
    /// Whether `message` is exactly what Go prints (false: gort could only describe the value).
    pub message_exact: bool,
    /// The first frame outside the Go runtime and standard library.
    pub site: Option<Frame>,
    /// The panicking goroutine's stack, innermost first.
    pub stack: Vec<Frame>,
    pub outcome: Outcome,
    /// The trace of the HTTP request the goroutine was serving, and gort's span for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The value's type and data pointers: with the time, how a probe hit twice is told
    /// from a second panic.
    #[serde(skip)]
    pub value: (u64, u64),
}

/// Two hits of one probe this close, for the same goroutine and value, are one call hit twice
/// (a signal interrupted the single-step of the probed instruction and the kernel restarted
/// it, kernel/events/uprobes.c `handle_singlestep`).
const DUPLICATE_WITHIN_NS: u64 = 1_000_000;

#[derive(Debug, Default)]
pub struct Panics {
    pub records: VecDeque<PanicRecord>,
    /// Resolved panics and fatal errors by (recovered, site label).
    pub counts: BTreeMap<(bool, String), u64>,
    /// The last recovery: (goid, value, when), to tell a probe hit twice.
    last_recovery: Option<(u64, (u64, u64), u64)>,
}

impl Panics {
    pub fn on_panic(&mut self, record: PanicRecord) {
        let duplicate = self.records.back().is_some_and(|last| {
            last.goid == record.goid
                && last.value == record.value
                && last.message == record.message
                && record.at_ns.saturating_sub(last.at_ns) < DUPLICATE_WITHIN_NS
        });
        if duplicate {
            return;
        }
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        let fatal = record.outcome == Outcome::Fatal;
        let site = record.site.clone();
        self.records.push_back(record);
        if fatal {
            self.count(false, site.as_ref());
        }
    }

    /// A deferred call on `goid` recovered `value` at `at_ns`: resolves the goroutine's
    /// innermost unwinding panic, unless this is the same recovery seen twice.
    pub fn on_recovered(
        &mut self,
        goid: u64,
        value: (u64, u64),
        at_ns: u64,
    ) -> Option<&PanicRecord> {
        if self.last_recovery.is_some_and(|(g, v, t)| {
            g == goid && v == value && at_ns.saturating_sub(t) < DUPLICATE_WITHIN_NS
        }) {
            return None;
        }
        self.last_recovery = Some((goid, value, at_ns));
        self.resolve(goid, Outcome::Recovered)
    }

    /// Resolves the goroutine's innermost unwinding panic (a panic in a deferred call nests
    /// in the one being unwound). Returns it, resolved.
    pub fn resolve(&mut self, goid: u64, outcome: Outcome) -> Option<&PanicRecord> {
        let i = self
            .records
            .iter()
            .rposition(|r| r.goid == goid && r.outcome == Outcome::Unwinding)?;
        self.records[i].outcome = outcome;
        let site = self.records[i].site.clone();
        self.count(outcome == Outcome::Recovered, site.as_ref());
        if outcome == Outcome::Fatal {
            // The process dies of it: the goroutine's other unwinding panics die with it.
            for r in self
                .records
                .iter_mut()
                .filter(|r| r.goid == goid && r.outcome == Outcome::Unwinding)
            {
                r.outcome = Outcome::Fatal;
            }
        }
        self.records.get(i)
    }

    fn count(&mut self, recovered: bool, site: Option<&Frame>) {
        let label = site.map_or_else(|| "unknown".to_string(), Frame::short);
        let known = self
            .counts
            .keys()
            .map(|(_, s)| s)
            .filter(|s| *s != "other")
            .collect::<std::collections::BTreeSet<_>>();
        let label = if known.contains(&label) || known.len() < MAX_SITES {
            label
        } else {
            "other".to_string()
        };
        *self.counts.entry((recovered, label)).or_default() += 1;
    }
}

/// The message Go prints for a panic value, from what the probe read: the value's dynamic
/// type name, the first words its data pointer points at, and the string those describe.
/// Returns (message, exact).
pub fn panic_message(value_type: Option<&str>, words: [u64; 4], string: &[u8]) -> (String, bool) {
    let s = || String::from_utf8_lossy(string).into_owned();
    match value_type {
        // panic("..."), errors.New, fmt.Errorf without %w, runtime.plainError.
        Some(
            "string"
            | "*errors.errorString"
            | "*fmt.wrapError"
            | "*fmt.wrapErrors"
            | "runtime.plainError",
        ) => (s(), true),
        // runtime.Error values print with the "runtime error: " prefix (runtime/error.go).
        Some("runtime.errorString") => (format!("runtime error: {}", s()), true),
        Some("runtime.boundsError") => match bounds_error(words) {
            Some(m) => (format!("runtime error: {m}"), true),
            None => ("runtime error: bounds error".into(), false),
        },
        Some(t @ ("int" | "int64" | "int32" | "int16" | "int8")) => {
            let bits = match t {
                "int8" => 8,
                "int16" => 16,
                "int32" => 32,
                _ => 64,
            };
            let v = ((words[0] << (64 - bits)) as i64) >> (64 - bits);
            (format!("{v}"), true)
        }
        Some(t @ ("uint" | "uint64" | "uint32" | "uint16" | "uint8" | "uintptr")) => {
            let mask = match t {
                "uint8" => 0xff,
                "uint16" => 0xffff,
                "uint32" => 0xffff_ffff,
                _ => u64::MAX,
            };
            (format!("{}", words[0] & mask), true)
        }
        // An error or value gort cannot format: its type, and the string it starts with.
        Some(t) if !string.is_empty() => (format!("({t}) {}", s()), false),
        Some(t) => (format!("({t})"), false),
        None if !string.is_empty() => (s(), false),
        None => ("(unknown value)".into(), false),
    }
}

/// `runtime.boundsError{x int64; y int; signed bool; code uint8}` as Go formats it
/// (runtime/error.go `boundsErrorFmts`, `boundsNegErrorFmts`; codes as in
/// internal/abi `BoundsIndex`...).
fn bounds_error(words: [u64; 4]) -> Option<String> {
    const FMTS: [&str; 9] = [
        "index out of range [%x] with length %y",
        "slice bounds out of range [:%x] with length %y",
        "slice bounds out of range [:%x] with capacity %y",
        "slice bounds out of range [%x:%y]",
        "slice bounds out of range [::%x] with length %y",
        "slice bounds out of range [::%x] with capacity %y",
        "slice bounds out of range [:%x:%y]",
        "slice bounds out of range [%x:%y:]",
        "cannot convert slice with length %y to array or pointer to array with length %x",
    ];
    const NEG_FMTS: [&str; 9] = [
        "index out of range [%x]",
        "slice bounds out of range [:%x]",
        "slice bounds out of range [:%x]",
        "slice bounds out of range [%x:]",
        "slice bounds out of range [::%x]",
        "slice bounds out of range [::%x]",
        "slice bounds out of range [:%x:]",
        "slice bounds out of range [%x::]",
        "cannot convert slice with length %y to array or pointer to array with length %x",
    ];
    let (x, y) = (words[0] as i64, words[1] as i64);
    let signed = words[2] & 0xff != 0;
    let code = ((words[2] >> 8) & 0xff) as usize;
    let negative = signed && x < 0;
    let fmt = if negative {
        NEG_FMTS.get(code)?
    } else {
        FMTS.get(code)?
    };
    let xs = if signed {
        x.to_string()
    } else {
        (x as u64).to_string()
    };
    Some(fmt.replace("%x", &xs).replace("%y", &y.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_go_prints_them() {
        assert_eq!(
            panic_message(Some("string"), [0; 4], b"boom"),
            ("boom".into(), true)
        );
        assert_eq!(
            panic_message(Some("*errors.errorString"), [0; 4], b"bad input"),
            ("bad input".into(), true)
        );
        assert_eq!(
            panic_message(
                Some("runtime.plainError"),
                [0; 4],
                b"assignment to entry in nil map"
            ),
            ("assignment to entry in nil map".into(), true)
        );
        assert_eq!(
            panic_message(
                Some("runtime.errorString"),
                [0; 4],
                b"integer divide by zero"
            ),
            ("runtime error: integer divide by zero".into(), true)
        );
        // s[5] with len(s) == 3, signed index: code 0.
        let words = [5, 3, 1, 0];
        assert_eq!(
            panic_message(Some("runtime.boundsError"), words, b""),
            (
                "runtime error: index out of range [5] with length 3".into(),
                true
            )
        );
        let words = [(-1i64) as u64, 3, 1 | (3 << 8), 0];
        assert_eq!(
            panic_message(Some("runtime.boundsError"), words, b""),
            (
                "runtime error: slice bounds out of range [-1:]".into(),
                true
            )
        );
        assert_eq!(
            panic_message(Some("int"), [(-42i64) as u64, 0, 0, 0], b""),
            ("-42".into(), true)
        );
        assert_eq!(
            panic_message(Some("main.MyErr"), [0; 4], b"x"),
            ("(main.MyErr) x".into(), false)
        );
    }

    fn record(goid: u64, outcome: Outcome, site: &str) -> PanicRecord {
        PanicRecord {
            goid,
            at_ns: 0,
            at_unix_ns: 0,
            kind: "panic",
            value_type: None,
            message: String::new(),
            message_exact: true,
            site: Some(Frame {
                function: site.into(),
                file: "/m.go".into(),
                line: 1,
            }),
            stack: vec![],
            outcome,
            trace_id: None,
            span_id: None,
            value: (1, 2),
        }
    }

    #[test]
    fn recovery_resolves_the_innermost_panic() {
        let mut p = Panics::default();
        p.on_panic(record(7, Outcome::Unwinding, "main.a"));
        // Panicked again in a deferred call, with another value.
        p.on_panic(PanicRecord {
            value: (3, 4),
            ..record(7, Outcome::Unwinding, "main.b")
        });
        p.on_panic(record(8, Outcome::Unwinding, "main.c"));
        assert_eq!(
            p.resolve(7, Outcome::Recovered)
                .unwrap()
                .site
                .as_ref()
                .unwrap()
                .function,
            "main.b"
        );
        assert_eq!(
            p.resolve(8, Outcome::Fatal).unwrap().outcome,
            Outcome::Fatal
        );
        assert!(p.resolve(9, Outcome::Recovered).is_none());
        assert_eq!(p.counts[&(true, "main.b m.go:1".to_string())], 1);
        assert_eq!(p.counts[&(false, "main.c m.go:1".to_string())], 1);
        assert_eq!(p.records[0].outcome, Outcome::Unwinding);
    }

    #[test]
    fn a_probe_hit_twice_is_one_panic_and_one_recovery() {
        let mut p = Panics::default();
        p.on_panic(record(7, Outcome::Unwinding, "main.a"));
        p.on_panic(record(7, Outcome::Unwinding, "main.a"));
        assert_eq!(p.records.len(), 1);
        assert!(p.on_recovered(7, (1, 2), 10).is_some());
        assert!(p.on_recovered(7, (1, 2), 20).is_none());
        assert_eq!(p.counts[&(true, "main.a m.go:1".to_string())], 1);
    }
}
