//! `/metrics` in the OpenMetrics text format (what Prometheus negotiates), encoded by
//! `prometheus-client` from a [`MetricsView`] snapshot.

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, NoLabelSet,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::aggregate::view::{MetricsView, ProcessMetrics, ReasonEstimate};

/// The content type of what [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes a snapshot as OpenMetrics text.
pub fn encode(view: MetricsView) -> String {
    let mut block_durations = String::new();
    encode_block_durations(&view, &mut block_durations);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ViewCollector(view)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    // prometheus-client builds exemplars only from its own live histograms, so the one family
    // that carries them is written here, before the end marker.
    let end = out.rfind("# EOF").unwrap_or(out.len());
    out.insert_str(end, &block_durations);
    out
}

/// A label value as OpenMetrics quotes it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `gort_goroutine_block_duration_seconds`, with an exemplar on each bucket that saw a block
/// inside a traced request: the newest such block's trace and span ids, duration and time;
/// under a budget also `gort_goroutine_block_duration_estimated_seconds`, the same
/// histogram with each park weighed as in the estimated totals.
fn encode_block_durations(view: &MetricsView, out: &mut String) {
    use std::fmt::Write;
    let labels_of = |p: &ProcessMetrics, reason: &str| {
        process_labels(p, [("reason", reason.to_string())])
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let le_of = |bound: f64| {
        if bound == f64::MAX {
            "+Inf".to_string()
        } else {
            bound.to_string()
        }
    };
    let name = "gort_goroutine_block_duration_seconds";
    let _ = write!(
        out,
        "# HELP {name} Distribution of park durations (park to running), by wait reason.\n\
         # TYPE {name} histogram\n# UNIT {name} seconds\n"
    );
    for p in &view.processes {
        for r in &p.reasons {
            let labels = labels_of(p, &r.reason);
            let h = &r.histogram;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ns() as f64 / 1e9);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
            let mut cumulative = 0;
            for (i, (bound, n)) in h.buckets_seconds().into_iter().enumerate() {
                cumulative += n;
                let le = le_of(bound);
                let _ = write!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                if let Some(e) = r.exemplars.iter().find(|e| e.bucket == i) {
                    let _ = write!(
                        out,
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                        e.trace_id,
                        e.span_id,
                        e.seconds,
                        e.unix_ns as f64 / 1e9
                    );
                }
                out.push('\n');
            }
        }
    }
    if view.sampling.is_none() {
        return;
    }
    let name = "gort_goroutine_block_duration_estimated_seconds";
    let _ = write!(
        out,
        "# HELP {name} Under --overhead-budget: gort_goroutine_block_duration_seconds estimated \
         from the sampled parks (each weighted by the inverse of its chance to be seen whole, \
         which falls with its length), by wait reason. An estimate: buckets are rounded.\n\
         # TYPE {name} histogram\n# UNIT {name} seconds\n"
    );
    for p in &view.processes {
        for (reason, h) in &p.estimates.durations {
            let labels = labels_of(p, reason);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds());
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
            for (bound, cumulative) in h.cumulative_buckets() {
                let le = le_of(bound);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
        }
    }
}

#[derive(Debug)]
struct ViewCollector(MetricsView);

type Labels = Vec<(&'static str, String)>;

/// A process's labels: `pid`, `service`, and where known its container and Kubernetes pod
/// (`container_id`, `k8s_namespace`, `k8s_pod`, `k8s_container`), then `extra`.
fn process_labels<const N: usize>(
    p: &ProcessMetrics,
    extra: [(&'static str, String); N],
) -> Labels {
    let c = &p.container;
    let mut labels: Labels = vec![("pid", p.pid.to_string()), ("service", p.service.clone())];
    for (name, value) in [
        ("container_id", &c.container_id),
        ("k8s_namespace", &c.k8s_namespace),
        ("k8s_pod", &c.k8s_pod),
        ("k8s_container", &c.k8s_container),
    ] {
        if let Some(v) = value {
            labels.push((name, v.clone()));
        }
    }
    labels.extend(extra);
    labels
}

/// Labels with their values escaped as OpenMetrics requires (prometheus-client 0.24 writes
/// values as given, and some come from the target: its service name, file paths).
struct Escaped<'a>(&'a Labels);

impl EncodeLabelSet for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in self.0 {
            (*name, escape(value)).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl Collector for ViewCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = &self.0;
        let per_reason = || {
            view.processes.iter().flat_map(|p| {
                p.reasons.iter().map(move |r| {
                    let labels: Labels = process_labels(p, [("reason", r.reason.clone())]);
                    (labels, r)
                })
            })
        };

        let mut family = encoder.encode_descriptor(
            "gort_goroutine_blocks",
            "Completed goroutine parks (the goroutine ran again), by the runtime's wait reason.",
            None,
            MetricType::Counter,
        )?;
        for (labels, r) in per_reason() {
            ConstCounter::new(r.histogram.count())
                .encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_goroutine_blocked",
            "Time goroutines spent parked, from runtime.gopark until the goroutine ran again \
             (park to running: includes the wait in the run queue after being made ready).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, r) in per_reason() {
            ConstCounter::new(r.histogram.sum_ns() as f64 / 1e9)
                .encode(family.encode_family(&Escaped(&labels))?)?;
        }

        // gort_goroutine_block_duration_seconds: see encode_block_durations.

        let mut family = encoder.encode_descriptor(
            "gort_goroutines_blocked",
            "Goroutines parked right now (parked since gort attached), by wait reason.",
            None,
            MetricType::Gauge,
        )?;
        for p in view.processes.iter().filter(|p| !p.exited) {
            for r in &p.reasons {
                let labels: Labels = process_labels(p, [("reason", r.reason.clone())]);
                ConstGauge::new(r.parked_now as i64)
                    .encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gort_sched_latency",
            "Time goroutines spent runnable before running, read from the runtime's own \
             histogram (runtime/metrics /sched/latencies:seconds: one in eight scheduling events \
             is sampled). The runtime keeps no sum: _sum is estimated from bucket midpoints.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &view.processes {
            let Some(h) = &p.sched_latency else { continue };
            let labels: Labels = process_labels(p, []);
            family
                .encode_family(&Escaped(&labels))?
                .encode_histogram::<NoLabelSet>(
                    h.estimated_sum_seconds(),
                    h.count(),
                    &h.export_buckets(),
                    None,
                )?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_stw_pause",
            "Stop-the-world pauses, from runtime.stopTheWorldWithSema to the end of \
             runtime.startTheWorldWithSema, by the runtime's reason (a GC cycle has a `GC sweep \
             termination` and a `GC mark termination` pause).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in view.processes.iter() {
            for (reason, h) in &p.pauses {
                let labels: Labels = process_labels(p, [("reason", reason.clone())]);
                family
                    .encode_family(&Escaped(&labels))?
                    .encode_histogram::<NoLabelSet>(
                        h.sum_ns() as f64 / 1e9,
                        h.count(),
                        &h.buckets_seconds(),
                        None,
                    )?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gort_gc_cycles",
            "Completed GC cycles (runtime.gcMarkTermination ran).",
            None,
            MetricType::Counter,
        )?;
        for p in view.processes.iter().filter(|p| p.gc_probed) {
            let labels: Labels = process_labels(p, []);
            ConstCounter::new(p.gc_cycles).encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_gc_mark",
            "The concurrent mark phase of GC cycles: from the end of the sweep-termination pause \
             to the start of the mark-termination pause.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in view.processes.iter().filter(|p| p.gc_probed) {
            let labels: Labels = process_labels(p, []);
            let h = &p.gc_mark;
            family
                .encode_family(&Escaped(&labels))?
                .encode_histogram::<NoLabelSet>(
                    h.sum_ns() as f64 / 1e9,
                    h.count(),
                    &h.buckets_seconds(),
                    None,
                )?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_goroutines",
            "Live goroutines: kind=\"user\" counts them as runtime.NumGoroutine does, \
             kind=\"system\" the runtime's own (GC workers, sweeper, scavenger, finalizer ...).",
            None,
            MetricType::Gauge,
        )?;
        for p in view.processes.iter().filter(|p| !p.exited) {
            for (kind, n) in [("user", p.goroutines_user), ("system", p.goroutines_system)] {
                let labels: Labels = process_labels(p, [("kind", kind.to_string())]);
                ConstGauge::new(n as i64).encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        for (name, help, pick) in [
            (
                "gort_goroutines_created",
                "Goroutines created since gort attached.",
                0,
            ),
            (
                "gort_goroutines_exited",
                "Goroutines exited since gort attached.",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &view.processes {
                let Some(counts) = p.lifecycle else { continue };
                let labels: Labels = process_labels(p, []);
                let n = if pick == 0 { counts.0 } else { counts.1 };
                ConstCounter::new(n).encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gort_goroutine_leak_suspects",
            "Goroutines in leak suspect groups (created at the same place, blocked at the same \
             place, parked longer than --leak-after, and growing): the largest groups by \
             creation site, the rest added up in created_by=\"other\".",
            None,
            MetricType::Gauge,
        )?;
        for p in view.processes.iter().filter(|p| !p.exited) {
            for (reason, site, n) in &p.leak_suspects {
                let labels: Labels = process_labels(
                    p,
                    [("reason", reason.clone()), ("created_by", site.clone())],
                );
                ConstGauge::new(*n as i64).encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gort_panics",
            "Panics once recovered (recovered=\"true\") or fatal, and fatal errors \
             (recovered=\"false\"), by site: the first frame outside the runtime and standard \
             library (at most 20 per process, the rest as \"other\").",
            None,
            MetricType::Counter,
        )?;
        for p in &view.processes {
            for (recovered, site, n) in p.panics.iter().flatten() {
                let labels: Labels = process_labels(
                    p,
                    [("recovered", recovered.to_string()), ("site", site.clone())],
                );
                ConstCounter::new(*n).encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        for (name, help, pick) in [
            (
                "gort_http_requests",
                "HTTP requests served (net/http), since gort attached.",
                0,
            ),
            (
                "gort_traceparent_invalid",
                "Requests whose traceparent header was malformed (ignored as the W3C \
                 specification says; gort generated a trace id).",
                1,
            ),
            (
                "gort_http_requests_abandoned",
                "Requests that never returned from ServeHTTP (a handler panicked and net/http \
                 recovered; the connection closed): not recorded.",
                2,
            ),
            (
                "gort_http_headers_truncated",
                "Requests with more header fields than the probe walks (128) and no \
                 traceparent among those walked: gort generated a trace id.",
                3,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &view.processes {
                let Some(counts) = &p.requests else { continue };
                let labels: Labels = process_labels(p, []);
                ConstCounter::new(
                    [
                        counts.completed,
                        counts.traceparent_invalid,
                        counts.abandoned,
                        counts.headers_truncated,
                    ][pick],
                )
                .encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        let per_site = || {
            view.processes.iter().flat_map(|p| {
                p.sites.iter().map(move |(reason, site, count, ns)| {
                    let labels =
                        process_labels(p, [("reason", reason.clone()), ("site", site.clone())]);
                    (labels, *count, *ns)
                })
            })
        };
        let mut family = encoder.encode_descriptor(
            "gort_goroutine_site_blocks",
            "Parks of at least --frame-min-block (their stack is captured), by wait reason and \
             call site: the first frame outside the Go runtime and standard library, \
             `function file:line` (the first 200 sites of a process; later ones as `other`).",
            None,
            MetricType::Counter,
        )?;
        for (labels, count, _) in per_site() {
            ConstCounter::new(count).encode(family.encode_family(&Escaped(&labels))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "gort_goroutine_site_blocked",
            "Time parked in parks of at least --frame-min-block, by wait reason and call site \
             (see gort_goroutine_site_blocks_total).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, _, ns) in per_site() {
            ConstCounter::new(ns as f64 / 1e9).encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let per_request_reason = || {
            view.processes.iter().flat_map(|p| {
                p.requests.iter().flat_map(move |c| {
                    c.blocked.iter().map(move |(reason, count, ns)| {
                        (process_labels(p, [("reason", reason.clone())]), *count, *ns)
                    })
                })
            })
        };
        let mut family = encoder.encode_descriptor(
            "gort_http_request_blocks",
            "Parks of goroutines while serving HTTP requests (counted when the request \
             completes), by wait reason.",
            None,
            MetricType::Counter,
        )?;
        for (labels, count, _) in per_request_reason() {
            ConstCounter::new(count).encode(family.encode_family(&Escaped(&labels))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "gort_http_request_blocked",
            "Time goroutines were parked while serving HTTP requests (counted when the request \
             completes), by wait reason; divided by gort_http_requests_total it is the blocked \
             time per request.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, _, ns) in per_request_reason() {
            ConstCounter::new(ns as f64 / 1e9).encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_target_up",
            "1 while gort watches the process, 0 once it has exited (its series stay for the \
             retention period).",
            None,
            MetricType::Gauge,
        )?;
        for p in &view.processes {
            let labels: Labels = process_labels(p, []);
            ConstGauge::new(i64::from(!p.exited))
                .encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gort_events_lost",
            "Events the kernel side or the agent could not deliver, by cause. Should stay 0.",
            None,
            MetricType::Counter,
        )?;
        for (cause, n) in &view.lost {
            let labels: Labels = vec![("cause", cause.to_string())];
            ConstCounter::new(*n).encode(family.encode_family(&Escaped(&labels))?)?;
        }

        for (name, help, pick) in [
            (
                "gort_export_sent",
                "Requests exported as spans (with their block spans), and metrics exports, sent over \
                 OTLP.",
                0,
            ),
            (
                "gort_export_dropped",
                "Requests whose spans, and metrics exports, the OTLP exporter dropped (queue full or \
                 the receiver failing).",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (signal, sent, dropped) in &view.export {
                let labels: Labels = vec![("signal", signal.to_string())];
                ConstCounter::new(if pick == 0 { *sent } else { *dropped })
                    .encode(family.encode_family(&Escaped(&labels))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gort_probe_events",
            "Probe hits seen by the kernel side, by kind (parks; resumes of parks seen; resumes \
             of parks that began before gort attached).",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in &view.probe_stats {
            let labels: Labels = vec![("kind", kind.to_string())];
            ConstCounter::new(*n).encode(family.encode_family(&Escaped(&labels))?)?;
        }

        let family = encoder.encode_descriptor(
            "gort_events_unattributed",
            "Probe events left out because no program gort tracks owned them: late events of a \
             program that exited or was replaced by an exec or a reused pid.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(view.unattributed).encode(family)?;

        if let Some(sampling) = &view.sampling {
            // Each estimate as a counter of its own, with the labels of the count it
            // estimates: `rate(x_estimated_total) or rate(x_total)` takes it where it exists.
            let mut estimated = |name: &str,
                                 help: &str,
                                 unit: Option<&Unit>,
                                 series: Vec<(Labels, f64)>|
             -> Result<(), std::fmt::Error> {
                let mut family =
                    encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
                for (labels, value) in series {
                    ConstCounter::new(value).encode(family.encode_family(&Escaped(&labels))?)?;
                }
                Ok(())
            };
            // Each process's (reason, parks, seconds) list, as series of parks or seconds.
            let per_reason = |list: fn(&ProcessMetrics) -> &[ReasonEstimate], secs: bool| {
                view.processes
                    .iter()
                    .flat_map(|p| {
                        list(p).iter().map(move |(reason, n, s)| {
                            let labels = process_labels(p, [("reason", reason.clone())]);
                            (labels, if secs { *s } else { *n })
                        })
                    })
                    .collect::<Vec<_>>()
            };
            fn parks(p: &ProcessMetrics) -> &[ReasonEstimate] {
                &p.estimates.by_reason
            }
            fn in_requests(p: &ProcessMetrics) -> &[ReasonEstimate] {
                p.estimates.requests.as_ref().map_or(&[], |r| &r.1)
            }
            estimated(
                "gort_goroutine_blocks_estimated",
                "Under --overhead-budget: parks estimated from the sampled ones (each weighted \
                 by the inverse of its chance to be seen whole), by wait reason. An estimate; \
                 gort_goroutine_blocks_total counts the parks seen.",
                None,
                per_reason(parks, false),
            )?;
            estimated(
                "gort_goroutine_blocked_estimated",
                "Under --overhead-budget: blocked time estimated from the sampled parks, by wait \
                 reason. An estimate.",
                Some(&Unit::Seconds),
                per_reason(parks, true),
            )?;
            let by_site = |secs: bool| {
                view.processes
                    .iter()
                    .flat_map(|p| {
                        p.estimates.by_site.iter().map(move |(reason, site, n, s)| {
                            let labels = process_labels(
                                p,
                                [("reason", reason.clone()), ("site", site.clone())],
                            );
                            (labels, if secs { *s } else { *n })
                        })
                    })
                    .collect::<Vec<_>>()
            };
            estimated(
                "gort_goroutine_site_blocks_estimated",
                "Under --overhead-budget: gort_goroutine_site_blocks_total estimated from the \
                 sampled parks.",
                None,
                by_site(false),
            )?;
            estimated(
                "gort_goroutine_site_blocked_estimated",
                "Under --overhead-budget: gort_goroutine_site_blocked_seconds_total estimated \
                 from the sampled parks.",
                Some(&Unit::Seconds),
                by_site(true),
            )?;
            for (name, help, exited) in [
                (
                    "gort_goroutines_created_estimated",
                    "Under --overhead-budget: goroutines created, estimated from the creations \
                     seen while the probes were in.",
                    false,
                ),
                (
                    "gort_goroutines_exited_estimated",
                    "Under --overhead-budget: goroutines exited, estimated from the exits seen \
                     while the probes were in.",
                    true,
                ),
            ] {
                let series = view
                    .processes
                    .iter()
                    .filter_map(|p| {
                        let (created, gone) = p.estimates.lifecycle?;
                        Some((process_labels(p, []), if exited { gone } else { created }))
                    })
                    .collect();
                estimated(name, help, None, series)?;
            }
            estimated(
                "gort_http_requests_estimated",
                "Under --overhead-budget: HTTP requests served, estimated from the requests seen \
                 whole while the probes were in.",
                None,
                view.processes
                    .iter()
                    .filter_map(|p| Some((process_labels(p, []), p.estimates.requests.as_ref()?.0)))
                    .collect(),
            )?;
            estimated(
                "gort_http_request_blocks_estimated",
                "Under --overhead-budget: gort_http_request_blocks_total estimated from the \
                 requests seen whole.",
                None,
                per_reason(in_requests, false),
            )?;
            estimated(
                "gort_http_request_blocked_estimated",
                "Under --overhead-budget: gort_http_request_blocked_seconds_total estimated \
                 from the requests seen whole.",
                Some(&Unit::Seconds),
                per_reason(in_requests, true),
            )?;
            let of: Labels = vec![("of", sampling.budget_of.to_string())];
            for (name, help, value, labels) in [
                (
                    "gort_sampling_ratio",
                    "Share of the time gort's probes are attached (time sampling under \
                     --overhead-budget; 1: everything is measured).",
                    Some(sampling.ratio),
                    None,
                ),
                (
                    "gort_overhead_budget_ratio",
                    "The --overhead-budget: share of the CPU gort may cost, of the host's (of=\"host\") \
                     or of the targets' own use (of=\"targets\", --overhead-budget-of targets).",
                    Some(sampling.budget_share),
                    Some(&of),
                ),
                (
                    "gort_overhead_ratio",
                    "What gort cost in the last sampling period, as a share of the CPU its budget \
                     is of, measured: the targets' CPU beyond their own use (read while the probes \
                     were out), the hits of the probes that stay in (GC, panics) and gort's own \
                     CPU (of=\"host\").",
                    sampling.estimated_share,
                    Some(&of),
                ),
                (
                    "gort_uprobe_hit_cost_seconds",
                    "What one uprobe hit costs the probed thread on this host: measured at start, then in \
                     the targets while the probes are in, when more.",
                    Some(sampling.trap_cost_seconds),
                    None,
                ),
            ] {
                let Some(value) = value else { continue };
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                match labels {
                    Some(labels) => {
                        ConstGauge::new(value).encode(family.encode_family(&Escaped(labels))?)?
                    }
                    None => ConstGauge::new(value).encode(family)?,
                }
            }
            let family = encoder.encode_descriptor(
                "gort_sampling_periods",
                "Sampling periods completed under --overhead-budget.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(sampling.periods).encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{
        histogram::DurationHistogram,
        view::{Exemplar, ProcessMetrics, ReasonMetrics},
    };

    /// One process with one reason, every family attached.
    fn contract_view() -> MetricsView {
        let mut h = DurationHistogram::default();
        h.record(20_000_000);
        h.record(30_000_000);
        MetricsView {
            processes: vec![ProcessMetrics {
                pid: 42,
                service: "checkout".into(),
                exe: "/srv/checkout".into(),
                container: Default::default(),
                first_seen_unix_ns: 0,
                exited: false,
                estimates: Default::default(),
                reasons: vec![ReasonMetrics {
                    reason: "chan \"receive\"".into(),
                    histogram: h,
                    parked_now: 3,
                    exemplars: vec![Exemplar {
                        bucket: 13,
                        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                        span_id: "00f067aa0ba902b7".into(),
                        seconds: 0.02,
                        unix_ns: 1_700_000_000_123_000_000,
                    }],
                }],
                sched_latency: None,
                pauses: vec![],
                gc_cycles: 0,
                gc_mark: DurationHistogram::default(),
                gc_probed: true,
                goroutines_system: 4,
                goroutines_user: 10,
                lifecycle: Some((12, 2)),
                leak_suspects: vec![("chan receive".into(), "main.leak main.go:42".into(), 300)],
                sites: vec![],
                panics: Some(vec![(true, "main.handle main.go:7".into(), 2)]),
                requests: Some(crate::aggregate::view::RequestCounts {
                    completed: 5,
                    traceparent_invalid: 1,
                    ..Default::default()
                }),
            }],
            lost: vec![("ringbuf_full", 0)],
            probe_stats: vec![("parks", 5)],
            unattributed: 0,
            sampling: None,
            export: vec![],
        }
    }

    #[test]
    fn encodes_the_contract() {
        let view = contract_view();
        let text = encode(view);
        let l = r#"pid="42",service="checkout",reason="chan \"receive\"""#;
        for line in [
            format!("gort_goroutine_blocks_total{{{l}}} 2"),
            format!("gort_goroutine_blocked_seconds_total{{{l}}} 0.05"),
            format!("gort_goroutine_block_duration_seconds_count{{{l}}} 2"),
            format!("gort_goroutine_block_duration_seconds_bucket{{{l},le=\"0.01\"}} 0"),
            format!(
                "gort_goroutine_block_duration_seconds_bucket{{{l},le=\"0.025\"}} 1 # \
                 {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"}} \
                 0.02 1700000000.123"
            ),
            format!("gort_goroutine_block_duration_seconds_bucket{{{l},le=\"0.05\"}} 2"),
            format!("gort_goroutine_block_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
            "# TYPE gort_goroutine_block_duration_seconds histogram".to_string(),
            format!("gort_goroutines_blocked{{{l}}} 3"),
            "gort_events_lost_total{cause=\"ringbuf_full\"} 0".to_string(),
            "gort_target_up{pid=\"42\",service=\"checkout\"} 1".to_string(),
            "gort_goroutines{pid=\"42\",service=\"checkout\",kind=\"user\"} 10".to_string(),
            "gort_goroutines_created_total{pid=\"42\",service=\"checkout\"} 12".to_string(),
            "gort_panics_total{pid=\"42\",service=\"checkout\",recovered=\"true\",site=\"main.handle main.go:7\"} 2".to_string(),
            "gort_goroutine_leak_suspects{pid=\"42\",service=\"checkout\",reason=\"chan receive\",created_by=\"main.leak main.go:42\"} 300".to_string(),
        ] {
            assert!(
                text.lines().any(|x| x == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    /// Under a budget, each estimate is a counter with the labels of the count it estimates.
    #[test]
    fn encodes_estimates_under_sampling() {
        let mut view = contract_view();
        view.sampling = Some(crate::aggregate::view::SamplingMetrics {
            ratio: 0.25,
            budget_share: 0.02,
            budget_of: "host",
            estimated_share: Some(0.019),
            trap_cost_seconds: 3e-6,
            periods: 7,
        });
        view.processes[0].estimates = crate::aggregate::view::EstimateMetrics::example();
        let text = encode(view);
        let p = r#"pid="42",service="checkout""#;
        for line in [
            format!("gort_goroutine_blocks_estimated_total{{{p},reason=\"chan receive\"}} 8.5"),
            format!(
                "gort_goroutine_blocked_estimated_seconds_total{{{p},reason=\"chan receive\"}} 0.25"
            ),
            format!(
                "gort_goroutine_site_blocks_estimated_total{{{p},reason=\"chan receive\",site=\"main.wait main.go:9\"}} 4.0"
            ),
            format!(
                "gort_goroutine_site_blocked_estimated_seconds_total{{{p},reason=\"chan receive\",site=\"main.wait main.go:9\"}} 0.5"
            ),
            format!("gort_goroutines_created_estimated_total{{{p}}} 48.0"),
            format!("gort_goroutines_exited_estimated_total{{{p}}} 40.5"),
            format!("gort_http_requests_estimated_total{{{p}}} 20.0"),
            format!("gort_http_request_blocks_estimated_total{{{p},reason=\"IO wait\"}} 60.0"),
            format!(
                "gort_http_request_blocked_estimated_seconds_total{{{p},reason=\"IO wait\"}} 1.5"
            ),
            "gort_sampling_ratio 0.25".to_string(),
            "gort_overhead_budget_ratio{of=\"host\"} 0.02".to_string(),
            "gort_overhead_ratio{of=\"host\"} 0.019".to_string(),
            "gort_sampling_periods_total 7".to_string(),
            "# TYPE gort_goroutine_block_duration_estimated_seconds histogram".to_string(),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_bucket{{{p},reason=\"chan receive\",le=\"0.001\"}} 0"
            ),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_bucket{{{p},reason=\"chan receive\",le=\"0.0025\"}} 6"
            ),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_bucket{{{p},reason=\"chan receive\",le=\"0.025\"}} 9"
            ),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_bucket{{{p},reason=\"chan receive\",le=\"+Inf\"}} 9"
            ),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_count{{{p},reason=\"chan receive\"}} 9"
            ),
            format!(
                "gort_goroutine_block_duration_estimated_seconds_sum{{{p},reason=\"chan receive\"}} 0.062"
            ),
        ] {
            assert!(
                text.lines().any(|x| x == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Only under a budget.
        assert!(!encode(contract_view()).contains("_estimated_"));
    }
}
