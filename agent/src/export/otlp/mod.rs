//! OTLP export: a span per HTTP request (and per long block inside it) and every metric of
//! /metrics, over gRPC or HTTP/protobuf, configured by `--otlp-*` flags or the standard
//! `OTEL_EXPORTER_OTLP_*` environment variables.
//!
//! The exporter reads only what the aggregator hands it (finished requests through a bounded
//! channel, metrics snapshots on request). When the receiver is down or slow gort keeps
//! measuring and serving: it retries with exponential backoff, keeps a bounded queue, and
//! counts what it drops in `gort_export_dropped_total{signal}`.

pub mod convert;

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient},
    trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
};
use prost::Message;
use tokio::sync::mpsc;

use self::convert::ProcessResource;
use crate::aggregate::{QueryHandle, requests::RequestRecord};

/// Finished requests on their way from the aggregator to the exporter's queue.
const CHANNEL: usize = 1024;
/// Spans of at most this many requests per export call.
const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    pub traces_endpoint: String,
    pub metrics_endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub metrics_interval: Duration,
    /// PEM certificates to trust for TLS (OTEL_EXPORTER_OTLP_CERTIFICATE).
    pub ca_file: Option<String>,
    /// Requests waiting to be sent at most; beyond, the oldest are dropped (and counted).
    pub max_queue: usize,
}

impl OtlpConfig {
    /// The configuration from the command line, falling back on the environment as the
    /// OpenTelemetry specification names it; None when no endpoint is set at all.
    pub fn resolve(
        endpoint: Option<&str>,
        protocol: Option<&str>,
        headers: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpConfig>, String> {
        let generic = endpoint
            .map(str::to_string)
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let metrics = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        if generic.is_none() && traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        let protocol = match protocol
            .map(str::to_string)
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "unsupported OTLP protocol `{other}` (grpc or http/protobuf)"
                ));
            }
        };
        let default_base = match protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        };
        // A signal's own endpoint is used as is; the generic one gets the signal's path over
        // HTTP (specification: "Endpoint URLs for OTLP/HTTP").
        let signal = |own: Option<String>, path: &str| -> String {
            own.unwrap_or_else(|| {
                let base = generic.clone().unwrap_or_else(|| default_base.to_string());
                match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
                }
            })
        };
        let mut all_headers =
            parse_headers(&env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default())?;
        for h in headers {
            all_headers.extend(parse_headers(h)?);
        }
        let ms = |name: &str, default: u64| -> Result<Duration, String> {
            match env(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name}=`{v}` is not milliseconds")),
            }
        };
        Ok(Some(OtlpConfig {
            protocol,
            traces_endpoint: signal(traces, "v1/traces"),
            metrics_endpoint: signal(metrics, "v1/metrics"),
            headers: all_headers,
            timeout: ms("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
            metrics_interval: ms("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            ca_file: env("OTEL_EXPORTER_OTLP_CERTIFICATE"),
            max_queue: 10_000,
        }))
    }
}

/// `key=value,key2=value2`, values percent-decoded (W3C Baggage format, as the specification
/// asks for OTEL_EXPORTER_OTLP_HEADERS).
fn parse_headers(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("OTLP header `{pair}` is not key=value"))?;
            Ok((k.trim().to_ascii_lowercase(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the exporter could not send, for /metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Requests (spans) dropped: queue full, or given up.
    pub spans_dropped: AtomicU64,
    /// Metrics exports that failed (the next one carries the same cumulative values).
    pub metrics_dropped: AtomicU64,
    pub spans_sent: AtomicU64,
    pub metrics_sent: AtomicU64,
}

/// The aggregator's end: finished requests go here.
#[derive(Clone, Debug)]
pub struct OtlpSender {
    tx: mpsc::Sender<(ProcessResource, RequestRecord)>,
    stats: Arc<ExportStats>,
}

impl OtlpSender {
    pub fn send_request(&self, process: ProcessResource, record: RequestRecord) {
        if self.tx.try_send((process, record)).is_err() {
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Asks the exporter to send what it holds, at shutdown.
#[derive(Debug)]
pub struct OtlpFlush(mpsc::Sender<tokio::sync::oneshot::Sender<()>>);

impl OtlpFlush {
    /// Sends the queued spans and a last metrics export, giving up after `deadline`.
    pub async fn flush(self, deadline: Duration) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if self.0.send(done_tx).await.is_ok() {
            let _ = tokio::time::timeout(deadline, done_rx).await;
        }
    }
}

/// Starts the exporter task.
pub fn start(
    config: OtlpConfig,
    handle: QueryHandle,
) -> Result<(OtlpSender, Arc<ExportStats>, OtlpFlush), String> {
    let stats = Arc::new(ExportStats::default());
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (flush_tx, flush_rx) = mpsc::channel(1);
    let client = Client::new(&config)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let exporter = Exporter {
        config,
        client,
        handle,
        rx,
        flush_rx,
        stats: stats.clone(),
        host,
        queue: VecDeque::new(),
    };
    tokio::spawn(exporter.run());
    Ok((
        OtlpSender {
            tx,
            stats: stats.clone(),
        },
        stats,
        OtlpFlush(flush_tx),
    ))
}

struct Exporter {
    config: OtlpConfig,
    client: Client,
    handle: QueryHandle,
    rx: mpsc::Receiver<(ProcessResource, RequestRecord)>,
    flush_rx: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    stats: Arc<ExportStats>,
    host: String,
    queue: VecDeque<(ProcessResource, RequestRecord)>,
}

impl Exporter {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut next_metrics = Instant::now() + self.config.metrics_interval;
        let (mut spans_backoff, mut spans_retry_at) = (Duration::from_secs(1), Instant::now());
        loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(item) => {
                        self.enqueue(item);
                        continue;
                    }
                    None => return,
                },
                Some(done) = self.flush_rx.recv() => {
                    while let Ok(item) = self.rx.try_recv() {
                        self.enqueue(item);
                    }
                    while !self.queue.is_empty() {
                        if let Err(e) = self.send_batch().await {
                            log::warn!("OTLP traces export at shutdown failed: {e}");
                            break;
                        }
                    }
                    self.send_metrics().await;
                    let _ = done.send(());
                    return;
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if !self.queue.is_empty() && now >= spans_retry_at {
                match self.send_batch().await {
                    Ok(()) => spans_backoff = Duration::from_secs(1),
                    Err(e) => {
                        log::warn!(
                            "OTLP traces export failed (retrying in {spans_backoff:?}): {e}"
                        );
                        spans_retry_at = now + spans_backoff;
                        spans_backoff = (spans_backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if now >= next_metrics {
                next_metrics = now + self.config.metrics_interval;
                self.send_metrics().await;
            }
        }
    }

    fn enqueue(&mut self, item: (ProcessResource, RequestRecord)) {
        if self.queue.len() >= self.config.max_queue {
            self.queue.pop_front();
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.push_back(item);
    }

    /// Sends the oldest queued requests; they leave the queue once the receiver took them.
    async fn send_batch(&mut self) -> Result<(), String> {
        let n = self.queue.len().min(BATCH);
        let batch: Vec<_> = self.queue.iter().take(n).cloned().collect();
        self.client
            .send_traces(convert::spans(&batch, &self.host))
            .await?;
        self.queue.drain(..n);
        self.stats.spans_sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn send_metrics(&mut self) {
        let Some(view) = self.handle.metrics().await else {
            return;
        };
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        match self
            .client
            .send_metrics(convert::metrics(&view, &self.host, unix))
            .await
        {
            Ok(()) => {
                self.stats.metrics_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Cumulative values: the next export carries them; this one is dropped.
                log::warn!("OTLP metrics export failed: {e}");
                self.stats.metrics_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A transport to one receiver.
enum Client {
    Grpc {
        traces: tonic::transport::Channel,
        metrics: tonic::transport::Channel,
        config: OtlpConfig,
    },
    Http {
        agent: ureq::Agent,
        config: OtlpConfig,
    },
}

impl Client {
    fn new(config: &OtlpConfig) -> Result<Client, String> {
        let ca = match &config.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?)
            }
            None => None,
        };
        match config.protocol {
            Protocol::Grpc => {
                let channel = |url: &str| -> Result<tonic::transport::Channel, String> {
                    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
                        .map_err(|e| format!("bad OTLP endpoint `{url}`: {e}"))?
                        .timeout(config.timeout)
                        .connect_timeout(config.timeout);
                    if url.starts_with("https://") {
                        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
                        if let Some(pem) = &ca {
                            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                        }
                        endpoint = endpoint
                            .tls_config(tls)
                            .map_err(|e| format!("TLS for `{url}`: {e}"))?;
                    }
                    Ok(endpoint.connect_lazy())
                };
                Ok(Client::Grpc {
                    traces: channel(&config.traces_endpoint)?,
                    metrics: channel(&config.metrics_endpoint)?,
                    config: config.clone(),
                })
            }
            Protocol::HttpProtobuf => {
                let mut builder = ureq::Agent::config_builder()
                    .timeout_global(Some(config.timeout))
                    .http_status_as_error(false);
                if let Some(pem) = &ca {
                    builder = builder.tls_config(crate::tls::trusting(pem));
                }
                Ok(Client::Http {
                    agent: builder.build().into(),
                    config: config.clone(),
                })
            }
        }
    }

    async fn send_traces(&self, request: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Client::Grpc { traces, config, .. } => {
                let mut client = TraceServiceClient::new(traces.clone());
                client
                    .export(with_headers(request, &config.headers)?)
                    .await
                    .map(drop)
                    .map_err(|s| s.to_string())
            }
            Client::Http { agent, config } => {
                post(
                    agent.clone(),
                    config.traces_endpoint.clone(),
                    config.headers.clone(),
                    request.encode_to_vec(),
                )
                .await
            }
        }
    }

    async fn send_metrics(&self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Client::Grpc {
                metrics, config, ..
            } => {
                let mut client = MetricsServiceClient::new(metrics.clone());
                client
                    .export(with_headers(request, &config.headers)?)
                    .await
                    .map(drop)
                    .map_err(|s| s.to_string())
            }
            Client::Http { agent, config } => {
                post(
                    agent.clone(),
                    config.metrics_endpoint.clone(),
                    config.headers.clone(),
                    request.encode_to_vec(),
                )
                .await
            }
        }
    }
}

fn with_headers<T>(message: T, headers: &[(String, String)]) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
            .map_err(|e| format!("header `{k}`: {e}"))?;
        let value = v.parse().map_err(|e| format!("header `{k}`: {e}"))?;
        request.metadata_mut().insert(key, value);
    }
    Ok(request)
}

/// OTLP/HTTP: a POST of the protobuf bytes; blocking I/O off the async threads.
async fn post(
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let mut req = agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(&body[..]) {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("{url} answered {}", resp.status())),
            Err(e) => Err(format!("{url}: {e}")),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn configuration_follows_the_specification() {
        assert_eq!(OtlpConfig::resolve(None, None, &[], &env_of(&[])), Ok(None));
        let c = OtlpConfig::resolve(
            None,
            None,
            &[],
            &env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=Bearer%20abc, x-tenant = t1",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.metrics_endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(
            c.headers,
            vec![
                ("authorization".into(), "Bearer abc".into()),
                ("x-tenant".into(), "t1".into())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));

        let c = OtlpConfig::resolve(
            Some("https://collector:4317"),
            Some("grpc"),
            &["x-a=1".into()],
            &env_of(&[(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://metrics:4317",
            )]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.traces_endpoint.as_str(), c.metrics_endpoint.as_str()),
            ("https://collector:4317", "https://metrics:4317")
        );
        assert_eq!(c.headers, vec![("x-a".into(), "1".into())]);
        assert!(OtlpConfig::resolve(Some("x"), Some("thrift"), &[], &env_of(&[])).is_err());
        assert!(OtlpConfig::resolve(Some("x"), None, &["novalue".into()], &env_of(&[])).is_err());
    }
}
