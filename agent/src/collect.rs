//! Moves what the kernel side measured to the aggregator, and nothing more: drains the event
//! ring buffer on a short timer (the probes submit without waking anyone), reads the kernel's
//! drop and activity counters and the set of goroutines parked right now, and pushes it all
//! into a bounded channel. What does not fit is counted, never waited for.
//!
//! The rings are read one after another, so one read in a pass can hold an event whose cause,
//! in another ring, was written after that ring's read: a recovered panic without the request
//! it happened in, a goroutine's exit before its last resume. So each pass passes on, in time
//! order, only what was written before the pass began (less a margin for events being
//! written then); the rest waits for the next pass, which reads every ring past it
//! ([`InOrder`]). Process changes (exec, exit) go in that order too, so the aggregator can
//! split a pass at an exec's time.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::{DropCause, Stat, http::request_kind};
use tokio::sync::{Notify, mpsc};

use crate::probes::{
    Family, KernelMaps,
    gc::{self, GcProbeEvent},
    http::{self, RequestProbeEvent},
    lifecycle::{self, LifecycleEvent},
    panics::{self, PanicProbeEvent},
    procs::{ProcessChange, ProcessWatch},
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
    /// A process started a new program or exited.
    Process(ProcessChange),
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

impl Event {
    /// When the probe wrote this event (CLOCK_MONOTONIC ns): the order the aggregator wants.
    fn written_ns(&self) -> u64 {
        match self {
            Event::Sched(SchedEvent::Block { resume_ns, .. })
            | Event::Sched(SchedEvent::ResumeUnmatched { resume_ns, .. }) => *resume_ns,
            // Written at startTheWorldWithSema's RET, the pause's end.
            Event::Gc(GcProbeEvent::Pause { start_ns, .. }) => *start_ns,
            Event::Gc(GcProbeEvent::Cycle { at_ns, .. }) => *at_ns,
            Event::Lifecycle(e) => e.ns,
            Event::Panic(e) => e.ns,
            Event::Request(e) => e.ns,
            Event::Process(ProcessChange::Exec { ns, .. } | ProcessChange::Exit { ns, .. }) => *ns,
            Event::Parked(s) => s.taken_ns,
            Event::Kernel(_) => 0,
        }
    }

    /// How many uprobe hits produced this event.
    fn probe_hits(&self) -> u64 {
        match self {
            // gopark's entry and its RET.
            Event::Sched(SchedEvent::Block { .. }) => 2,
            Event::Sched(SchedEvent::ResumeUnmatched { .. }) => 1,
            // Where the pause begins (startTheWorldWithSema's entry; stopTheWorldWithSema's
            // in Go 1.21) and startTheWorldWithSema's RET.
            Event::Gc(GcProbeEvent::Pause { .. }) => 2,
            Event::Gc(GcProbeEvent::Cycle { .. })
            | Event::Lifecycle(_)
            | Event::Panic(_)
            | Event::Request(_) => 1,
            Event::Kernel(_) | Event::Parked(_) | Event::Process(_) => 0,
        }
    }

    /// The probe family that wrote this event, if a probe did.
    fn family(&self) -> Option<Family> {
        match self {
            Event::Sched(_) => Some(Family::Sched),
            Event::Gc(_) => Some(Family::Gc),
            Event::Lifecycle(_) => Some(Family::Lifecycle),
            Event::Panic(_) => Some(Family::Panics),
            Event::Request(_) => Some(Family::Http),
            Event::Kernel(_) | Event::Parked(_) | Event::Process(_) => None,
        }
    }

    /// The hits of [`Event::probe_hits`] that came from probes left in while the sampled ones
    /// are out (`--overhead-budget`).
    fn resident_hits(&self) -> u64 {
        match self.family() {
            Some(family) if !family.sampled() => self.probe_hits(),
            _ => 0,
        }
    }
}

/// Events the agent itself could not pass on.
#[derive(Debug, Default)]
pub struct AgentDrops {
    /// The aggregator fell behind.
    pub channel_full: AtomicU64,
    /// Process changes the run loop fell behind on (a rescan catches up).
    pub process_changes_missed: AtomicU64,
    /// Probe hits the drained events stand for (`--overhead-budget` costs them).
    pub probe_hits: AtomicU64,
    /// Of those, the hits of the probes that stay in under sampling.
    pub resident_hits: AtomicU64,
    /// `--events` lines that could not be written.
    events: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl AgentDrops {
    pub fn set_events_dropped(&self, counter: Arc<AtomicU64>) {
        let _ = self.events.set(counter);
    }

    pub fn probe_hits(&self) -> u64 {
        self.probe_hits.load(Ordering::SeqCst)
    }

    pub fn resident_hits(&self) -> u64 {
        self.resident_hits.load(Ordering::SeqCst)
    }

    pub fn events_dropped(&self) -> u64 {
        self.events.get().map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// How often the collector drains. Every `--drain-interval` while the probes stream events;
/// while time sampling (`--overhead-budget`) has the hot probes out, only the rare GC and
/// panic events and process changes come in, so it drains at a slower pace, woken at once
/// when the probes are back: each wakeup takes a CPU from targets that may have none to
/// spare (README, *An overhead budget*).
#[derive(Debug)]
pub struct DrainPace {
    interval: Duration,
    quiet_interval: Duration,
    quiet: AtomicBool,
    resumed: Notify,
}

impl DrainPace {
    /// Drains every `interval`, and every `quiet_interval` (at least `interval`) while quiet.
    pub fn new(interval: Duration, quiet_interval: Duration) -> DrainPace {
        let interval = interval.max(Duration::from_millis(1));
        DrainPace {
            interval,
            quiet_interval: quiet_interval.max(interval),
            quiet: AtomicBool::new(false),
            resumed: Notify::new(),
        }
    }

    /// The hot probes are out (`true`) or back (`false`: drain at the usual pace, from now).
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
        if !quiet {
            self.resumed.notify_one();
        }
    }

    fn interval(&self) -> Duration {
        if self.quiet.load(Ordering::Relaxed) {
            self.quiet_interval
        } else {
            self.interval
        }
    }

    /// Until the next drain is due: the interval of the moment, cut short by the probes'
    /// return.
    async fn wait(&self) {
        tokio::select! {
            _ = tokio::time::sleep(self.interval()) => {}
            _ = self.resumed.notified() => {}
        }
    }
}

pub struct Collector {
    maps: KernelMaps,
    tx: mpsc::Sender<Batch>,
    drops: Arc<AgentDrops>,
    pace: Arc<DrainPace>,
    snapshot_interval: Duration,
    last_snapshot: Instant,
    last_counters: KernelCounters,
    /// The exec and exit tracepoints, and who else wants to hear of them (`--all` attaches).
    process_watch: Option<(ProcessWatch, mpsc::Sender<ProcessChange>)>,
    /// Execs since the last parked snapshot: parks recorded before them are the old program's.
    execs_since_snapshot: HashMap<u32, u64>,
    /// Process changes of a batch the aggregator had no room for.
    carried: Vec<Event>,
    in_order: InOrder,
}

/// Bound of [`Collector::carried`].
const MAX_CARRIED_CHANGES: usize = 65_536;

/// How long before a pass began an event may have been timed and still not be in its ring when
/// the pass read it: a probe reads the clock first and submits last (microseconds, unless the
/// thread is preempted in between).
const WRITING_MARGIN_NS: u64 = 2_000_000;

/// Puts the events of successive passes over the rings in time order: a pass releases what
/// was written before `watermark_ns` (every ring was read after that, so nothing earlier is
/// missing), sorted by time, and holds the rest for the next one.
#[derive(Debug, Default)]
pub struct InOrder {
    held: Vec<Event>,
}

impl InOrder {
    /// `drained`: what a pass that began after `watermark_ns` read, ring after ring.
    pub fn release(&mut self, drained: Vec<Event>, watermark_ns: u64) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.held);
        events.extend(drained);
        // Stable: events of one ring written at the same nanosecond keep the ring's order.
        events.sort_by_key(Event::written_ns);
        let ready = events.partition_point(|e| e.written_ns() < watermark_ns);
        self.held = events.split_off(ready);
        events
    }
}

impl Collector {
    pub fn new(
        maps: KernelMaps,
        tx: mpsc::Sender<Batch>,
        drops: Arc<AgentDrops>,
        pace: Arc<DrainPace>,
        snapshot_interval: Duration,
    ) -> Collector {
        Collector {
            maps,
            tx,
            drops,
            pace,
            snapshot_interval,
            last_snapshot: Instant::now(),
            last_counters: KernelCounters::default(),
            process_watch: None,
            execs_since_snapshot: HashMap::new(),
            carried: Vec::new(),
            in_order: InOrder::default(),
        }
    }

    /// Also passes on exec and exit events: to the aggregator in the batches, and to
    /// `changes` (bounded; what does not fit is counted).
    pub fn with_process_watch(
        mut self,
        watch: ProcessWatch,
        changes: mpsc::Sender<ProcessChange>,
    ) -> Collector {
        self.process_watch = Some((watch, changes));
        self
    }

    /// Runs until the aggregator goes away.
    pub async fn run(mut self) {
        loop {
            self.pace.wait().await;
            let drained = self.drain();
            let changes: Vec<ProcessChange> = drained
                .iter()
                .filter_map(|e| match e {
                    Event::Process(change) => Some(*change),
                    _ => None,
                })
                .collect();
            let mut batch = std::mem::take(&mut self.carried);
            batch.extend(drained);
            let hits: u64 = batch.iter().map(Event::probe_hits).sum();
            let resident: u64 = batch.iter().map(Event::resident_hits).sum();
            // All hits first, the resident after: a reader that reads the resident first
            // never sees resident hits whose batch is missing from all hits.
            self.drops.probe_hits.fetch_add(hits, Ordering::SeqCst);
            self.drops
                .resident_hits
                .fetch_add(resident, Ordering::SeqCst);
            // The counters are cheap to read (a few syscalls) and drops must show at once.
            let counters = self.kernel_counters();
            if counters != self.last_counters {
                self.last_counters = counters.clone();
                batch.push(Event::Kernel(counters));
            }
            if self.last_snapshot.elapsed() >= self.snapshot_interval {
                self.last_snapshot = Instant::now();
                batch.push(Event::Parked(self.parked_snapshot()));
            }
            if !batch.is_empty() && !self.send(batch) {
                return;
            }
            // After the batch: what the run loop does on an exec (attach to the new program)
            // reaches the aggregator after the exec itself.
            self.pass_on(&changes);
        }
    }

    /// Hands `batch` to the aggregator; false once it is gone.
    fn send(&mut self, batch: Batch) -> bool {
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(batch)) => {
                // Process changes keep identities apart: they wait for the next batch.
                let (changes, rest): (Vec<Event>, Vec<Event>) = batch
                    .into_iter()
                    .partition(|e| matches!(e, Event::Process(_)));
                let lost = rest
                    .iter()
                    .filter(|e| !matches!(e, Event::Kernel(_) | Event::Parked(_)))
                    .count();
                let kept = changes.len().min(MAX_CARRIED_CHANGES);
                self.drops
                    .channel_full
                    .fetch_add((lost + changes.len() - kept) as u64, Ordering::Relaxed);
                self.carried = changes;
                self.carried.truncate(kept);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Tells whoever follows processes (`with_process_watch`) of `changes`.
    fn pass_on(&self, changes: &[ProcessChange]) {
        let Some((_, tx)) = &self.process_watch else {
            return;
        };
        for &change in changes {
            if tx.try_send(change).is_err() {
                self.drops
                    .process_changes_missed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes everything the ring buffers hold now; passes on, in time order, what was written
    /// before it began.
    fn drain(&mut self) -> Batch {
        let watermark_ns = monotonic_ns().saturating_sub(WRITING_MARGIN_NS);
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
        while let Some(record) = self.maps.lifecycle_events.next() {
            if let Some(e) = lifecycle::decode(&record) {
                batch.push(Event::Lifecycle(e));
            }
        }
        if let Some((watch, _)) = &mut self.process_watch {
            for change in watch.drain() {
                if let ProcessChange::Exec { pid, ns } = change {
                    self.execs_since_snapshot.insert(pid, ns);
                }
                batch.push(Event::Process(change));
            }
        }
        self.in_order.release(batch, watermark_ns)
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
            // The goroutine of a program that exec'd: it never resumes.
            let replaced = self
                .execs_since_snapshot
                .get(&key.pid)
                .is_some_and(|&exec_ns| parked.park_ns < exec_ns);
            let is_alive = if replaced {
                false
            } else if alive.contains(&key.pid) {
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
        self.execs_since_snapshot.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::panics::PanicEventKind;

    fn request(start: bool, goid: u64, ns: u64) -> Event {
        Event::Request(RequestProbeEvent {
            start,
            binary: 0,
            pid: 7,
            goid,
            g: 0,
            ns,
            traceparent: None,
            headers_truncated: false,
            method: Vec::new(),
            pattern: None,
        })
    }

    fn panic(goid: u64, ns: u64) -> Event {
        Event::Panic(PanicProbeEvent {
            kind: PanicEventKind::Panic,
            binary: 0,
            pid: 7,
            goid,
            ns,
            value_type: 0,
            value_data: 0,
            value_words: [0; 4],
            message: Vec::new(),
            frames: Vec::new(),
        })
    }

    fn lifecycle(created: bool, goid: u64, ns: u64) -> Event {
        Event::Lifecycle(LifecycleEvent {
            created,
            binary: 0,
            pid: 7,
            goid,
            g: 0,
            gopc: 0,
            startpc: 0,
            ns,
        })
    }

    fn times(events: &[Event]) -> Vec<u64> {
        events.iter().map(Event::written_ns).collect()
    }

    #[test]
    fn a_cause_read_in_a_later_pass_than_its_effect_comes_first() {
        let mut in_order = InOrder::default();
        // A pass began at 1,000: it read the scheduler's ring before the request began
        // (1,010), the panics' ring after the handler panicked (1,020).
        assert!(in_order.release(vec![panic(5, 1_020)], 1_000).is_empty());
        // The next pass reads the request's start: the panic follows it.
        let next = in_order.release(vec![request(true, 5, 1_010)], 2_000);
        assert!(matches!(
            next[0],
            Event::Request(RequestProbeEvent { start: true, .. })
        ));
        assert!(matches!(next[1], Event::Panic(_)));
    }

    #[test]
    fn a_pass_releases_what_was_written_before_it_in_time_order_and_holds_the_rest() {
        let mut in_order = InOrder::default();
        let drained = vec![
            lifecycle(true, 1, 300),
            request(true, 2, 100),
            lifecycle(false, 2, 500),
            Event::Process(ProcessChange::Exec { pid: 7, ns: 200 }),
        ];
        let released = in_order.release(drained, 400);
        assert_eq!(times(&released), [100, 200, 300]);
        // The exit waits; nothing is lost, and what comes later is after it.
        assert_eq!(
            times(&in_order.release(vec![lifecycle(true, 3, 600)], 550)),
            [500]
        );
        assert_eq!(times(&in_order.release(Vec::new(), 10_000)), [600]);
        assert!(in_order.release(Vec::new(), 20_000).is_empty());
    }

    #[tokio::test]
    async fn drains_slowly_while_the_probes_are_out_and_at_once_when_they_are_back() {
        let drain = Duration::from_millis(20);
        let pace = Arc::new(DrainPace::new(drain, Duration::from_secs(30)));
        assert_eq!(pace.interval(), drain);
        pace.set_quiet(true);
        assert_eq!(pace.interval(), Duration::from_secs(30));
        // A quiet interval shorter than the drain interval is the drain interval.
        let short = DrainPace::new(drain, Duration::from_millis(1));
        short.set_quiet(true);
        assert_eq!(short.interval(), drain);

        let waiting = tokio::spawn({
            let pace = pace.clone();
            async move {
                let started = Instant::now();
                pace.wait().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a quiet drain waited only 100 ms");
        pace.set_quiet(false);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the probes' return wakes the collector")
            .unwrap();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(pace.interval(), drain);
    }
}
