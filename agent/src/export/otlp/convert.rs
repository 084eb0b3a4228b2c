//! gort's records and metrics as OTLP messages (the official protobuf definitions, from
//! `opentelemetry-proto`): pure conversions, tested by decoding what they encode.
//!
//! Names follow the OpenTelemetry semantic conventions where they exist for the Go runtime
//! (`go.goroutine.count`, `go.schedule.duration`), `gort.` otherwise.

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind},
};

use crate::aggregate::{
    histogram::DurationHistogram,
    requests::RequestRecord,
    view::{MetricsView, ProcessMetrics, ReasonEstimate, SamplingMetrics},
};
use crate::target::process::ContainerIdentity;

/// Who a process is, as OTLP resource attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessResource {
    pub pid: u32,
    pub service: String,
    pub exe: String,
    pub container: ContainerIdentity,
}

pub fn kv(key: &str, value: impl Into<any_value::Value>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(value.into()),
        }),
        ..Default::default()
    }
}

fn resource(p: &ProcessResource, host: &str) -> Resource {
    let exe_name = p
        .exe
        .rsplit('/')
        .next()
        .unwrap_or(&p.exe)
        .trim_end_matches(" (deleted)")
        .to_string();
    Resource {
        attributes: vec![
            kv(
                "service.name",
                any_value::Value::StringValue(p.service.clone()),
            ),
            kv("process.pid", any_value::Value::IntValue(i64::from(p.pid))),
            kv(
                "process.executable.name",
                any_value::Value::StringValue(exe_name),
            ),
            kv(
                "process.executable.path",
                any_value::Value::StringValue(p.exe.clone()),
            ),
            kv("host.name", any_value::Value::StringValue(host.to_string())),
        ]
        .into_iter()
        .chain(
            p.container
                .container_id
                .as_ref()
                .map(|id| kv("container.id", any_value::Value::StringValue(id.clone()))),
        )
        .chain(
            [
                ("k8s.pod.uid", &p.container.pod_uid),
                ("k8s.namespace.name", &p.container.k8s_namespace),
                ("k8s.pod.name", &p.container.k8s_pod),
                ("k8s.container.name", &p.container.k8s_container),
            ]
            .into_iter()
            .filter_map(|(key, value)| {
                value
                    .as_ref()
                    .map(|v| kv(key, any_value::Value::StringValue(v.clone())))
            }),
        )
        .collect(),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "gort".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// `chan receive` → `chan_receive`: a reason as part of an attribute key.
fn slug(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// One server span per request (child of the caller's span, in the request's trace), and a
/// child span per block of at least `--span-min-block`, named `block <reason>`.
pub fn spans(
    records: &[(ProcessResource, RequestRecord)],
    host: &str,
) -> ExportTraceServiceRequest {
    let mut by_process: Vec<(ProcessResource, Vec<Span>)> = Vec::new();
    for (p, r) in records {
        let trace_id = hex_bytes(&r.trace_id);
        let span_id = hex_bytes(&r.span_id);
        let name = match &r.route {
            Some(route) if route.starts_with(&r.method) => route.clone(),
            Some(route) => format!("{} {route}", r.method),
            None => r.method.clone(),
        };
        let mut attributes = vec![
            kv(
                "http.request.method",
                any_value::Value::StringValue(r.method.clone()),
            ),
            kv(
                "gort.goroutine.id",
                any_value::Value::IntValue(r.goid as i64),
            ),
            kv(
                "gort.blocked.ns",
                any_value::Value::IntValue(r.blocked_ns as i64),
            ),
            kv(
                "gort.trace_id_generated",
                any_value::Value::BoolValue(r.trace_id_generated),
            ),
        ];
        if let Some(route) = &r.route {
            attributes.push(kv(
                "http.route",
                any_value::Value::StringValue(route.clone()),
            ));
        }
        for b in &r.blocking {
            let s = slug(&b.reason);
            attributes.push(kv(
                &format!("gort.blocked.{s}.ns"),
                any_value::Value::IntValue(b.blocked_ns as i64),
            ));
            attributes.push(kv(
                &format!("gort.blocked.{s}.count"),
                any_value::Value::IntValue(b.count as i64),
            ));
        }
        let mut spans = vec![Span {
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: r
                .parent_span_id
                .as_deref()
                .map(hex_bytes)
                .unwrap_or_default(),
            // Trace flags, and whether the parent is remote (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE
            // and _IS_REMOTE): it is, when the caller sent one.
            flags: u32::from(r.trace_flags)
                | 0x100
                | if r.parent_span_id.is_some() { 0x200 } else { 0 },
            name,
            kind: SpanKind::Server as i32,
            start_time_unix_nano: r.start_unix_ns,
            end_time_unix_nano: r.end_unix_ns,
            attributes,
            ..Default::default()
        }];
        for b in &r.block_spans {
            let mut attributes = vec![kv(
                "gort.wait_reason",
                any_value::Value::StringValue(b.reason.clone()),
            )];
            if let Some(f) = &b.frame {
                attributes.push(kv(
                    "code.function.name",
                    any_value::Value::StringValue(f.function.clone()),
                ));
                attributes.push(kv(
                    "code.file.path",
                    any_value::Value::StringValue(f.file.clone()),
                ));
                attributes.push(kv(
                    "code.line.number",
                    any_value::Value::IntValue(i64::from(f.line)),
                ));
            }
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: crate::aggregate::requests::random_id()[..8].to_vec(),
                parent_span_id: span_id.clone(),
                flags: u32::from(r.trace_flags) | 0x100,
                name: format!("block {}", b.reason),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: b.start_unix_ns,
                end_time_unix_nano: b.end_unix_ns,
                attributes,
                ..Default::default()
            });
        }
        match by_process.iter_mut().find(|(q, _)| q == p) {
            Some((_, s)) => s.extend(spans),
            None => by_process.push((p.clone(), spans)),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_process
            .into_iter()
            .map(|(p, spans)| ResourceSpans {
                resource: Some(resource(&p, host)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Everything /metrics shows, as OTLP metrics (cumulative, from when gort began watching).
pub fn metrics(view: &MetricsView, host: &str, now_unix_ns: u64) -> ExportMetricsServiceRequest {
    let resource_metrics = view
        .processes
        .iter()
        .map(|p| {
            let r = ProcessResource {
                pid: p.pid,
                service: p.service.clone(),
                exe: p.exe.clone(),
                container: p.container.clone(),
            };
            ResourceMetrics {
                resource: Some(resource(&r, host)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: process_metrics(p, view.sampling.as_ref(), now_unix_ns),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn process_metrics(
    p: &ProcessMetrics,
    sampling: Option<&SamplingMetrics>,
    now: u64,
) -> Vec<Metric> {
    let start = p.first_seen_unix_ns;
    let attr = |k: &str, v: &str| kv(k, any_value::Value::StringValue(v.to_string()));
    let point = |attributes: Vec<KeyValue>, value: number_data_point::Value| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(value),
        ..Default::default()
    };
    let counter = |name: &str, unit: &str, help: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        unit: unit.into(),
        description: help.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let gauge = |name: &str, unit: &str, help: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        unit: unit.into(),
        description: help.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let histogram = |name: &str, help: &str, points: Vec<HistogramDataPoint>| Metric {
        name: name.into(),
        unit: "s".into(),
        description: help.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let hist_point = |attributes: Vec<KeyValue>, buckets: Vec<(f64, u64)>, sum: f64, count: u64| {
        // OTLP bucket counts are per bucket, with the explicit bounds between them; the last
        // (+Inf) has no bound.
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| *b < f64::MAX)
            .collect();
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: now,
            count,
            sum: Some(sum),
            bucket_counts: buckets.iter().map(|(_, c)| *c).collect(),
            explicit_bounds: bounds,
            ..Default::default()
        }
    };
    let dur = |h: &DurationHistogram| (h.buckets_seconds(), h.sum_ns() as f64 / 1e9, h.count());
    let int = |n: u64| number_data_point::Value::AsInt(n as i64);

    let mut out = Vec::new();
    let reason = |r: &str| vec![attr("go.wait.reason", r)];
    out.push(counter(
        "gort.goroutine.blocks",
        "{park}",
        "Completed goroutine parks, by the runtime's wait reason.",
        p.reasons
            .iter()
            .map(|r| point(reason(&r.reason), int(r.histogram.count())))
            .collect(),
    ));
    out.push(counter(
        "gort.goroutine.blocked.time",
        "s",
        "Time goroutines spent parked (park to running), by wait reason.",
        p.reasons
            .iter()
            .map(|r| {
                point(
                    reason(&r.reason),
                    number_data_point::Value::AsDouble(r.histogram.sum_ns() as f64 / 1e9),
                )
            })
            .collect(),
    ));
    out.push(histogram(
        "gort.goroutine.block.duration",
        "Park durations (park to running), by wait reason.",
        p.reasons
            .iter()
            .map(|r| {
                let (b, s, c) = dur(&r.histogram);
                HistogramDataPoint {
                    // The newest block inside a traced request, per bucket.
                    exemplars: r
                        .exemplars
                        .iter()
                        .map(|e| Exemplar {
                            time_unix_nano: e.unix_ns,
                            span_id: hex_bytes(&e.span_id),
                            trace_id: hex_bytes(&e.trace_id),
                            value: Some(exemplar::Value::AsDouble(e.seconds)),
                            ..Default::default()
                        })
                        .collect(),
                    ..hist_point(reason(&r.reason), b, s, c)
                }
            })
            .collect(),
    ));
    out.push(gauge(
        "gort.goroutines.blocked",
        "{goroutine}",
        "Goroutines parked right now, by wait reason.",
        p.reasons
            .iter()
            .map(|r| point(reason(&r.reason), int(r.parked_now)))
            .collect(),
    ));
    if let Some(h) = &p.sched_latency {
        out.push(histogram(
            "go.schedule.duration",
            "Time goroutines spent runnable before running (the runtime's own histogram).",
            vec![hist_point(
                vec![],
                h.export_buckets(),
                h.estimated_sum_seconds(),
                h.count(),
            )],
        ));
    }
    out.push(Metric {
        name: "go.goroutine.count".into(),
        unit: "{goroutine}".into(),
        description: "Live goroutines (user: as runtime.NumGoroutine counts them; system: the runtime's own)."
            .into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![
                point(vec![attr("gort.goroutine.kind", "user")], int(p.goroutines_user)),
                point(vec![attr("gort.goroutine.kind", "system")], int(p.goroutines_system)),
            ],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: false,
        })),
        ..Default::default()
    });
    if let Some((created, exited)) = p.lifecycle {
        out.push(counter(
            "gort.goroutines.created",
            "{goroutine}",
            "Goroutines created.",
            vec![point(vec![], int(created))],
        ));
        out.push(counter(
            "gort.goroutines.exited",
            "{goroutine}",
            "Goroutines exited.",
            vec![point(vec![], int(exited))],
        ));
    }
    if p.gc_probed {
        out.push(counter(
            "gort.gc.cycles",
            "{cycle}",
            "Completed GC cycles.",
            vec![point(vec![], int(p.gc_cycles))],
        ));
        let (b, s, c) = dur(&p.gc_mark);
        out.push(histogram(
            "gort.gc.mark.duration",
            "The concurrent mark phase of GC cycles.",
            vec![hist_point(vec![], b, s, c)],
        ));
        out.push(histogram(
            "gort.stw.pause.duration",
            "Stop-the-world pauses, by the runtime's reason.",
            p.pauses
                .iter()
                .map(|(r, h)| {
                    let (b, s, c) = dur(h);
                    hist_point(vec![attr("gort.stw.reason", r)], b, s, c)
                })
                .collect(),
        ));
    }
    out.push(gauge(
        "gort.goroutine.leak.suspects",
        "{goroutine}",
        "Goroutines in leak suspect groups.",
        p.leak_suspects
            .iter()
            .map(|(r, site, n)| {
                point(
                    vec![attr("go.wait.reason", r), attr("gort.created_by", site)],
                    int(*n),
                )
            })
            .collect(),
    ));
    let site_attrs =
        |reason: &str, site: &str| vec![attr("go.wait.reason", reason), attr("gort.site", site)];
    out.push(counter(
        "gort.goroutine.site.blocks",
        "{park}",
        "Parks of at least --frame-min-block by wait reason and call site.",
        p.sites
            .iter()
            .map(|(reason, site, count, _)| point(site_attrs(reason, site), int(*count)))
            .collect(),
    ));
    out.push(counter(
        "gort.goroutine.site.blocked",
        "s",
        "Time parked in parks of at least --frame-min-block by wait reason and call site.",
        p.sites
            .iter()
            .map(|(reason, site, _, ns)| {
                point(
                    site_attrs(reason, site),
                    number_data_point::Value::AsDouble(*ns as f64 / 1e9),
                )
            })
            .collect(),
    ));
    if let Some(panics) = &p.panics {
        out.push(counter(
            "gort.panics",
            "{panic}",
            "Panics once recovered or fatal, and fatal errors.",
            panics
                .iter()
                .map(|(rec, site, n)| {
                    point(
                        vec![
                            kv("gort.panic.recovered", any_value::Value::BoolValue(*rec)),
                            attr("gort.panic.site", site),
                        ],
                        int(*n),
                    )
                })
                .collect(),
        ));
    }
    if let Some(counts) = &p.requests {
        let (requests, invalid) = (counts.completed, counts.traceparent_invalid);
        out.push(counter(
            "gort.http.requests",
            "{request}",
            "HTTP requests served.",
            vec![point(vec![], int(requests))],
        ));
        out.push(counter(
            "gort.traceparent.invalid",
            "{request}",
            "Requests with a malformed traceparent.",
            vec![point(vec![], int(invalid))],
        ));
        let reason = |r: &str| vec![attr("go.wait.reason", r)];
        out.push(counter(
            "gort.http.request.blocks",
            "{park}",
            "Parks of goroutines while serving HTTP requests (completed requests), by wait reason.",
            counts
                .blocked
                .iter()
                .map(|(r, count, _)| point(reason(r), int(*count)))
                .collect(),
        ));
        out.push(counter(
            "gort.http.request.blocked",
            "s",
            "Time goroutines were parked while serving HTTP requests (completed requests), by \
             wait reason.",
            counts
                .blocked
                .iter()
                .map(|(r, _, ns)| {
                    point(
                        reason(r),
                        number_data_point::Value::AsDouble(*ns as f64 / 1e9),
                    )
                })
                .collect(),
        ));
    }
    if let Some(sampling) = sampling {
        estimated_metrics(p, sampling, &point, &counter, &gauge, &mut out);
        out.push(histogram(
            "gort.goroutine.block.duration.estimated",
            "Under --overhead-budget: gort.goroutine.block.duration estimated from the sampled \
             parks (each weighted by the inverse of its chance to be seen whole); buckets \
             rounded.",
            p.estimates
                .durations
                .iter()
                .map(|(r, h)| hist_point(reason(r), h.per_bucket(), h.sum_seconds(), h.count()))
                .collect(),
        ));
    }
    out
}

/// Builds a counter or gauge: (name, unit, description, points).
type MetricOf<'a> = &'a dyn Fn(&str, &str, &str, Vec<NumberDataPoint>) -> Metric;

/// Under `--overhead-budget`: the estimates of the sampled counts (`*.estimated`, with the
/// attributes of the count each estimates) and the sampling ratio, as on /metrics.
fn estimated_metrics(
    p: &ProcessMetrics,
    sampling: &SamplingMetrics,
    point: &dyn Fn(Vec<KeyValue>, number_data_point::Value) -> NumberDataPoint,
    counter: MetricOf,
    gauge: MetricOf,
    out: &mut Vec<Metric>,
) {
    let attr = |k: &str, v: &str| kv(k, any_value::Value::StringValue(v.to_string()));
    let double = number_data_point::Value::AsDouble;
    let e = &p.estimates;
    // (reason, parks, seconds) as points of parks or of seconds.
    let per_reason = |list: &[ReasonEstimate], secs: bool| {
        list.iter()
            .map(|(r, n, s)| {
                point(
                    vec![attr("go.wait.reason", r)],
                    double(if secs { *s } else { *n }),
                )
            })
            .collect()
    };
    out.push(counter(
        "gort.goroutine.blocks.estimated",
        "{park}",
        "Under --overhead-budget: gort.goroutine.blocks estimated from the sampled parks.",
        per_reason(&e.by_reason, false),
    ));
    out.push(counter(
        "gort.goroutine.blocked.time.estimated",
        "s",
        "Under --overhead-budget: gort.goroutine.blocked.time estimated from the sampled parks.",
        per_reason(&e.by_reason, true),
    ));
    let by_site = |secs: bool| {
        e.by_site
            .iter()
            .map(|(r, site, n, s)| {
                point(
                    vec![attr("go.wait.reason", r), attr("gort.site", site)],
                    double(if secs { *s } else { *n }),
                )
            })
            .collect()
    };
    out.push(counter(
        "gort.goroutine.site.blocks.estimated",
        "{park}",
        "Under --overhead-budget: gort.goroutine.site.blocks estimated from the sampled parks.",
        by_site(false),
    ));
    out.push(counter(
        "gort.goroutine.site.blocked.estimated",
        "s",
        "Under --overhead-budget: gort.goroutine.site.blocked estimated from the sampled parks.",
        by_site(true),
    ));
    if let Some((created, exited)) = e.lifecycle {
        out.push(counter(
            "gort.goroutines.created.estimated",
            "{goroutine}",
            "Under --overhead-budget: goroutines created, estimated.",
            vec![point(vec![], double(created))],
        ));
        out.push(counter(
            "gort.goroutines.exited.estimated",
            "{goroutine}",
            "Under --overhead-budget: goroutines exited, estimated.",
            vec![point(vec![], double(exited))],
        ));
    }
    if let Some((requests, blocked)) = &e.requests {
        out.push(counter(
            "gort.http.requests.estimated",
            "{request}",
            "Under --overhead-budget: HTTP requests served, estimated.",
            vec![point(vec![], double(*requests))],
        ));
        out.push(counter(
            "gort.http.request.blocks.estimated",
            "{park}",
            "Under --overhead-budget: gort.http.request.blocks estimated.",
            per_reason(blocked, false),
        ));
        out.push(counter(
            "gort.http.request.blocked.estimated",
            "s",
            "Under --overhead-budget: gort.http.request.blocked estimated.",
            per_reason(blocked, true),
        ));
    }
    out.push(gauge(
        "gort.sampling.ratio",
        "1",
        "Share of the time gort's probes are attached (1: everything is measured).",
        vec![point(vec![], double(sampling.ratio))],
    ));
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::aggregate::{
        requests::{BlockSpan, LongestBlock, RequestBlocking},
        symbols::Frame,
        view::ReasonMetrics,
    };

    fn process() -> ProcessResource {
        ProcessResource {
            pid: 42,
            service: "shop".into(),
            exe: "/srv/bin/shop".into(),
            container: ContainerIdentity {
                container_id: Some("ab".repeat(32)),
                ..Default::default()
            },
        }
    }

    #[test]
    fn kubernetes_names_are_resource_attributes() {
        let mut p = process();
        p.container.pod_uid = Some("1f2e3d4c-0000-4000-8000-00000000abcd".into());
        p.container.k8s_namespace = Some("shop".into());
        p.container.k8s_pod = Some("checkout-5f7d9".into());
        p.container.k8s_container = Some("api".into());
        let res = resource(&p, "node-1");
        let text = |k: &str| match string_attr(&res.attributes, k) {
            Some(any_value::Value::StringValue(v)) => Some(v.clone()),
            _ => None,
        };
        assert_eq!(
            text("k8s.pod.uid").as_deref(),
            Some("1f2e3d4c-0000-4000-8000-00000000abcd")
        );
        assert_eq!(text("k8s.namespace.name").as_deref(), Some("shop"));
        assert_eq!(text("k8s.pod.name").as_deref(), Some("checkout-5f7d9"));
        assert_eq!(text("k8s.container.name").as_deref(), Some("api"));
        assert_eq!(text("host.name").as_deref(), Some("node-1"));
    }

    fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn record(parent: Option<&str>) -> RequestRecord {
        RequestRecord {
            kind: "request",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            parent_span_id: parent.map(str::to_string),
            trace_id_generated: parent.is_none(),
            span_id: "0102030405060708".into(),
            trace_flags: 1,
            pid: 42,
            service: "shop".into(),
            goid: 36,
            method: "GET".into(),
            route: Some("GET /items/{id}".into()),
            start_ns: 0,
            end_ns: 0,
            start_unix_ns: 1_000,
            end_unix_ns: 61_000_000,
            duration_ns: 60_999_000,
            blocked_ns: 60_000_000,
            blocking: vec![RequestBlocking {
                reason: "chan receive".into(),
                count: 2,
                blocked_ns: 60_000_000,
            }],
            longest_block: Some(LongestBlock {
                reason: "chan receive".into(),
                ns: 50_000_000,
                frame: None,
            }),
            block_spans: vec![BlockSpan {
                reason: "chan receive".into(),
                start_unix_ns: 2_000,
                end_unix_ns: 50_002_000,
                frame: Some(Frame {
                    function: "main.handler".into(),
                    file: "/src/main.go".into(),
                    line: 31,
                }),
            }],
        }
    }

    #[test]
    fn a_request_is_a_server_span_with_a_child_per_long_block() {
        let encoded = spans(
            &[
                (process(), record(Some("00f067aa0ba902b7"))),
                (process(), record(None)),
            ],
            "node-1",
        )
        .encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(&encoded[..]).unwrap();
        assert_eq!(decoded.resource_spans.len(), 1, "one resource per process");
        let rs = &decoded.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(
            string_attr(res, "service.name"),
            Some(&any_value::Value::StringValue("shop".into()))
        );
        assert_eq!(
            string_attr(res, "process.executable.name"),
            Some(&any_value::Value::StringValue("shop".into()))
        );
        assert_eq!(
            string_attr(res, "process.pid"),
            Some(&any_value::Value::IntValue(42))
        );
        assert_eq!(
            string_attr(res, "container.id"),
            Some(&any_value::Value::StringValue("ab".repeat(32)))
        );
        assert_eq!(string_attr(res, "k8s.pod.uid"), None);
        assert_eq!(string_attr(res, "k8s.pod.name"), None);
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        let (server, block) = (&spans[0], &spans[1]);
        assert_eq!(
            server.trace_id,
            hex_bytes("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(server.parent_span_id, hex_bytes("00f067aa0ba902b7"));
        assert_eq!(server.span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(server.name, "GET /items/{id}");
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.flags, 0x301);
        assert_eq!(
            string_attr(&server.attributes, "gort.blocked.chan_receive.ns"),
            Some(&any_value::Value::IntValue(60_000_000))
        );
        assert_eq!(block.trace_id, server.trace_id);
        assert_eq!(block.parent_span_id, server.span_id);
        assert_eq!(block.span_id.len(), 8);
        assert_eq!(block.name, "block chan receive");
        assert_eq!(
            (block.start_time_unix_nano, block.end_time_unix_nano),
            (2_000, 50_002_000)
        );
        assert_eq!(
            string_attr(&block.attributes, "code.function.name"),
            Some(&any_value::Value::StringValue("main.handler".into()))
        );
        // Without an incoming parent: a root span, not marked remote.
        assert!(spans[2].parent_span_id.is_empty());
        assert_eq!(spans[2].flags, 0x101);
    }

    #[test]
    fn histograms_carry_per_bucket_counts_between_explicit_bounds() {
        let view = one_process_view();
        let decoded =
            ExportMetricsServiceRequest::decode(&metrics(&view, "n", 9).encode_to_vec()[..])
                .unwrap();
        let ms = &decoded.resource_metrics[0].scope_metrics[0].metrics;
        assert!(!ms.iter().any(|m| m.name.ends_with(".estimated")));
        histograms_checked(ms);
    }

    /// Under a budget, the estimates ride along, with the count's attributes.
    #[test]
    fn estimates_under_sampling() {
        let mut view = one_process_view();
        view.sampling = Some(SamplingMetrics {
            ratio: 0.25,
            budget_share: 0.02,
            budget_of: "host",
            estimated_share: None,
            trap_cost_seconds: 3e-6,
            periods: 3,
        });
        view.processes[0].estimates = crate::aggregate::view::EstimateMetrics::example();
        let decoded =
            ExportMetricsServiceRequest::decode(&metrics(&view, "n", 9).encode_to_vec()[..])
                .unwrap();
        let ms = &decoded.resource_metrics[0].scope_metrics[0].metrics;
        let value = |name: &str, reason: Option<&str>| -> f64 {
            let m = ms
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name}"));
            let points = match &m.data {
                Some(metric::Data::Sum(s)) => {
                    assert!(s.is_monotonic, "{name}");
                    &s.data_points
                }
                Some(metric::Data::Gauge(g)) => &g.data_points,
                _ => panic!("{name}"),
            };
            let p = points
                .iter()
                .find(|p| {
                    reason.is_none_or(|r| {
                        p.attributes.iter().any(|a| {
                            a.key == "go.wait.reason"
                                && a.value.as_ref().and_then(|v| v.value.clone())
                                    == Some(any_value::Value::StringValue(r.into()))
                        })
                    })
                })
                .unwrap_or_else(|| panic!("{name} {reason:?}"));
            match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => panic!("{name}: not a double"),
            }
        };
        assert_eq!(
            value("gort.goroutine.blocks.estimated", Some("chan receive")),
            8.5
        );
        assert_eq!(
            value(
                "gort.goroutine.blocked.time.estimated",
                Some("chan receive")
            ),
            0.25
        );
        assert_eq!(
            value(
                "gort.goroutine.site.blocked.estimated",
                Some("chan receive")
            ),
            0.5
        );
        assert_eq!(value("gort.goroutines.created.estimated", None), 48.0);
        let Some(metric::Data::Histogram(h)) = &ms
            .iter()
            .find(|m| m.name == "gort.goroutine.block.duration.estimated")
            .expect("the estimated histogram")
            .data
        else {
            panic!("not a histogram")
        };
        let point = &h.data_points[0];
        // 6 parks of 2 ms in (1 ms, 2.5 ms], 2.5 of 20 ms rounded up in (10 ms, 25 ms].
        assert_eq!((point.count, point.sum), (9, Some(0.062)));
        assert_eq!((point.bucket_counts[10], point.bucket_counts[13]), (6, 3));
        assert_eq!(point.explicit_bounds[10], 0.0025);
        assert_eq!(value("gort.goroutines.exited.estimated", None), 40.5);
        assert_eq!(value("gort.http.requests.estimated", None), 20.0);
        assert_eq!(
            value("gort.http.request.blocks.estimated", Some("IO wait")),
            60.0
        );
        assert_eq!(
            value("gort.http.request.blocked.estimated", Some("IO wait")),
            1.5
        );
        assert_eq!(value("gort.sampling.ratio", None), 0.25);
    }

    fn one_process_view() -> MetricsView {
        let mut h = DurationHistogram::default();
        for ns in [500, 1_000, 3_000_000, 200_000_000_000] {
            h.record(ns);
        }
        let p = ProcessMetrics {
            pid: 42,
            service: "shop".into(),
            exe: "/srv/bin/shop".into(),
            container: ContainerIdentity::default(),
            first_seen_unix_ns: 5,
            exited: false,
            estimates: Default::default(),
            reasons: vec![ReasonMetrics {
                reason: "chan receive".into(),
                histogram: h,
                parked_now: 3,
                exemplars: vec![crate::aggregate::view::Exemplar {
                    bucket: 12,
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    span_id: "00f067aa0ba902b7".into(),
                    seconds: 0.003,
                    unix_ns: 7,
                }],
            }],
            sched_latency: None,
            pauses: vec![],
            gc_cycles: 0,
            gc_mark: DurationHistogram::default(),
            gc_probed: false,
            goroutines_system: 4,
            goroutines_user: 10,
            lifecycle: None,
            leak_suspects: vec![],
            sites: vec![],
            panics: None,
            requests: None,
        };
        MetricsView {
            processes: vec![p],
            lost: vec![],
            probe_stats: vec![],
            unattributed: 0,
            sampling: None,
            export: vec![],
        }
    }

    fn histograms_checked(ms: &[Metric]) {
        let by_name = |n: &str| ms.iter().find(|m| m.name == n).unwrap();
        let Some(metric::Data::Histogram(hist)) = &by_name("gort.goroutine.block.duration").data
        else {
            panic!("not a histogram")
        };
        let point = &hist.data_points[0];
        assert_eq!(point.count, 4);
        assert_eq!(point.explicit_bounds.len() + 1, point.bucket_counts.len());
        assert_eq!(point.explicit_bounds[0], 1e-6);
        assert_eq!(point.bucket_counts[0], 2, "500 ns and 1 µs: le 1 µs");
        assert_eq!(*point.bucket_counts.last().unwrap(), 1, "200 s: +Inf");
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 4);
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (5, 9));
        assert_eq!(point.exemplars.len(), 1);
        assert_eq!(
            point.exemplars[0].trace_id,
            hex_bytes("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            point.exemplars[0].value,
            Some(exemplar::Value::AsDouble(0.003))
        );
        let Some(metric::Data::Sum(count)) = &by_name("go.goroutine.count").data else {
            panic!("not a sum")
        };
        assert!(!count.is_monotonic);
        assert_eq!(
            count.data_points[0].value,
            Some(number_data_point::Value::AsInt(10))
        );
    }
}
