# gort's container image: `docker build -t gort .` (not built by the tests: Docker cannot
# run on the machines the tests run on; see README, "Running on Kubernetes").
#
# Build stage: Debian's rustc-web/cargo-web (1.96) build both the eBPF objects (with
# rust-web-src for -Z build-std=core and bpf-linker, which `cargo xtask build-ebpf`
# installs) and the agent, which embeds them.
FROM debian:bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates build-essential pkg-config rustc-web cargo-web rust-web-src \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo xtask build-ebpf \
    && cargo build --release --locked --package gort \
    && cp target/release/gort /gort

# Final stage: glibc and nothing else (no shell, no package manager). gort runs as uid 0
# because the kernel checks its capabilities (CAP_SYS_ADMIN, CAP_SYS_PTRACE,
# CAP_DAC_READ_SEARCH), which
# Kubernetes only grants to uid 0 without ambient capabilities; the DaemonSet drops every
# other capability.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /gort /usr/local/bin/gort
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/gort"]
CMD ["run", "--all", "--listen", "0.0.0.0:9464"]
