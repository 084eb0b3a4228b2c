//! TLS settings for gort's HTTP clients (OTLP over HTTP, the Kubernetes API).

/// A TLS configuration trusting exactly the certificates of a PEM file (a private CA, as
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` or a service account's `ca.crt` name it).
pub fn trusting(pem: &[u8]) -> ureq::tls::TlsConfig {
    let certs: Vec<_> = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build()
}
