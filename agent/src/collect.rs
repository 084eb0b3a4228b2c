//! Moves what the kernel side measured to the aggregator, and nothing more: drains the event
//! ring buffer on a short timer (the probes submit without waking anyone), reads the kernel's
//! drop and activity counters and the set of goroutines parked right now, and pushes it all
//! into a bounded channel. What does not fit is counted, never waited for.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_common::{DropCause, Stat, http::request_kind};
use tokio::sync::mpsc;

use crate::probes::{
    KernelMaps,
    gc::{self, GcProbeEvent},
    http::{self, RequestProbeEvent},
    lifecycle::{self, LifecycleEvent},
    panics::{self, PanicProbeEvent},
    sched::{self, SchedEvent},
};

/// What the collector hands to the aggregator.
#[derive(Debug)]
pub enum Event {
    Sched(SchedEvent),
    Gc(GcProbeEvent),
    Lifecycle(LifecycleEvent),
    Panic(PanicProbeEvent),
    Request(RequestProbeEvent),
    /// Totals of the kernel's per-CPU counters.
    Kernel(KernelCounters),
    /// The goroutines parked right now (the in-flight map), read at `taken_ns`.
    Parked(ParkedSnapshot),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelCounters {
    /// By [`DropCause`] slot, summed over the probe families.
    pub drops: [u64; DropCause::COUNT as usize],
    /// By [`Stat`] slot.
    pub stats: [u64; Stat::COUNT as usize],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedGoroutine {
    pub pid: u32,
    pub goid: u64,
    pub g: u64,
    pub reason: u8,
    pub park_ns: u64,
}

#[derive(Debug, Default)]
pub struct ParkedSnapshot {
    pub taken_ns: u64,
    pub goroutines: Vec<ParkedGoroutine>,
}

pub type Batch = Vec<Event>;

/// Events the agent itself could not pass on.
#[derive(Debug, Default)]
pub struct AgentDrops {
    /// The aggregator fell behind.
    pub channel_full: AtomicU64,
    /// `--events` lines that could not be written.
    events: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl AgentDrops {
    pub fn set_events_dropped(&self, counter: Arc<AtomicU64>) {
        let _ = self.events.set(counter);
    }

    pub fn events_dropped(&self) -> u64 {
        self.events.get().map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

pub struct Collector {
    maps: KernelMaps,
    tx: mpsc::Sender<Batch>,
    drops: Arc<AgentDrops>,
    drain_interval: Duration,
    snapshot_every: u32,
    last_counters: KernelCounters,
}

impl Collector {
    pub fn new(
        maps: KernelMaps,
        tx: mpsc::Sender<Batch>,
        drops: Arc<AgentDrops>,
        drain_interval: Duration,
        snapshot_interval: Duration,
    ) -> Collector {
        let drain_interval = drain_interval.max(Duration::from_millis(1));
        let snapshot_every = (snapshot_interval.as_nanos() / drain_interval.as_nanos())
            .clamp(1, u32::MAX as u128) as u32;
        Collector {
            maps,
            tx,
            drops,
            drain_interval,
            snapshot_every,
            last_counters: KernelCounters::default(),
        }
    }

    /// Runs until the aggregator goes away.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            tick.tick().await;
            let mut batch = self.drain();
            // The counters are cheap to read (a few syscalls) and drops must show at once.
            let counters = self.kernel_counters();
            if counters != self.last_counters {
                self.last_counters = counters.clone();
                batch.push(Event::Kernel(counters));
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(self.snapshot_every) {
                batch.push(Event::Parked(self.parked_snapshot()));
            }
            if batch.is_empty() {
                continue;
            }
            match self.tx.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    let lost = batch
                        .iter()
                        .filter(|e| !matches!(e, Event::Kernel(_) | Event::Parked(_)))
                        .count();
                    self.drops
                        .channel_full
                        .fetch_add(lost as u64, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }

    /// Takes everything the ring buffers hold now.
    fn drain(&mut self) -> Batch {
        let mut batch = Vec::new();
        while let Some(record) = self.maps.sched_events.next() {
            // The request probes share this ring buffer; the first byte tells them apart.
            let is_request = matches!(record.first(), Some(&k) if k == request_kind::START || k == request_kind::END);
            if is_request {
                if let Some(e) = http::decode(&record) {
                    batch.push(Event::Request(e));
                }
            } else if let Some(e) = sched::decode(&record) {
                batch.push(Event::Sched(e));
            }
        }
        while let Some(record) = self.maps.gc_events.next() {
            if let Some(e) = gc::decode(&record) {
                batch.push(Event::Gc(e));
            }
        }
        while let Some(record) = self.maps.panic_events.next() {
            if let Some(e) = panics::decode(&record) {
                batch.push(Event::Panic(e));
            }
        }
        // After the parks: a goroutine's last resume comes before its exit.
        while let Some(record) = self.maps.lifecycle_events.next() {
            if let Some(e) = lifecycle::decode(&record) {
                batch.push(Event::Lifecycle(e));
            }
        }
        batch
    }

    fn kernel_counters(&self) -> KernelCounters {
        let sum = |array: &aya::maps::PerCpuArray<aya::maps::MapData, u64>, i: u32| {
            array
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        let mut c = KernelCounters::default();
        for (i, slot) in c.drops.iter_mut().enumerate() {
            *slot = self.maps.drops.iter().map(|d| sum(d, i as u32)).sum();
        }
        for (i, slot) in c.stats.iter_mut().enumerate() {
            *slot = sum(&self.maps.stats, i as u32);
        }
        c
    }

    /// Reads the in-flight map, removing entries of processes that are gone.
    fn parked_snapshot(&mut self) -> ParkedSnapshot {
        let taken_ns = monotonic_ns();
        let mut goroutines = Vec::new();
        let mut dead = Vec::new();
        let mut alive: HashSet<u32> = HashSet::new();
        let mut gone: HashSet<u32> = HashSet::new();
        for entry in self.maps.parked.iter() {
            let Ok((key, parked)) = entry else { continue };
            let is_alive = if alive.contains(&key.pid) {
                true
            } else if gone.contains(&key.pid) {
                false
            } else if Path::new(&format!("/proc/{}", key.pid)).exists() {
                alive.insert(key.pid);
                true
            } else {
                gone.insert(key.pid);
                false
            };
            if !is_alive {
                dead.push(key);
                continue;
            }
            goroutines.push(ParkedGoroutine {
                pid: key.pid,
                goid: parked.goid,
                g: key.g,
                reason: parked.reason,
                park_ns: parked.park_ns,
            });
        }
        for key in dead {
            let _ = self.maps.parked.remove(&key);
        }
        ParkedSnapshot {
            taken_ns,
            goroutines,
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
