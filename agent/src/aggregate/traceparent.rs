//! The W3C Trace Context `traceparent` header (https://www.w3.org/TR/trace-context/,
//! section 3.2): `version-traceid-parentid-flags`, lowercase hex. Anything malformed is
//! rejected as the specification says, never trusted: the bytes come from the target's
//! request, that is from whoever sent it.

use std::fmt;

/// A valid trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Why a `traceparent` was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Length,
    Version,
    Separator,
    NotLowercaseHex,
    ZeroTraceId,
    ZeroParentId,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Length => "wrong length",
            Invalid::Version => "version ff",
            Invalid::Separator => "misplaced separator",
            Invalid::NotLowercaseHex => "not lowercase hex",
            Invalid::ZeroTraceId => "all-zero trace id",
            Invalid::ZeroParentId => "all-zero parent id",
        })
    }
}

/// Parses a `traceparent` value. Versions after 00 are read by their version-00 prefix, as
/// the specification asks of parsers that know only version 00.
pub fn parse(raw: &[u8]) -> Result<TraceContext, Invalid> {
    // Optional whitespace around a header value is not part of it.
    let raw = raw.trim_ascii();
    if raw.len() < 55 {
        return Err(Invalid::Length);
    }
    let version = hex_byte(&raw[0..2])?;
    if version == 0xff {
        return Err(Invalid::Version);
    }
    if version == 0 && raw.len() != 55 {
        return Err(Invalid::Length);
    }
    if version != 0 && raw.len() > 55 && raw[55] != b'-' {
        return Err(Invalid::Separator);
    }
    if raw[2] != b'-' || raw[35] != b'-' || raw[52] != b'-' {
        return Err(Invalid::Separator);
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&raw[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0u8; 8];
    for (i, b) in parent_id.iter_mut().enumerate() {
        *b = hex_byte(&raw[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&raw[53..55])?;
    if trace_id == [0; 16] {
        return Err(Invalid::ZeroTraceId);
    }
    if parent_id == [0; 8] {
        return Err(Invalid::ZeroParentId);
    }
    Ok(TraceContext {
        trace_id,
        parent_id,
        flags,
    })
}

fn hex_byte(two: &[u8]) -> Result<u8, Invalid> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(Invalid::NotLowercaseHex),
    };
    Ok(digit(two[0])? << 4 | digit(two[1])?)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example() {
        let t = parse(VALID.as_bytes()).unwrap();
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&t.parent_id), "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(parse(format!("  {VALID}\t").as_bytes()), Ok(t));
    }

    #[test]
    fn malformed_values_are_rejected() {
        let cases: &[(&str, Invalid)] = &[
            ("", Invalid::Length),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                Invalid::Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Invalid::Length,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Version,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Invalid::NotLowercaseHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                Invalid::NotLowercaseHex,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Separator,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                Invalid::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                Invalid::ZeroParentId,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::NotLowercaseHex,
            ),
        ];
        for (raw, why) in cases {
            assert_eq!(parse(raw.as_bytes()), Err(*why), "{raw:?}");
        }
        assert!(parse(&[0xff; 200]).is_err());
        assert!(parse(&VALID.as_bytes()[..54]).is_err());
    }

    #[test]
    fn future_versions_are_read_by_their_prefix() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(
            hex(&parse(future.as_bytes()).unwrap().trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            Err(Invalid::Separator)
        );
    }

    /// Any bytes at all: an answer, never a panic (what a fuzzer checks, in-process).
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = Vec::new();
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.clear();
            let len = (x % 80) as usize;
            let base = VALID.as_bytes();
            for i in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly near-valid input, with mutations.
                buf.push(if x.is_multiple_of(7) {
                    x as u8
                } else {
                    base.get(i).copied().unwrap_or(b'-')
                });
            }
            let _ = parse(&buf);
        }
    }
}
