//! `--events FILE|-`: one JSON object per line for each event worth a record of its own
//! (a panic once it is recovered or kills the process, a fatal error). Written by a task of
//! its own through a bounded channel: a slow disk never holds up the aggregator, and what
//! does not fit is counted.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::json;
use tokio::sync::mpsc;

use crate::aggregate::panics::PanicRecord;

/// Lines that did not fit in the channel.
pub type EventsDropped = Arc<AtomicU64>;

/// The aggregator's end.
#[derive(Clone, Debug)]
pub struct EventsSender {
    tx: mpsc::Sender<String>,
    dropped: EventsDropped,
}

impl EventsSender {
    pub fn send_panic(&self, pid: u32, service: &str, record: &PanicRecord) {
        let mut v = serde_json::to_value(record).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), json!(record.kind.replace(' ', "_")));
            o.insert("pid".into(), json!(pid));
            o.insert("service".into(), json!(service));
            o.insert(
                "recovered".into(),
                json!(record.outcome == crate::aggregate::panics::Outcome::Recovered),
            );
        }
        self.send(v.to_string());
    }

    pub fn send_request(&self, record: &crate::aggregate::requests::RequestRecord) {
        if let Ok(line) = serde_json::to_string(record) {
            self.send(line);
        }
    }

    fn send(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where the lines go.
#[derive(Debug, Clone)]
pub enum EventsOutput {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for EventsOutput {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" {
            EventsOutput::Stdout
        } else {
            EventsOutput::File(s.into())
        })
    }
}

/// Opens the output and starts the writer task.
pub fn start(output: &EventsOutput) -> std::io::Result<(EventsSender, EventsDropped)> {
    let mut out: Box<dyn Write + Send> = match output {
        EventsOutput::Stdout => Box::new(std::io::stdout()),
        EventsOutput::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    let (tx, mut rx) = mpsc::channel::<String>(4096);
    let dropped: EventsDropped = Arc::default();
    let failed = dropped.clone();
    tokio::task::spawn_blocking(move || {
        while let Some(line) = rx.blocking_recv() {
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok((
        EventsSender {
            tx,
            dropped: dropped.clone(),
        },
        dropped,
    ))
}
