//! Blocking as a pprof block profile: gzipped `profile.proto` (github.com/google/pprof,
//! proto/profile.proto), in the shape of Go's own `/debug/pprof/block` — sample types
//! `contentions/count` and `delay/nanoseconds`, one sample per stack — plus a `reason` label
//! on each sample (`go tool pprof -tagfocus reason=...`). Symbolized by gort, so pprof needs
//! neither the binary nor its symbols.

use std::{collections::HashMap, io::Write};

use crate::aggregate::{
    profile::{Contention, StackKey},
    symbols::Frame,
};

/// The messages of profile.proto that a block profile uses (field numbers as there).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

pub use proto::Profile;

/// The pseudo-function of blocks that have no stack (shorter than the capture threshold).
pub const NO_STACK: &str = "gort: block shorter than --frame-min-block, stack not captured";

/// What a profile is about.
pub struct ProfileMeta<'a> {
    /// The executable's path (the mapping's file name).
    pub exe: &'a str,
    /// Start of the window (Unix ns) and its length.
    pub time_unix_ns: u64,
    pub duration_ns: u64,
    pub comments: Vec<String>,
}

#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    locations: HashMap<u64, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        if let Some(&id) = self.functions.get(&(name.to_string(), file.to_string())) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let (name_i, file_i) = (self.string(name), self.string(file));
        self.profile.function.push(proto::Function {
            id,
            name: name_i,
            system_name: name_i,
            filename: file_i,
            start_line: 0,
        });
        self.functions
            .insert((name.to_string(), file.to_string()), id);
        id
    }

    /// The location of return address `pc` (0: the pseudo-location of blocks without stack).
    fn location(&mut self, pc: u64, symbolize: &dyn Fn(u64) -> Vec<Frame>) -> u64 {
        if let Some(&id) = self.locations.get(&pc) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let frames = if pc == 0 {
            vec![Frame {
                function: NO_STACK.into(),
                file: String::new(),
                line: 0,
            }]
        } else {
            symbolize(pc)
        };
        let line = frames
            .iter()
            .map(|f| proto::Line {
                function_id: self.function(&f.function, &f.file),
                line: i64::from(f.line),
            })
            .collect();
        self.profile.location.push(proto::Location {
            id,
            mapping_id: if pc == 0 { 0 } else { 1 },
            address: pc,
            line,
        });
        self.locations.insert(pc, id);
        id
    }
}

/// Builds the profile of `stacks`. `symbolize` turns a return address into its calls,
/// innermost first (inlined calls, then the function holding the code); `reason` names a raw
/// wait reason. With `runtime_only` false, stacks entirely inside the runtime (its own
/// goroutines' parks: GC workers, the scavenger...) are left out, as Go's profile has none.
pub fn build(
    stacks: &HashMap<StackKey, Contention>,
    symbolize: &dyn Fn(u64) -> Vec<Frame>,
    reason: &dyn Fn(u8) -> String,
    runtime_only: bool,
    meta: &ProfileMeta,
) -> Profile {
    let mut b = Builder::default();
    b.string("");
    let value_type = |b: &mut Builder, t: &str, u: &str| proto::ValueType {
        r#type: b.string(t),
        unit: b.string(u),
    };
    b.profile.sample_type = vec![
        value_type(&mut b, "contentions", "count"),
        value_type(&mut b, "delay", "nanoseconds"),
    ];
    b.profile.period_type = Some(value_type(&mut b, "contentions", "count"));
    b.profile.period = 1;
    b.profile.time_nanos = meta.time_unix_ns as i64;
    b.profile.duration_nanos = meta.duration_ns as i64;
    b.profile.comment = meta.comments.iter().map(|c| b.string(c)).collect();
    let exe = b.string(meta.exe);

    // Largest first: a stable order for readers of -raw.
    let mut entries: Vec<(&StackKey, &Contention)> = stacks.iter().collect();
    entries.sort_by(|a, b| {
        b.1.delay_ns
            .cmp(&a.1.delay_ns)
            .then_with(|| a.0.reason.cmp(&b.0.reason))
            .then_with(|| a.0.frames.cmp(&b.0.frames))
    });
    let reason_key = b.string("reason");
    let (mut lowest, mut highest) = (u64::MAX, 0);
    for (key, c) in entries {
        let location_id: Vec<u64> = if key.frames.is_empty() {
            vec![b.location(0, symbolize)]
        } else {
            key.frames
                .iter()
                .map(|&pc| b.location(pc, symbolize))
                .collect()
        };
        for &pc in key.frames.iter() {
            lowest = lowest.min(pc);
            highest = highest.max(pc);
        }
        if !runtime_only && !key.frames.is_empty() {
            let all_runtime = location_id.iter().all(|&id| {
                b.profile.location[id as usize - 1].line.iter().all(|l| {
                    let name = &b.profile.string_table
                        [b.profile.function[l.function_id as usize - 1].name as usize];
                    name.starts_with("runtime.")
                })
            });
            if all_runtime {
                continue;
            }
        }
        let label = vec![proto::Label {
            key: reason_key,
            str: b.string(&reason(key.reason)),
            ..Default::default()
        }];
        b.profile.sample.push(proto::Sample {
            location_id,
            value: vec![c.count as i64, c.delay_ns as i64],
            label,
        });
    }
    b.profile.mapping = vec![proto::Mapping {
        id: 1,
        memory_start: if highest == 0 { 0 } else { lowest },
        memory_limit: highest + 1,
        file_offset: 0,
        filename: exe,
        build_id: 0,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    }];
    b.profile
}

/// The profile as `go tool pprof` reads it: gzipped protobuf.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&prost::Message::encode_to_vec(profile))
        .expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: "/src/main.go".into(),
            line,
        }
    }

    #[test]
    fn a_block_profile_in_go_shape() {
        let mut stacks = HashMap::new();
        let key = |reason, frames: &[u64]| StackKey {
            reason,
            frames: frames.into(),
        };
        stacks.insert(
            key(14, &[0x10, 0x20]),
            Contention {
                count: 3,
                delay_ns: 60_000_000,
            },
        );
        stacks.insert(
            key(14, &[]),
            Contention {
                count: 7,
                delay_ns: 700,
            },
        );
        // A runtime goroutine's park: left out unless asked for.
        stacks.insert(
            key(20, &[0x30]),
            Contention {
                count: 1,
                delay_ns: 5,
            },
        );
        let symbolize = |pc: u64| match pc {
            // An inlined call: innermost first.
            0x10 => vec![frame("runtime.chanrecv1", 10)],
            0x20 => vec![frame("main.inner", 31), frame("main.handler", 40)],
            _ => vec![frame("runtime.gcBgMarkWorker", 1)],
        };
        let reason = |r: u8| {
            if r == 14 {
                "chan receive"
            } else {
                "GC worker (idle)"
            }
            .to_string()
        };
        let meta = ProfileMeta {
            exe: "/srv/app",
            time_unix_ns: 1,
            duration_ns: 30_000_000_000,
            comments: vec![],
        };
        let gz = encode(&build(&stacks, &symbolize, &reason, false, &meta));
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(
            p.sample_type
                .iter()
                .map(|t| (s(t.r#type), s(t.unit)))
                .collect::<Vec<_>>(),
            [("contentions", "count"), ("delay", "nanoseconds")]
        );
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, [3, 60_000_000]);
        assert_eq!(s(p.sample[0].label[0].str), "chan receive");
        let loc = |id: u64| &p.location[id as usize - 1];
        let names: Vec<&str> = p.sample[0]
            .location_id
            .iter()
            .flat_map(|&id| loc(id).line.iter())
            .map(|l| s(p.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["runtime.chanrecv1", "main.inner", "main.handler"]);
        assert_eq!(p.sample[1].value, [7, 700]);
        assert_eq!(
            s(p.function[loc(p.sample[1].location_id[0]).line[0].function_id as usize - 1].name),
            NO_STACK
        );
        assert_eq!(p.duration_nanos, 30_000_000_000);

        let all = build(&stacks, &symbolize, &reason, true, &meta);
        assert_eq!(all.sample.len(), 3);
    }
}
