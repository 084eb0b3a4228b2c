//! `--overhead-budget`: keeps what gort costs the host (the targets' extra CPU under its
//! probes, and its own CPU) within a share of the host's CPU by sampling in time. It starts
//! with the probes in, checking the cost every second; once over the budget, each period
//! the probes are attached for a window at its start and taken out for the rest; what a
//! period cost is measured, not assumed, and sets the next window:
//!
//! - the target's extra CPU: its CPU time over the period less what it uses without probes,
//!   read in the quiet end of the period (taking uprobes out disturbs the target for a while
//!   after: the kernel's grace periods, up to a second with a link per uprobe; that is part
//!   of the cost, so it is left in);
//! - split into the probe hits (counted × the cost of one hit: measured at start on gort's
//!   own code, `probes::calibrate`, then in the targets themselves, from their extra CPU
//!   while the probes are in, when that is more: a hit in a busy, many-threaded target
//!   costs more than in the calibration) and a cost per attach/detach cycle (the rest);
//! - plus the hits of the probes that stay in (GC, panics), which the quiet part, the
//!   yardstick, cannot show: counted × the cost of one hit;
//! - plus gort's own CPU.
//!
//! The window follows: `ratio × full-time hit cost + resident + (cycle + gort) / period <=
//! budget`; when no window fits, the period is lengthened. The budget is a cap, not a setpoint:
//! what a period costs follows its own load and its hits' cost in a busy target, not the last
//! period's, so the plan aims below the budget by how much recent periods cost over what their
//! plans expected, the dearest one aside (`Misses`). What is reported is scaled up as an
//! estimate (`aggregate::sampling`).
//!
//! Pure: the run loop feeds it the clock and the counters and carries out its decisions.

use std::{collections::HashMap, time::Duration};

use crate::aggregate::sampling::ProbesIn;

/// The lowest ratio: below it the windows would be too short to measure anything.
pub const MIN_RATIO: f64 = 0.01;
/// How long the target is left to settle after the probes are taken out, at most, before its
/// own CPU use is read.
const SETTLE: Duration = Duration::from_millis(1500);
/// The longest period gort lengthens to.
const MAX_PERIOD: Duration = Duration::from_secs(120);
/// With the probes in all the time, how often the cost so far is checked: a load that
/// starts mid-period ends it early rather than running a whole period at full cost.
const CHECK: Duration = Duration::from_secs(1);
/// How many sampled periods' misses the plan heeds: a minute or so of 5–10 s periods.
const MISSES_KEPT: usize = 8;
/// The most the plan aims below the budget by: half of it (a few wild periods must not blind
/// gort for the periods after).
const MOST_MISS: f64 = 2.0;

/// What recent sampled periods cost over what their plans expected (measured / expected):
/// the plan aims at the budget over the second worst of them, so that periods like all but
/// the dearest of the recent ones stay within it. One wild period (a burst of load, other
/// work on the host read as the probes' cost: a period measured 23 % on a 5 % plan while a
/// compile ran beside the server) does not move the aim; two do.
#[derive(Debug, Default, Clone, Copy)]
struct Misses {
    kept: [f64; MISSES_KEPT],
    len: usize,
    next: usize,
}

impl Misses {
    fn push(&mut self, measured_over_expected: f64) {
        self.kept[self.next] = measured_over_expected.clamp(0.0, MOST_MISS);
        self.next = (self.next + 1) % MISSES_KEPT;
        self.len = (self.len + 1).min(MISSES_KEPT);
    }

    /// What the budget is divided by for the plan: the second worst miss, at least 1.
    fn second_worst(&self) -> f64 {
        let (mut worst, mut second) = (1.0, 1.0);
        for &miss in &self.kept[..self.len] {
            if miss > worst {
                (worst, second) = (miss, worst);
            } else if miss > second {
                second = miss;
            }
        }
        second
    }
}

/// What the budget is a share of (`--overhead-budget-of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BudgetOf {
    /// The host's CPU, all cores: what gort may cost the node.
    #[default]
    Host,
    /// The targets' own CPU use (read while the probes are out): how much gort may slow them.
    Targets,
}

impl BudgetOf {
    pub fn name(self) -> &'static str {
        match self {
            BudgetOf::Host => "host",
            BudgetOf::Targets => "targets",
        }
    }
}

/// What the user asked for and what was measured at start.
#[derive(Debug, Clone, Copy)]
pub struct BudgetSettings {
    /// Share of `of`'s CPU, e.g. 0.02.
    pub share: f64,
    pub of: BudgetOf,
    pub period: Duration,
    /// What one uprobe hit costs here: `probes::calibrate` at start, then as measured in the
    /// targets' windows, when more.
    pub trap_cost_ns: u64,
    /// How long removed probes go on firing (`probes::calibrate`).
    pub removal: Duration,
    pub cpus: u32,
}

impl BudgetSettings {
    /// What the budget is a share of, in CPU-seconds per second, for targets that use
    /// `targets_own` of their own.
    pub fn base(&self, targets_own: f64) -> f64 {
        match self.of {
            BudgetOf::Host => f64::from(self.cpus),
            BudgetOf::Targets => targets_own,
        }
    }

    /// The budget in CPU-seconds per second.
    fn cpu_per_s(&self, targets_own: f64) -> f64 {
        self.share * self.base(targets_own)
    }

    /// gort's own CPU, of the part the budget counts: all of it on the host's; none against
    /// the targets' (it runs beside them, not in them, and hardly shrinks with the window: an
    /// idle service's budget, a share of next to nothing, would keep its probes out for
    /// gort's own timers).
    fn counted_agent(&self, agent: f64) -> f64 {
        match self.of {
            BudgetOf::Host => agent,
            BudgetOf::Targets => 0.0,
        }
    }
}

/// A decision for the run loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch {
    /// Take the probes out until the period ends.
    Suspend,
    /// Nothing to switch; the target's CPU is read from here on as its own.
    Settled,
    /// Nothing to switch: the cost so far, with the probes in all the time, is within the
    /// budget.
    Checked,
    /// Put the probes back (a new period began).
    Resume,
    /// A new period began with the probes still in: nothing to switch.
    Stay,
}

/// The counters the sampler reads at every switch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Probe hits the drained events stand for.
    pub hits: u64,
    /// Of those, the hits of the probes that stay in while the sampled ones are out (GC,
    /// panics: `probes::Family::sampled`).
    pub resident_hits: u64,
    /// gort's own CPU time, ns.
    pub agent_cpu_ns: u64,
    /// The targets' CPU time, ns.
    pub target_cpu_ns: u64,
    /// The targets' progress: the runtime's own count of scheduling events (its
    /// scheduling-latency histogram; proportional to parks), read from memory with the
    /// probes in or out. 0 where it cannot be read.
    pub progress: u64,
}

/// Scheduling events the quiet part of a period must count for its rate to be a yardstick.
const MIN_PROGRESS_EVENTS: u64 = 200;

/// Progress the targets lost to the probes in one period, in CPU-seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LostProgress {
    in_window: f64,
    settling: f64,
}

/// What the last period cost, in CPU-seconds per second of period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// The targets' probe hits, with the probes in all the time.
    pub hits_full: f64,
    /// gort's own CPU.
    pub agent: f64,
    /// The probes that stay in (GC, panics): their hits times a hit's cost. The quiet part
    /// of the period, the targets' yardstick, runs with them, so the measures against it
    /// leave them out: they are added.
    pub resident: f64,
    /// The targets' extra CPU in the period (hits and cycle), when it could be measured.
    pub target_extra: Option<f64>,
    /// The targets' extra CPU per attach/detach cycle (CPU-seconds).
    pub cycle: f64,
    /// What gort cost in the period, of what the budget counts (`BudgetSettings::
    /// counted_agent`): the measured overhead.
    pub total: f64,
    /// What the budget was a share of (`BudgetSettings::base`), CPU-seconds per second.
    pub base: f64,
    /// `base` is known: always for the host; for the targets, their own use read while the
    /// probes were out, or inferred with them in all the time from their CPU less the hits
    /// where the hits made up at most half of it (beyond, the inference rests on the hit
    /// cost: 10 % off in it made a share of 187 for ~10 in one run).
    pub base_known: bool,
}

impl Cost {
    /// The measured overhead as a share of what the budget is of; None where that is not
    /// known (`base_known`), or nothing.
    pub fn share(&self) -> Option<f64> {
        (self.base_known && self.base > 0.0).then(|| self.total / self.base)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The probes are in.
    On,
    /// Out; the target settles.
    Settling,
    /// Out; the target's CPU is its own.
    Quiet,
}

/// The sampling state: where in the period we are and what the counters said.
#[derive(Debug)]
pub struct Sampler {
    pub settings: BudgetSettings,
    /// Share of the time the probes are in.
    pub ratio: f64,
    /// This period's length (the setting, or longer when no window fits).
    pub period: Duration,
    phase: Phase,
    period_start_ns: u64,
    /// When each family's probes were back in this period (attaching takes tens of ms; the
    /// parks' is the window's start).
    probes_in: ProbesIn,
    quiet_start_ns: u64,
    /// With the probes in all the time: the last check of the cost so far.
    checked_ns: u64,
    at_period_start: Counters,
    /// When the probes went out this period, and the counters then.
    window_end_ns: Option<u64>,
    at_window_end: Counters,
    at_quiet_start: Counters,
    /// The cost of one hit measured at start (`probes::calibrate`): the least it is taken as.
    calibrated_hit_ns: u64,
    /// The targets' extra CPU per attach/detach cycle, once measured.
    cycle_cost: f64,
    /// The targets' own CPU use, CPU-seconds per second: read in the last quiet part of a
    /// period, or estimated while the probes were in all the time (their CPU less the hits).
    targets_own: f64,
    pub last: Option<Cost>,
    /// Periods completed.
    pub periods: u64,
    /// What this period's plan expects it to cost, CPU-seconds per second, while sampling.
    expected: Option<f64>,
    misses: Misses,
}

impl Sampler {
    /// Starts the first period (probes in) at `now_ns`.
    pub fn new(settings: BudgetSettings, now_ns: u64, counters: Counters) -> Sampler {
        Sampler {
            settings,
            // Everything measured until a check (every CHECK, from half a second on) finds
            // the cost over the budget: exact counts wherever the budget allows them.
            ratio: 1.0,
            period: settings.period,
            phase: Phase::On,
            period_start_ns: now_ns,
            probes_in: ProbesIn::all_at(now_ns),
            quiet_start_ns: now_ns,
            checked_ns: now_ns,
            at_period_start: counters,
            window_end_ns: None,
            at_window_end: counters,
            at_quiet_start: counters,
            calibrated_hit_ns: settings.trap_cost_ns,
            cycle_cost: 0.0,
            targets_own: 0.0,
            last: None,
            periods: 0,
            expected: None,
            misses: Misses::default(),
        }
    }

    /// How long the probes are in each period.
    pub fn window(&self) -> Duration {
        self.period.mul_f64(self.ratio)
    }

    fn period_end_ns(&self) -> u64 {
        self.period_start_ns + self.period.as_nanos() as u64
    }

    /// When the next switch is due (ns on the caller's clock).
    pub fn next_due_ns(&self) -> u64 {
        match self.phase {
            Phase::On if self.ratio < 1.0 => {
                self.window_start_ns() + self.window().as_nanos() as u64
            }
            Phase::On => (self.checked_ns + CHECK.as_nanos() as u64).min(self.period_end_ns()),
            Phase::Quiet => self.period_end_ns(),
            Phase::Settling => {
                let off = self
                    .period_end_ns()
                    .saturating_sub(self.window_start_ns())
                    .saturating_sub(self.window().as_nanos() as u64);
                let settle = (off / 2).min(SETTLE.as_nanos() as u64);
                (self.window_start_ns() + self.window().as_nanos() as u64 + settle)
                    .min(self.period_end_ns())
            }
        }
    }

    /// How long the probes are really in each period: the window, and the time the kernel
    /// takes to remove them after.
    pub fn in_time(&self) -> Duration {
        if self.ratio >= 1.0 {
            self.period
        } else {
            (self.window() + self.settings.removal).min(self.period)
        }
    }

    /// Whether the sampled probes are out now.
    pub fn probes_out(&self) -> bool {
        self.phase != Phase::On
    }

    /// When the probes were back in the current period (ns on the caller's clock).
    pub fn window_start_ns(&self) -> u64 {
        self.probes_in.parks_ns
    }

    /// When each family's probes were back in the current period.
    pub fn probes_in(&self) -> ProbesIn {
        self.probes_in
    }

    /// The probes are back (after [`Switch::Resume`]), each family's at its time: the window
    /// starts at the parks'.
    pub fn resumed_at(&mut self, probes_in: ProbesIn) {
        self.probes_in = probes_in;
    }

    /// Called at [`Sampler::next_due_ns`] (or later).
    pub fn switch(&mut self, now_ns: u64, c: Counters) -> Switch {
        let in_period = now_ns < self.period_end_ns();
        match self.phase {
            Phase::On if self.ratio < 1.0 && in_period => {
                self.phase = Phase::Settling;
                self.window_end_ns = Some(now_ns);
                self.at_window_end = c;
                return Switch::Suspend;
            }
            Phase::Settling if in_period => {
                self.phase = Phase::Quiet;
                self.quiet_start_ns = now_ns;
                self.at_quiet_start = c;
                return Switch::Settled;
            }
            Phase::On if in_period && !self.over_budget_so_far(now_ns, c) => {
                self.checked_ns = now_ns;
                return Switch::Checked;
            }
            // Over the budget with the probes in all the time: the period ends now.
            _ => {}
        }
        self.end_period(now_ns, c);
        let was_on = self.phase == Phase::On;
        self.phase = Phase::On;
        self.period_start_ns = now_ns;
        self.probes_in = ProbesIn::all_at(now_ns);
        self.checked_ns = now_ns;
        self.window_end_ns = None;
        self.at_period_start = c;
        if was_on { Switch::Stay } else { Switch::Resume }
    }

    /// With the probes in all the time: whether the period so far (half a second at least)
    /// cost more than the budget.
    fn over_budget_so_far(&self, now_ns: u64, c: Counters) -> bool {
        let elapsed = now_ns.saturating_sub(self.period_start_ns) as f64 / 1e9;
        if elapsed < 0.5 {
            return false;
        }
        let (_, hits) = self.cpu_with_probes_in(c);
        let agent = c
            .agent_cpu_ns
            .saturating_sub(self.at_period_start.agent_cpu_ns) as f64;
        let own = self.own_with_probes_in(c, elapsed);
        (hits + self.settings.counted_agent(agent)) / 1e9 / elapsed > self.settings.cpu_per_s(own)
    }

    /// The targets' own CPU use over the `elapsed` seconds since the period began, with the
    /// probes in all of it: their CPU less the hits', CPU-seconds per second.
    fn own_with_probes_in(&self, c: Counters, elapsed: f64) -> f64 {
        let (used, hits) = self.cpu_with_probes_in(c);
        (used - hits).max(0.0) / 1e9 / elapsed
    }

    /// Since the period began, with the probes in all of it: the targets' CPU and their
    /// hits' at a hit's cost, ns.
    fn cpu_with_probes_in(&self, c: Counters) -> (f64, f64) {
        let start = self.at_period_start;
        let used = c.target_cpu_ns.saturating_sub(start.target_cpu_ns) as f64;
        let hits = c.hits.saturating_sub(start.hits) as f64 * self.settings.trap_cost_ns as f64;
        (used, hits)
    }

    /// What the period that ends at `now_ns` cost, and the plan for the next one.
    fn end_period(&mut self, now_ns: u64, c: Counters) {
        let secs = |ns: u64| ns as f64 / 1e9;
        let start = self.at_period_start;
        let period = secs(now_ns.saturating_sub(self.period_start_ns)).max(1e-9);
        let window = self.in_time().as_secs_f64().min(period);
        // The sampled probes' hits; the resident ones' are costed apart.
        let sampled = |c: &Counters| c.hits.saturating_sub(c.resident_hits);
        let hits = sampled(&c).saturating_sub(sampled(&start)) as f64;
        let resident_hits = c.resident_hits.saturating_sub(start.resident_hits) as f64;
        // The targets' own CPU use, per second, read while they were quiet.
        let quiet = secs(now_ns.saturating_sub(self.quiet_start_ns));
        let own = (self.phase == Phase::Quiet && quiet >= 0.2).then(|| {
            secs(
                c.target_cpu_ns
                    .saturating_sub(self.at_quiet_start.target_cpu_ns),
            ) / quiet
        });
        // A target that runs flat out cannot use more CPU under the probes: their cost shows as
        // lost progress instead. What the window and the settling lost against the quiet rate,
        // in CPU-seconds of the target's.
        let lost = own.and_then(|own| self.lost_progress(now_ns, c, own));
        // A hit's cost in the targets: their CPU above their own while the probes were in, or
        // the progress they lost then, whichever is more, per hit (enough hits to tell).
        if let (Some(own), Some(end_ns)) = (own, self.window_end_ns) {
            let in_window = secs(end_ns.saturating_sub(self.period_start_ns));
            let window_hits = sampled(&self.at_window_end).saturating_sub(sampled(&start));
            let used = secs(
                self.at_window_end
                    .target_cpu_ns
                    .saturating_sub(start.target_cpu_ns),
            );
            if window_hits >= 1_000 && in_window > 0.0 {
                let extra = (used - own * in_window).max(0.0);
                let cost = extra.max(lost.map_or(0.0, |l| l.in_window));
                let measured = cost / window_hits as f64 * 1e9;
                let was = self.settings.trap_cost_ns as f64;
                let next = if self.periods == 0 {
                    measured
                } else {
                    0.5 * (was + measured)
                };
                self.settings.trap_cost_ns = (next as u64).max(self.calibrated_hit_ns);
            }
        }
        let hit_cost = secs(self.settings.trap_cost_ns);
        let hits_full = hits / window.max(1e-9) * hit_cost;
        let agent = secs(c.agent_cpu_ns.saturating_sub(start.agent_cpu_ns)) / period;
        let target_extra = own.map(|own| {
            let used = secs(c.target_cpu_ns.saturating_sub(start.target_cpu_ns));
            let extra = (used - own * period).max(0.0) / period;
            // The larger of the two measures: extra CPU, or progress lost.
            extra.max(lost.map_or(0.0, |l| (l.in_window + l.settling) / period))
        });
        if let Some(extra) = target_extra {
            // What the hits do not explain is the cycle's.
            let cycle = (extra * period - hits * hit_cost).max(0.0);
            self.cycle_cost = if self.periods == 0 {
                cycle
            } else {
                0.5 * (self.cycle_cost + cycle)
            };
        }
        let resident = resident_hits * hit_cost / period;
        // Unmeasured (no quiet part), every hit at a hit's cost.
        let total = target_extra.unwrap_or(hits * hit_cost / period)
            + resident
            + self.settings.counted_agent(agent);
        let base_known = match (self.settings.of, own) {
            (BudgetOf::Host, _) | (BudgetOf::Targets, Some(_)) => true,
            (BudgetOf::Targets, None) => {
                let (used, hits) = self.cpu_with_probes_in(c);
                hits <= 0.5 * used
            }
        };
        // Measured, not estimated from the hits alone: how far the plan missed.
        if let (Some(expected), Some(_)) = (self.expected, target_extra) {
            self.misses.push(total / expected.max(1e-12));
        }
        self.targets_own = own.unwrap_or_else(|| self.own_with_probes_in(c, period));
        self.last = Some(Cost {
            hits_full,
            agent,
            resident,
            target_extra,
            cycle: self.cycle_cost,
            total,
            base: self.settings.base(self.targets_own),
            base_known,
        });
        self.periods += 1;
        self.plan(hits_full, resident + self.settings.counted_agent(agent));
    }

    /// Progress lost while the probes were in and while the targets settled after, against
    /// the rate while quiet, as CPU-seconds of targets using `own` CPU-s/s (enough scheduling
    /// events for the rates to tell; None otherwise, or when the probes were never out).
    fn lost_progress(&self, now_ns: u64, c: Counters, own: f64) -> Option<LostProgress> {
        let secs = |ns: u64| ns as f64 / 1e9;
        let end_ns = self.window_end_ns?;
        let quiet = secs(now_ns.saturating_sub(self.quiet_start_ns));
        let quiet_events = c.progress.saturating_sub(self.at_quiet_start.progress);
        if self.phase != Phase::Quiet || quiet < 0.2 || quiet_events < MIN_PROGRESS_EVENTS {
            return None;
        }
        let rate = quiet_events as f64 / quiet;
        let lost = |events: u64, seconds: f64| {
            let share = (1.0 - events as f64 / (rate * seconds)).clamp(0.0, 1.0);
            own * share * seconds
        };
        let in_window = secs(end_ns.saturating_sub(self.period_start_ns));
        let settling = secs(self.quiet_start_ns.saturating_sub(end_ns));
        let start = self.at_period_start.progress;
        Some(LostProgress {
            in_window: (in_window > 0.0)
                .then(|| lost(self.at_window_end.progress.saturating_sub(start), in_window))?,
            settling: if settling > 0.0 {
                lost(
                    self.at_quiet_start
                        .progress
                        .saturating_sub(self.at_window_end.progress),
                    settling,
                )
            } else {
                0.0
            },
        })
    }

    /// Window and period for the next period: `ratio × hits_full + (cycle + always × period)
    /// / period <= aim`, `always` what is paid whatever the window (the resident probes,
    /// gort's own CPU where counted), the period lengthened (at most twofold a period) when no
    /// window of at least the lowest ratio fits; the aim is the budget over the second worst
    /// recent miss (`Misses`).
    fn plan(&mut self, hits_full: f64, always: f64) {
        let budget = self.settings.cpu_per_s(self.targets_own) / self.misses.second_worst();
        self.expected = None;
        // Some headroom before all in: one quiet period is no promise.
        if hits_full + always <= 0.8 * budget {
            self.ratio = 1.0;
            self.period = self.settings.period;
            return;
        }
        let spare = budget - always;
        let mut period = self.settings.period.as_secs_f64();
        let ratio_at = |period: f64| (spare - self.cycle_cost / period) / hits_full.max(1e-12);
        if ratio_at(period) < MIN_RATIO {
            let room = spare - MIN_RATIO * hits_full;
            // At most twice the last period: one dear period (the start's own work, a burst)
            // must not set minutes of blindness; a lasting cost lengthens it in a few steps.
            let longest = (2.0 * self.period.as_secs_f64()).clamp(period, MAX_PERIOD.as_secs_f64());
            period = if room > 0.0 {
                (self.cycle_cost / room).clamp(period, longest)
            } else {
                longest
            };
        }
        self.period = Duration::from_secs_f64(period);
        self.ratio = ratio_at(period).clamp(MIN_RATIO, 1.0);
        self.expected = Some(self.ratio * hits_full + self.cycle_cost / period + always);
    }
}

/// Parses `2%`, `2` (percent) or `0.5%`.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let pct: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage (like 2%)"))?;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(format!(
            "`{s}`: the budget must be above 0% and at most 100%"
        ));
    }
    Ok(pct / 100.0)
}

/// A per-process counter (CPU time, scheduling events) summed over the targets as one counter
/// that only grows, though targets come and go (`--exe`, `--all`): each reading adds what
/// every process counted since the one before; a process seen for the first time adds what
/// it counted since it started, one gone adds nothing more.
#[derive(Debug, Default)]
pub struct TargetTotal {
    last: HashMap<u32, u64>,
    total: u64,
}

impl TargetTotal {
    /// Adds `readings` (pid, its counter so far); returns the total.
    pub fn read(&mut self, readings: impl IntoIterator<Item = (u32, u64)>) -> u64 {
        let mut now = HashMap::with_capacity(self.last.len());
        for (pid, ns) in readings {
            let before = self.last.get(&pid).copied().unwrap_or(0);
            // Less than before: another process on a reused pid.
            self.total += if ns >= before { ns - before } else { ns };
            now.insert(pid, ns);
        }
        self.last = now;
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_cpu_only_grows_as_processes_come_and_go() {
        let mut cpu = TargetTotal::default();
        assert_eq!(cpu.read([(1, 100), (2, 50)]), 150);
        // 1 used 20 more, 2 exited, 3 started having used 5.
        assert_eq!(cpu.read([(1, 120), (3, 5)]), 175);
        // 3's pid reused by a process that has used 2.
        assert_eq!(cpu.read([(1, 120), (3, 2)]), 177);
        assert_eq!(cpu.read([]), 177);
    }

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn settings() -> BudgetSettings {
        BudgetSettings {
            share: 0.02,
            of: BudgetOf::Host,
            period: Duration::from_secs(10),
            trap_cost_ns: 10_000,
            removal: Duration::ZERO,
            cpus: 2,
        }
    }

    fn c(hits: u64, agent_ms: u64, target_ms: u64) -> Counters {
        Counters {
            hits,
            resident_hits: 0,
            agent_cpu_ns: agent_ms * MS,
            target_cpu_ns: target_ms * MS,
            progress: 0,
        }
    }

    fn cp(hits: u64, target_ms: u64, progress: u64) -> Counters {
        Counters {
            progress,
            ..c(hits, 0, target_ms)
        }
    }

    /// A target flat out on one CPU whether probed or not (a closed loop): the probes cost
    /// it no CPU it can show, but progress: 22 % of its quiet rate while they are in, half
    /// while it settles after. That lost progress is their cost.
    #[test]
    fn lost_progress_is_the_cost_of_a_target_flat_out() {
        let run = |window_events: u64, settling_events: u64| {
            let mut s = sampled_from(0, cp(0, 0, 0));
            assert_eq!(
                s.switch(S, cp(40_000, 1_000, window_events)),
                Switch::Suspend
            );
            let settled = window_events + settling_events;
            assert_eq!(
                s.switch(S + 1_500 * MS, cp(40_000, 2_500, settled)),
                Switch::Settled
            );
            // Quiet 7.5 s at 10,000 events a second.
            assert_eq!(
                s.switch(10 * S, cp(40_000, 10_000, settled + 75_000)),
                Switch::Resume
            );
            s
        };
        let s = run(2_200, 7_500);
        // In the window 78 % of a CPU-second lost over 40,000 hits: 19.5 µs a hit.
        assert_eq!(s.settings.trap_cost_ns, 19_500);
        let cost = s.last.unwrap();
        // 0.78 + 0.75 CPU-s lost over the 10 s period; the settling's is the cycle's.
        assert!(
            (cost.target_extra.unwrap() - 0.153).abs() < 1e-9,
            "{cost:?}"
        );
        assert!((cost.cycle - 0.75).abs() < 1e-9, "{cost:?}");
        assert!(s.period > Duration::from_secs(10), "{:?}", s.period);

        // The same target keeping its pace: the CPU says all there is.
        let s = run(10_000, 15_000);
        assert_eq!(s.settings.trap_cost_ns, 10_000);
        assert_eq!(s.last.unwrap().target_extra, Some(0.0));
    }

    /// `--overhead-budget-of targets`: the budget is a share of the targets' own CPU, read in
    /// the quiet part of the period (estimated as their CPU less the hits while the probes
    /// were in all the time), and the cost is reported as a share of the same.
    #[test]
    fn a_budget_of_the_targets_follows_their_own_cpu() {
        let targets = BudgetSettings {
            share: 0.5,
            of: BudgetOf::Targets,
            ..settings()
        };
        let mut s = Sampler::new(targets, 0, c(0, 0, 0));
        // 9 ms/s of its own and 1 ms/s of hits: within half its own, still all in.
        assert_eq!(s.switch(S, c(100, 0, 10)), Switch::Checked);
        // 40,000 hits more (0.4 s) in a second of 0.5 s used: over half of its ~0.05 own.
        assert_eq!(s.switch(2 * S, c(40_100, 1, 500)), Switch::Stay);
        let first = s.last.unwrap();
        assert!((first.base - 0.099 / 2.0).abs() < 1e-9, "{first:?}");
        // Its own use inferred from hits that made up 80 % of its CPU: not reported against.
        assert_eq!(first.share(), None, "{first:?}");
        // The same target as in `the_window_follows_the_measured_cost`: 100 ms/s of its own.
        let start = c(40_100, 1, 500);
        let at = |hits: u64, agent_ms: u64, target_ms: u64| {
            c(
                start.hits + hits,
                1 + agent_ms,
                start.target_cpu_ns / MS + target_ms,
            )
        };
        // A 10 % window forced, and so no plan's expectation to miss.
        s.ratio = 0.1;
        s.expected = None;
        let t0 = 2 * S;
        assert_eq!(s.switch(t0 + S, at(40_000, 0, 500)), Switch::Suspend);
        assert_eq!(
            s.switch(t0 + S + 1_500 * MS, at(40_000, 0, 850)),
            Switch::Settled
        );
        assert_eq!(
            s.switch(t0 + 10 * S, at(40_000, 100, 1_600)),
            Switch::Resume
        );
        let cost = s.last.unwrap();
        assert!((cost.base - 0.1).abs() < 1e-9, "{cost:?}");
        // The target's 0.06 CPU-s/s extra; gort's own 0.01 is not the targets'.
        assert!((cost.agent - 0.01).abs() < 1e-9, "{cost:?}");
        assert!((cost.total - 0.06).abs() < 1e-9, "{cost:?}");
        // The cycle's 0.2 s averaged with the first period's (none measured).
        assert!((cost.cycle - 0.1).abs() < 1e-9, "{cost:?}");
        // Budget 0.5 × 0.1 = 0.05: ratio × 0.4 + 0.1 / 10 <= 0.05 → 10 %.
        assert_eq!(s.period, Duration::from_secs(10));
        assert!((s.ratio - 0.1).abs() < 1e-9, "{}", s.ratio);
        // A host budget of the same share would let everything in.
        assert_eq!(settings().base(0.1), 2.0);

        // Hits at the calibrated cost making up all its CPU: its own use, and so the share
        // of it, not known.
        let mut unknown = Sampler::new(targets, 0, c(0, 0, 0));
        assert_eq!(unknown.switch(S, c(50_000, 1, 400)), Switch::Stay);
        let cost = unknown.last.unwrap();
        assert_eq!((cost.base, cost.share()), (0.0, None), "{cost:?}");

        // Hits making up 40 % of its CPU (0.2 of 0.5 s): over half its own 0.3, and its own
        // use inferred well enough to report the share against.
        let mut known = Sampler::new(targets, 0, c(0, 0, 0));
        assert_eq!(known.switch(S, c(20_000, 1, 500)), Switch::Stay);
        let cost = known.last.unwrap();
        assert!((cost.base - 0.3).abs() < 1e-9, "{cost:?}");
        assert!((cost.share().unwrap() - 0.2 / 0.3).abs() < 1e-9, "{cost:?}");

        // An idle target (1 ms/s, a few hits) keeps everything in, whatever gort's own timers
        // cost beside it.
        let mut idle = Sampler::new(targets, 0, c(0, 0, 0));
        for t in 1..10 {
            assert_eq!(idle.switch(t * S, c(10 * t, 5 * t, t)), Switch::Checked);
        }
        assert_eq!(idle.switch(10 * S, c(100, 50, 10)), Switch::Stay);
        assert_eq!(idle.ratio, 1.0);
    }

    /// A sampler in a period sampled at 10 % (as after a period over the budget).
    fn sampled_from(now_ns: u64, counters: Counters) -> Sampler {
        let mut s = Sampler::new(settings(), now_ns, counters);
        s.ratio = 0.1;
        s
    }

    #[test]
    fn a_new_sampler_measures_everything_until_over_the_budget() {
        let mut s = Sampler::new(settings(), 0, c(0, 0, 0));
        assert_eq!(s.ratio, 1.0);
        assert_eq!(s.in_time(), s.period);
        // A quiet first second: checked, still all in.
        assert_eq!(s.next_due_ns(), S);
        assert_eq!(s.switch(S, c(100, 0, 10)), Switch::Checked);
        // 40,000 hits in the next second (0.4 CPU-s/s, over the 0.04 budget): the period
        // ends and the next is sampled.
        assert_eq!(s.switch(2 * S, c(40_100, 1, 500)), Switch::Stay);
        assert!(s.ratio < 0.2, "{}", s.ratio);
    }

    /// A target using 100 ms/s of its own, hit 40,000 times a second while the probes are in
    /// (10 µs each: 0.4 CPU-s/s), and 200 ms of extra CPU per attach/detach cycle.
    #[test]
    fn the_window_follows_the_measured_cost() {
        let mut s = sampled_from(0, c(0, 0, 0));
        assert_eq!(s.next_due_ns(), S); // 10 % of 10 s
        assert_eq!(s.switch(S, c(40_000, 0, 500)), Switch::Suspend);
        // Settling: half the 9 s off, at most 1.5 s.
        assert_eq!(s.next_due_ns(), S + 1_500 * MS);
        assert_eq!(
            s.switch(S + 1_500 * MS, c(40_000, 0, 500 + 200 + 150)),
            Switch::Settled
        );
        assert_eq!(s.next_due_ns(), 10 * S);
        // The quiet 7.5 s: 750 ms of the target's own.
        assert_eq!(s.switch(10 * S, c(40_000, 100, 850 + 750)), Switch::Resume);
        let cost = s.last.unwrap();
        assert!((cost.hits_full - 0.4).abs() < 1e-9, "{cost:?}");
        // Used 1.6 s, its own 0.1 × 10 s: 0.6 s extra, of which 0.4 s the hits: 0.2 s cycle.
        assert!((cost.target_extra.unwrap() - 0.06).abs() < 1e-9, "{cost:?}");
        assert!((cost.cycle - 0.2).abs() < 1e-9, "{cost:?}");
        assert!((cost.agent - 0.01).abs() < 1e-9);
        assert!((cost.total - 0.07).abs() < 1e-9);
        // Budget 0.04: ratio × 0.4 + 0.2 / 10 + 0.01 <= 0.04 → 2.5 %.
        assert_eq!(s.period, Duration::from_secs(10));
        assert!((s.ratio - 0.025).abs() < 1e-9, "{}", s.ratio);
        // A dearer cycle: the period is lengthened to fit it, 0.5 / (0.03 - 0.004) s.
        s.cycle_cost = 0.5;
        s.plan(0.4, 0.01);
        assert!(
            (s.period.as_secs_f64() - 0.5 / 0.026).abs() < 1e-6,
            "{:?}",
            s.period
        );
        assert!((s.ratio - MIN_RATIO).abs() < 1e-9, "{}", s.ratio);
        // No room at all (gort's own CPU over the budget for a period): twice as long, not
        // the longest period at once; back to the setting once the cost is normal.
        s.plan(0.4, 0.05);
        assert!(
            (s.period.as_secs_f64() - 2.0 * 0.5 / 0.026).abs() < 1e-6,
            "{:?}",
            s.period
        );
        s.plan(0.4, 0.05);
        s.plan(0.4, 0.05);
        assert_eq!(s.period, MAX_PERIOD);
        s.cycle_cost = 0.0;
        s.plan(0.4, 0.01);
        assert_eq!(s.period, Duration::from_secs(10));
        s.resumed_at(ProbesIn::all_at(10 * S + 30 * MS));
        assert_eq!(
            s.next_due_ns(),
            10 * S + 30 * MS + s.window().as_nanos() as u64
        );
    }

    /// The period of `the_window_follows_the_measured_cost`, its plan having expected it to
    /// cost 0.056 CPU-s/s: it cost 0.07, a miss of 1.25, after a period that missed by 1.5;
    /// so the next plan aims at 0.04 / 1.25 (the second worst), until the misses leave the
    /// last eight.
    #[test]
    fn the_plan_aims_below_the_budget_by_the_second_worst_recent_miss() {
        let mut s = sampled_from(0, c(0, 0, 0));
        s.misses.push(1.5);
        // One wild period alone does not move the aim.
        assert_eq!(s.misses.second_worst(), 1.0);
        s.expected = Some(0.056);
        s.switch(S, c(40_000, 0, 500));
        s.switch(S + 1_500 * MS, c(40_000, 0, 850));
        assert_eq!(s.switch(10 * S, c(40_000, 100, 1_600)), Switch::Resume);
        assert!((s.last.unwrap().total - 0.07).abs() < 1e-9);
        assert!(
            (s.misses.second_worst() - 1.25).abs() < 1e-9,
            "{:?}",
            s.misses
        );
        // Aim 0.032: spare 0.022 less the cycle's 0.02 leaves a ratio under the lowest, so
        // the period is lengthened to 0.2 / (0.022 - 0.01 × 0.4) s (without the miss the
        // ratio was 2.5 % of 10 s).
        assert!((s.ratio - MIN_RATIO).abs() < 1e-9, "{}", s.ratio);
        assert!(
            (s.period.as_secs_f64() - 0.2 / 0.018).abs() < 1e-6,
            "{:?}",
            s.period
        );
        // The plan expects its aim.
        assert!(
            (s.expected.unwrap() - 0.032).abs() < 1e-9,
            "{:?}",
            s.expected
        );
        // Periods within their plans push the misses out after eight; wild ones count as
        // twice at most; the aim is the budget itself once at most one period missed.
        for _ in 0..6 {
            s.misses.push(0.9);
        }
        assert!((s.misses.second_worst() - 1.25).abs() < 1e-9);
        s.misses.push(0.9);
        assert_eq!(s.misses.second_worst(), 1.0, "{:?}", s.misses);
        s.misses.push(30.0);
        s.misses.push(30.0);
        assert_eq!(s.misses.second_worst(), MOST_MISS);
        s.misses = Misses::default();
        s.cycle_cost = 0.0;
        s.plan(0.4, 0.01);
        assert!((s.ratio - 0.075).abs() < 1e-9, "{}", s.ratio);
        // All in (under 0.8 of the aim): nothing expected, no miss to measure.
        s.plan(0.01, 0.01);
        assert_eq!((s.ratio, s.expected), (1.0, None));
    }

    /// The same target, with GC probes that stay in hit 1,000 times a second all period: the
    /// quiet part runs with them, so the measure against it leaves them out; they are costed
    /// as hits, and they neither count as the window's hits nor shrink the cycle's cost.
    #[test]
    fn the_probes_that_stay_in_are_costed_apart() {
        let at = |sampled: u64, resident: u64, agent_ms: u64, target_ms: u64| Counters {
            hits: sampled + resident,
            resident_hits: resident,
            ..c(0, agent_ms, target_ms)
        };
        let mut s = Sampler::new(
            BudgetSettings {
                share: 0.05,
                ..settings()
            },
            0,
            at(0, 0, 0, 0),
        );
        s.ratio = 0.1;
        assert_eq!(s.switch(S, at(40_000, 1_000, 0, 500)), Switch::Suspend);
        assert_eq!(
            s.switch(S + 1_500 * MS, at(40_000, 2_500, 0, 850)),
            Switch::Settled
        );
        assert_eq!(
            s.switch(10 * S, at(40_000, 10_000, 100, 1_600)),
            Switch::Resume
        );
        assert_eq!(s.settings.trap_cost_ns, 10_000);
        let cost = s.last.unwrap();
        assert!((cost.hits_full - 0.4).abs() < 1e-9, "{cost:?}");
        assert!((cost.cycle - 0.2).abs() < 1e-9, "{cost:?}");
        // 10,000 hits × 10 µs over 10 s.
        assert!((cost.resident - 0.01).abs() < 1e-9, "{cost:?}");
        // 0.06 extra against the quiet part, 0.01 resident, 0.01 gort's own.
        assert!((cost.total - 0.08).abs() < 1e-9, "{cost:?}");
        // Budget 0.1: ratio × 0.4 + 0.2 / 10 + 0.01 + 0.01 <= 0.1 → 15 %.
        assert!((s.ratio - 0.15).abs() < 1e-9, "{}", s.ratio);
    }

    /// The same target, but its hits cost 20 µs each (a busy target: more than the 10 µs
    /// calibrated): measured in the window, and the window halved for it.
    #[test]
    fn a_hit_dearer_than_calibrated_is_measured_in_the_window() {
        let mut s = sampled_from(0, c(0, 0, 0));
        assert_eq!(s.switch(S, c(40_000, 0, 900)), Switch::Suspend);
        s.switch(S + 1_500 * MS, c(40_000, 0, 900 + 200 + 150));
        assert_eq!(
            s.switch(10 * S, c(40_000, 100, 1_250 + 750)),
            Switch::Resume
        );
        assert_eq!(s.settings.trap_cost_ns, 20_000);
        let cost = s.last.unwrap();
        assert!((cost.hits_full - 0.8).abs() < 1e-9, "{cost:?}");
        // Used 2.0 s, its own 1.0 s: 1.0 s extra, 0.8 s the hits, 0.2 s the cycle.
        assert!((cost.cycle - 0.2).abs() < 1e-9, "{cost:?}");
        // ratio × 0.8 + 0.2 / 10 + 0.01 <= 0.04 → 1.25 %.
        assert!((s.ratio - 0.0125).abs() < 1e-9, "{}", s.ratio);
        // Never below the calibration: a window that shows less keeps 10 µs at the least.
        let mut s = sampled_from(0, c(0, 0, 0));
        s.switch(S, c(40_000, 0, 150));
        s.switch(S + 1_500 * MS, c(40_000, 0, 300));
        s.switch(10 * S, c(40_000, 100, 1_050));
        assert_eq!(s.settings.trap_cost_ns, 10_000);
    }

    #[test]
    fn a_quiet_target_keeps_the_probes_in() {
        let mut s = sampled_from(0, c(0, 0, 0));
        s.switch(S, c(100, 0, 10));
        s.switch(s.next_due_ns(), c(100, 0, 30));
        assert_eq!(s.switch(10 * S, c(100, 10, 100)), Switch::Resume);
        assert_eq!(s.ratio, 1.0);
        // The cost so far is checked every second.
        for second in 11..20 {
            assert_eq!(s.next_due_ns(), second * S);
            let hits = 100 + (second - 10) * 10;
            assert_eq!(s.switch(second * S, c(hits, 11, 110)), Switch::Checked);
        }
        assert_eq!(s.next_due_ns(), 20 * S);
        assert_eq!(s.switch(20 * S, c(200, 20, 200)), Switch::Stay);
        assert_eq!(s.ratio, 1.0);
    }

    /// Load starting mid-period with the probes in all the time: the first check over the
    /// budget ends the period, and the next has a window that fits.
    #[test]
    fn load_with_the_probes_in_ends_the_period_at_once() {
        let mut s = sampled_from(0, c(0, 0, 0));
        s.switch(S, c(100, 0, 10));
        s.switch(s.next_due_ns(), c(100, 0, 30));
        assert_eq!(s.switch(10 * S, c(100, 10, 100)), Switch::Resume);
        assert_eq!(s.ratio, 1.0);
        // 40,000 hits in the next second, 10 µs each: 0.4 CPU-s/s, over the 0.04 budget.
        assert_eq!(s.switch(11 * S, c(40_100, 11, 600)), Switch::Stay);
        assert_eq!(s.periods, 2);
        // ratio × 0.4 + cycle / 10 + 0.001 (gort) <= 0.04, the cycle measured in the first
        // period 6 ms: 9.6 %.
        assert!((s.ratio - (0.039 - s.cycle_cost / 10.0) / 0.4).abs() < 1e-9);
        assert!(s.ratio > 0.09 && s.ratio < 0.0975, "{}", s.ratio);
        assert_eq!(s.next_due_ns(), 11 * S + s.window().as_nanos() as u64);
        assert_eq!(
            s.switch(s.next_due_ns(), c(70_100, 12, 700)),
            Switch::Suspend
        );
    }

    #[test]
    fn ratio_keeps_the_cost_within_the_budget() {
        let mut s = Sampler::new(settings(), 0, c(0, 0, 0));
        s.cycle_cost = 0.1;
        s.plan(0.4, 0.0);
        // ratio × 0.4 + 0.1 / 10 <= 0.04 → 0.075.
        assert!((s.ratio - 0.075).abs() < 1e-9);
        assert_eq!(s.period, Duration::from_secs(10));
        // A cycle too dear for any period: lengthened twofold each period, up to the longest.
        s.cycle_cost = 10.0;
        s.plan(0.4, 0.0);
        assert_eq!(s.period, Duration::from_secs(20));
        assert_eq!(s.ratio, MIN_RATIO);
        for _ in 0..3 {
            s.plan(0.4, 0.0);
        }
        assert_eq!(s.period, MAX_PERIOD);
    }

    #[test]
    fn shares_parse() {
        assert_eq!(parse_share("2%"), Ok(0.02));
        assert_eq!(parse_share("5"), Ok(0.05));
        assert!(parse_share("0%").is_err());
        assert!(parse_share("abc").is_err());
        assert!(parse_share("150%").is_err());
    }
}
