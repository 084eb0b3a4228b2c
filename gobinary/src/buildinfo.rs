//! Go build info: the Go release and module list the linker stores after the
//! `"\xff Go buildinf:"` magic in `.go.buildinfo`, decoded as `debug/buildinfo`
//! (`readRawBuildInfo`) and `runtime/debug` (`ParseBuildInfo`) do.

use std::fmt;

/// The magic that starts the build info blob (`debug/buildinfo.buildInfoMagic`).
pub(crate) const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The blob is aligned to 16 bytes (`debug/buildinfo.buildInfoAlign`).
pub(crate) const ALIGN: usize = 16;
/// Bytes of header before the inline strings (`debug/buildinfo.buildInfoHeaderSize`).
const HEADER_SIZE: usize = 32;
/// Flag bit: strings are inline varint-prefixed (Go 1.18+) rather than pointed to.
const FLAGS_VERSION_INLINE: u8 = 0x2;
/// Flag bit: the pointers of the old format are big-endian.
const FLAGS_ENDIAN_BIG: u8 = 0x1;

/// A Go release, like `go1.22.10`; ordered by major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GoVersion {
    /// Always 1 so far.
    pub major: u32,
    /// The minor release, like 22.
    pub minor: u32,
    /// The patch release (0 for the first release and for betas and release candidates).
    pub patch: u32,
}

impl GoVersion {
    /// A release from its numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> GoVersion {
        GoVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses what `runtime.Version()` reports: `go1.22.10`, `go1.21rc2`, `go1.20`,
    /// `go1.23.0 X:boringcrypto`, `devel go1.24-1a2b3c Tue ...`.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let rest = &s[s.find("go1.")? + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut numbers = rest[..end].split('.').map(str::parse::<u32>);
        let major = numbers.next()?.ok()?;
        let minor = numbers.next()?.ok()?;
        // `go1.20` and `go1.21rc2` have no patch number: they come before `.1`.
        let patch = numbers.next().transpose().ok()?.unwrap_or(0);
        Some(GoVersion::new(major, minor, patch))
    }

    /// The minor release this one belongs to, like `go1.22` for `go1.22.10`.
    pub fn minor_name(&self) -> String {
        format!("go{}.{}", self.major, self.minor)
    }

    /// Whether `self` and `other` are patches of the same minor release.
    pub fn same_minor(&self, other: &GoVersion) -> bool {
        (self.major, self.minor) == (other.major, other.minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A module the binary was built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Module {
    /// The module path, like `golang.org/x/net`.
    pub path: String,
    /// Its version, like `v0.21.0`, or `(devel)` for the main module.
    pub version: String,
    /// The module that replaced it (a `=>` line), when there is one.
    pub replace: Option<Box<Module>>,
}

/// What `go version -m` shows: the Go release and the modules and settings of the build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// The Go release, parsed from `go_version_raw`.
    pub go_version: GoVersion,
    /// The Go release as stored, like `go1.22.10` or `go1.23.0 X:boringcrypto`.
    pub go_version_raw: String,
    /// The main package's import path (`path` line).
    pub path: Option<String>,
    /// The main module (`mod` line).
    pub main_module: Option<Module>,
    /// The dependencies (`dep` lines), in the order the linker wrote them.
    pub deps: Vec<Module>,
    /// Build settings (`build` lines) like `("GOARCH", "amd64")`, values unquoted.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The value of build setting `key`, like `-buildmode` or `vcs.revision`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Memory access for the pre-1.18 format, whose header points at its strings.
pub(crate) trait PointerReader {
    /// `len` bytes at virtual address `vaddr`.
    fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&[u8]>;

    /// The pointer stored at `vaddr`; a PIE overrides this to apply relocations.
    fn pointer_at(&self, vaddr: u64, size: usize, big_endian: bool) -> Option<u64> {
        read_uint(self.bytes_at(vaddr, size)?, big_endian)
    }
}

/// A 4- or 8-byte unsigned integer.
pub(crate) fn read_uint(b: &[u8], big_endian: bool) -> Option<u64> {
    Some(match (b.len(), big_endian) {
        (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
        (4, true) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
        (8, false) => u64::from_le_bytes(b.try_into().ok()?),
        (8, true) => u64::from_be_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// Decodes the blob starting at the magic, at virtual address `vaddr`. `blob` runs to
/// the end of its segment; `reader` resolves the pointers of the old (pre-1.18) format.
pub(crate) fn decode(
    blob: &[u8],
    vaddr: u64,
    reader: &dyn PointerReader,
) -> Result<BuildInfo, String> {
    let header = blob
        .get(..HEADER_SIZE)
        .ok_or("truncated build info header")?;
    let ptr_size = usize::from(header[14]);
    let flags = header[15];
    let (version, modinfo) = if flags & FLAGS_VERSION_INLINE != 0 {
        let rest = &blob[HEADER_SIZE..];
        let (version, rest) = varint_string(rest).ok_or("truncated Go version string")?;
        let (modinfo, _) = varint_string(rest).ok_or("truncated module info string")?;
        (version, modinfo)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(format!("pointer size {ptr_size} is neither 4 nor 8"));
        }
        let big = flags & FLAGS_ENDIAN_BIG != 0;
        let size = u64::try_from(ptr_size).unwrap_or(8);
        // Each header pointer leads to a Go string header {data pointer, length}.
        let read_string = |at: u64| -> Option<&[u8]> {
            let string_header = reader.pointer_at(vaddr.checked_add(at)?, ptr_size, big)?;
            let data = reader.pointer_at(string_header, ptr_size, big)?;
            let len = read_uint(
                reader.bytes_at(string_header.checked_add(size)?, ptr_size)?,
                big,
            )?;
            reader.bytes_at(data, usize::try_from(len).ok()?)
        };
        let version = read_string(16).ok_or("unreadable Go version pointer")?;
        let modinfo = read_string(16 + size).unwrap_or_default();
        (version, modinfo)
    };
    let go_version_raw = String::from_utf8_lossy(version).into_owned();
    if go_version_raw.is_empty() {
        return Err("empty Go version".into());
    }
    let go_version = GoVersion::parse(&go_version_raw)
        .ok_or_else(|| format!("unrecognised Go version `{go_version_raw}`"))?;
    let mut info = BuildInfo {
        go_version,
        go_version_raw,
        ..BuildInfo::default()
    };
    // The module info is wrapped in 16-byte sentinels (cmd/go/internal/modload
    // `ModInfoData`), which are not UTF-8: strip them as `readRawBuildInfo` does first.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        parse_modinfo(
            &String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]),
            &mut info,
        );
    }
    Ok(info)
}

/// Decodes a uvarint-length-prefixed string (`debug/buildinfo.decodeString`).
pub(crate) fn varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = uvarint(data)?;
    let rest = &data[n..];
    let len = usize::try_from(len).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Decodes an unsigned LEB128 varint as `encoding/binary.Uvarint`: the value and the
/// number of bytes read, or None when truncated or longer than 64 bits.
pub(crate) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Parses the module lines as `runtime/debug.ParseBuildInfo`, but leniently: a line it
/// does not understand is skipped, since the rest is still worth reporting.
fn parse_modinfo(text: &str, info: &mut BuildInfo) {
    // Where a `=>` line attaches: the last `mod` or `dep`.
    enum Last {
        None,
        Main,
        Dep,
    }
    let mut last = Last::None;
    for line in text.split('\n') {
        if let Some(path) = line.strip_prefix("path\t") {
            info.path = Some(path.to_owned());
        } else if let Some(rest) = line.strip_prefix("mod\t") {
            info.main_module = module_line(rest);
            last = Last::Main;
        } else if let Some(rest) = line.strip_prefix("dep\t") {
            if let Some(m) = module_line(rest) {
                info.deps.push(m);
                last = Last::Dep;
            } else {
                last = Last::None;
            }
        } else if let Some(rest) = line.strip_prefix("=>\t") {
            let replace = module_line(rest).map(Box::new);
            let target = match last {
                Last::Main => info.main_module.as_mut(),
                Last::Dep => info.deps.last_mut(),
                Last::None => None,
            };
            if let Some(m) = target {
                m.replace = replace;
            }
            last = Last::None;
        } else if let Some(kv) = line.strip_prefix("build\t") {
            if let Some(setting) = build_setting(kv) {
                info.settings.push(setting);
            }
        }
    }
}

/// `path\tversion[\tsum]`.
fn module_line(rest: &str) -> Option<Module> {
    let cols: Vec<&str> = rest.split('\t').collect();
    match cols.as_slice() {
        [path, version] | [path, version, _] => Some(Module {
            path: (*path).to_owned(),
            version: (*version).to_owned(),
            replace: None,
        }),
        _ => None,
    }
}

/// `key=value`, either of which Go quotes (`strconv.Quote`) when it holds spaces, tabs,
/// quotes or (for keys) `=`.
fn build_setting(kv: &str) -> Option<(String, String)> {
    let (key, raw_value) = if kv.starts_with(['"', '`']) {
        let (key, len) = unquote_prefix(kv)?;
        (key, kv[len..].strip_prefix('=')?)
    } else {
        let (key, value) = kv.split_once('=')?;
        (key.to_owned(), value)
    };
    if key.is_empty() {
        return None;
    }
    let value = if raw_value.starts_with(['"', '`']) {
        match unquote_prefix(raw_value) {
            Some((v, len)) if len == raw_value.len() => v,
            _ => raw_value.to_owned(),
        }
    } else {
        raw_value.to_owned()
    };
    Some((key, value))
}

/// Unquotes the Go string literal at the start of `s` (`strconv.QuotedPrefix` then
/// `strconv.Unquote`): the value and the number of bytes the literal spans.
pub(crate) fn unquote_prefix(s: &str) -> Option<(String, usize)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    if quote == '`' {
        let end = s[1..].find('`')? + 1;
        return Some((s[1..end].replace('\r', ""), end + 1));
    }
    if quote != '"' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\n' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let digits = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v = 0u32;
                        for _ in 0..digits {
                            v = v * 16 + chars.next()?.1.to_digit(16)?;
                        }
                        // `\x` escapes are bytes; in build settings they only appear for
                        // invalid UTF-8, which we can only show as a replacement.
                        out.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            v = v * 8 + chars.next()?.1.to_digit(8)?;
                        }
                        out.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// Finds the 16-byte-aligned magic in `data`, a loaded segment starting at `vaddr`:
/// the offset of the blob in `data`.
pub(crate) fn find_magic(data: &[u8], vaddr: u64) -> Option<usize> {
    // Alignment is of the virtual address; segments are page-aligned in both address and
    // file offset, so the offset within `data` has the same residue.
    let first = usize::try_from(vaddr.wrapping_neg() % ALIGN as u64).ok()?;
    (first..data.len())
        .step_by(ALIGN)
        .find(|&i| data[i..].starts_with(MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPointers;
    impl PointerReader for NoPointers {
        fn bytes_at(&self, _: u64, _: usize) -> Option<&[u8]> {
            None
        }
    }

    fn decode_at0(blob: &[u8], reader: &dyn PointerReader) -> Result<BuildInfo, String> {
        decode(blob, 0, reader)
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn inline_blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(FLAGS_VERSION_INLINE);
        b.resize(HEADER_SIZE, 0);
        varint(version.len(), &mut b);
        b.extend_from_slice(version.as_bytes());
        varint(modinfo.len(), &mut b);
        b.extend_from_slice(modinfo);
        b
    }

    /// Wraps module lines in 16-byte sentinels like cmd/go's `modload.ModInfoData`.
    fn wrap(modinfo: &str) -> Vec<u8> {
        let mut out = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        out.extend_from_slice(modinfo.as_bytes());
        out.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        out
    }

    #[test]
    fn uvarint_decodes_go_encoding() {
        assert_eq!(uvarint(&[0]), Some((0, 1)));
        assert_eq!(uvarint(&[0x7f]), Some((127, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None, "truncated");
        assert_eq!(uvarint(&[]), None);
        assert_eq!(uvarint(&[0xff; 11]), None, "overlong");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
    }

    #[test]
    fn varint_strings() {
        assert_eq!(
            varint_string(b"\x03abcdef"),
            Some((&b"abc"[..], &b"def"[..]))
        );
        assert_eq!(varint_string(b"\x09abc"), None, "longer than the data");
        let mut long = Vec::new();
        varint(300, &mut long);
        long.extend(std::iter::repeat_n(b'x', 300));
        assert_eq!(
            varint_string(&long).map(|(s, r)| (s.len(), r.len())),
            Some((300, 0))
        );
    }

    #[test]
    fn go_versions() {
        let v = |s| GoVersion::parse(s);
        assert_eq!(v("go1.22.10"), Some(GoVersion::new(1, 22, 10)));
        assert_eq!(v("go1.20"), Some(GoVersion::new(1, 20, 0)));
        assert_eq!(v("go1.21rc2"), Some(GoVersion::new(1, 21, 0)));
        assert_eq!(v("go1.23.0 X:boringcrypto"), Some(GoVersion::new(1, 23, 0)));
        assert_eq!(
            v("devel go1.24-1a2b3c4 Tue Jan 1 00:00:00 2025 +0000"),
            Some(GoVersion::new(1, 24, 0))
        );
        assert_eq!(v("go1."), None);
        assert_eq!(v("go"), None);
        assert_eq!(v(""), None);
        assert_eq!(v("go1.99999999999999999999"), None);
        assert_eq!(GoVersion::new(1, 22, 10).to_string(), "go1.22.10");
        assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 21, 0));
        assert!(GoVersion::new(1, 21, 13) < GoVersion::new(1, 22, 0));
    }

    #[test]
    fn inline_format() {
        let modinfo = wrap(
            "path\texample.com/waiter\n\
             mod\texample.com/waiter\t(devel)\t\n\
             dep\tgolang.org/x/net\tv0.1.0\th1:abc=\n\
             =>\t../net\t(devel)\t\n\
             build\t-buildmode=exe\n\
             build\t-ldflags=\"-s -w\"\n\
             build\t\"we ird\"=`raw`\n\
             build\tCGO_ENABLED=0\n",
        );
        let info = decode_at0(&inline_blob("go1.22.10", &modinfo), &NoPointers).unwrap();
        assert_eq!(info.go_version, GoVersion::new(1, 22, 10));
        assert_eq!(info.go_version_raw, "go1.22.10");
        assert_eq!(info.path.as_deref(), Some("example.com/waiter"));
        let main = info.main_module.as_ref().unwrap();
        assert_eq!(
            (main.path.as_str(), main.version.as_str()),
            ("example.com/waiter", "(devel)")
        );
        assert_eq!(info.deps.len(), 1);
        assert_eq!(info.deps[0].path, "golang.org/x/net");
        assert_eq!(info.deps[0].replace.as_ref().unwrap().path, "../net");
        assert_eq!(info.setting("-ldflags"), Some("-s -w"));
        assert_eq!(info.setting("we ird"), Some("raw"));
        assert_eq!(info.setting("CGO_ENABLED"), Some("0"));
    }

    #[test]
    fn missing_or_bad_modinfo_is_tolerated() {
        let info = decode_at0(&inline_blob("go1.21.13", b""), &NoPointers).unwrap();
        assert_eq!(info.main_module, None);
        let info = decode_at0(
            &inline_blob("go1.21.13", &wrap("garbage\tline\n")),
            &NoPointers,
        );
        assert!(info.unwrap().deps.is_empty());
    }

    #[test]
    fn bad_blobs_are_errors() {
        assert!(decode_at0(b"", &NoPointers).is_err());
        assert!(decode_at0(&MAGIC[..10], &NoPointers).is_err());
        assert!(decode_at0(&inline_blob("", b""), &NoPointers).is_err());
        assert!(decode_at0(&inline_blob("gcc", b""), &NoPointers).is_err());
        let mut truncated = inline_blob("go1.22.10", b"");
        truncated.truncate(HEADER_SIZE + 4);
        assert!(decode_at0(&truncated, &NoPointers).is_err());
        // Old pointer format whose pointers lead nowhere.
        let mut old = MAGIC.to_vec();
        old.extend([8, 0]);
        old.resize(HEADER_SIZE, 0xaa);
        assert!(decode_at0(&old, &NoPointers).is_err());
    }

    #[test]
    fn pointer_format() {
        // Memory from 0x1000: string headers at 0x1000 and 0x1010, the version at 0x1020,
        // the blob at 0x1100 whose header points at the string headers.
        struct Mem(Vec<u8>);
        impl PointerReader for Mem {
            fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
                let start = usize::try_from(vaddr.checked_sub(0x1000)?).ok()?;
                self.0.get(start..start.checked_add(len)?)
            }
        }
        let version = b"go1.17.13";
        let mut mem = Vec::new();
        mem.extend(0x1020u64.to_le_bytes());
        mem.extend((version.len() as u64).to_le_bytes());
        mem.extend(0u64.to_le_bytes());
        mem.extend(0u64.to_le_bytes());
        mem.extend_from_slice(version);
        mem.resize(0x100, 0);
        let mut blob = MAGIC.to_vec();
        blob.extend([8, 0]);
        blob.extend(0x1000u64.to_le_bytes());
        blob.extend(0x1010u64.to_le_bytes());
        mem.extend_from_slice(&blob);
        let info = decode(&blob, 0x1100, &Mem(mem)).unwrap();
        assert_eq!(info.go_version_raw, "go1.17.13");
        assert_eq!(info.main_module, None);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(unquote_prefix("\"a b\"=x"), Some(("a b".into(), 5)));
        assert_eq!(
            unquote_prefix(r#""\t\x41\u00e9\101\"""#),
            Some(("\tAéA\"".into(), 20))
        );
        assert_eq!(unquote_prefix("`raw\\n`"), Some(("raw\\n".into(), 7)));
        assert_eq!(unquote_prefix("\"unterminated"), None);
        assert_eq!(unquote_prefix("\"bad \\q\""), None);
        assert_eq!(unquote_prefix("\"\\x4\""), None);
        assert_eq!(unquote_prefix(""), None);
    }

    #[test]
    fn magic_is_found_only_aligned() {
        let mut seg = vec![0u8; 64];
        seg[8..8 + MAGIC.len()].copy_from_slice(MAGIC);
        assert_eq!(find_magic(&seg, 0x1000), None);
        seg[32..32 + MAGIC.len()].copy_from_slice(MAGIC);
        assert_eq!(find_magic(&seg, 0x1000), Some(32));
        assert_eq!(find_magic(&seg, 0x1008), Some(8));
        assert_eq!(find_magic(&[], 0x1000), None);
    }
}
