"""An independent OTLP receiver for gort's tests.

Serves the OTLP trace and metrics services over gRPC (grpcio) and OTLP/HTTP (protobuf bodies
on /v1/traces and /v1/metrics), decodes every export with the official protobuf definitions
(PyPI `opentelemetry-proto`), and prints one JSON line per export on stdout:

    {"signal": "traces"|"metrics", "transport": "grpc"|"http", "headers": {...}, "resources": [...]}

The first line says where it listens: {"grpc_port": N, "http_port": M}.
Ids are printed as lowercase hex, the way W3C trace context writes them.
"""

import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

out_lock = threading.Lock()


def emit(obj):
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return str(getattr(v, kind))
    return getattr(v, kind)


def attributes(attrs):
    return {kv.key: any_value(kv.value) for kv in attrs}


def span_json(s):
    return {
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "flags": s.flags,
        "name": s.name,
        "kind": s.kind,
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "attributes": attributes(s.attributes),
    }


def number_point(p):
    kind = p.WhichOneof("value")
    return {
        "attributes": attributes(p.attributes),
        "start": p.start_time_unix_nano,
        "time": p.time_unix_nano,
        "value": getattr(p, kind) if kind else None,
    }


def histogram_point(p):
    return {
        "attributes": attributes(p.attributes),
        "start": p.start_time_unix_nano,
        "time": p.time_unix_nano,
        "count": p.count,
        "sum": p.sum if p.HasField("sum") else None,
        "bucket_counts": list(p.bucket_counts),
        "explicit_bounds": list(p.explicit_bounds),
    }


def metric_json(m):
    kind = m.WhichOneof("data")
    out = {"name": m.name, "unit": m.unit, "type": kind}
    data = getattr(m, kind)
    if kind == "sum":
        out["monotonic"] = data.is_monotonic
        out["temporality"] = data.aggregation_temporality
        out["points"] = [number_point(p) for p in data.data_points]
    elif kind == "gauge":
        out["points"] = [number_point(p) for p in data.data_points]
    elif kind == "histogram":
        out["temporality"] = data.aggregation_temporality
        out["points"] = [histogram_point(p) for p in data.data_points]
    else:
        out["points"] = []
    return out


def traces_json(req):
    return [
        {
            "resource": attributes(rs.resource.attributes),
            "scopes": [
                {"name": ss.scope.name, "spans": [span_json(s) for s in ss.spans]}
                for ss in rs.scope_spans
            ],
        }
        for rs in req.resource_spans
    ]


def metrics_json(req):
    return [
        {
            "resource": attributes(rm.resource.attributes),
            "scopes": [
                {"name": sm.scope.name, "metrics": [metric_json(m) for m in sm.metrics]}
                for sm in rm.scope_metrics
            ],
        }
        for rm in req.resource_metrics
    ]


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        emit(
            {
                "signal": "traces",
                "transport": "grpc",
                "headers": dict(context.invocation_metadata()),
                "resources": traces_json(request),
            }
        )
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        emit(
            {
                "signal": "metrics",
                "transport": "grpc",
                "headers": dict(context.invocation_metadata()),
                "resources": metrics_json(request),
            }
        )
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(415, "OTLP/HTTP protobuf only")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path == "/v1/traces":
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            emit({"signal": "traces", "transport": "http", "headers": headers, "resources": traces_json(req)})
            resp = trace_service_pb2.ExportTraceServiceResponse()
        elif self.path == "/v1/metrics":
            req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            emit({"signal": "metrics", "transport": "http", "headers": headers, "resources": metrics_json(req)})
            resp = metrics_service_pb2.ExportMetricsServiceResponse()
        else:
            self.send_error(404)
            return
        data = resp.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    args = ap.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    grpc_port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()

    http = ThreadingHTTPServer(("127.0.0.1", args.http_port), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    emit({"grpc_port": grpc_port, "http_port": http.server_address[1]})
    # Until the test closes stdin.
    sys.stdin.read()
    http.shutdown()
    server.stop(0)


if __name__ == "__main__":
    main()
