# Container image of kafka-partition-proxy (docs/deployment.md, "Container").
#
#   version=$(meson introspect --projectinfo build | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
#   docker build --build-arg VERSION=$version -t kafka-partition-proxy:$version .
#
# Two stages: the proxy is compiled on Debian 12 with Debian's own libraries, and the
# runtime stage is Debian 12 slim with only the shared libraries the binary links plus CA
# certificates (TLS toward brokers uses the system roots by default). The process runs as
# an unprivileged user and writes nothing to the image's file system, so the container
# works with a read-only root file system. io_uring must be allowed by the container's
# seccomp profile: see docs/deployment.md ("io_uring and seccomp").

# VERSION must equal meson.build's project version; the build stage checks it, so the
# label can never name another version than the binary reports. tests/packaging checks
# that this default follows meson.build.
ARG VERSION=0.1.0

FROM debian:12 AS build
ARG VERSION
# The proxy's build dependencies only (tools/setup.sh installs the test bed too).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ meson ninja-build pkg-config python3 \
      liburing-dev libyaml-cpp-dev libspdlog-dev prometheus-cpp-dev libsimdjson-dev \
      libssl-dev zlib1g-dev liblz4-dev libzstd-dev libsnappy-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup /build -Dbuildtype=release -Dtests=disabled -De2e=false -Dbenchmarks=disabled \
 && actual="$(meson introspect --projectinfo /build | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')" \
 && if [ "$actual" != "$VERSION" ]; then \
      echo "build argument VERSION=$VERSION but meson.build says $actual: pass --build-arg VERSION=$actual" >&2; \
      exit 1; \
    fi \
 && ninja -C /build proxy/kafka-partition-proxy \
 && strip /build/proxy/kafka-partition-proxy

FROM debian:12-slim AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="kafka-partition-proxy" \
      org.opencontainers.image.description="Kafka protocol proxy showing many virtual partitions per topic over few physical ones" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The runtime halves of the -dev packages above (the build stage's `ldd` is the list).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      liburing2 libyaml-cpp0.7 libspdlog1.10 libfmt9 libprometheus-cpp-core1.0 libsimdjson14 \
      libssl3 zlib1g liblz4-1 libzstd1 libsnappy1v5 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 kpp \
 && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin kpp
COPY --from=build /build/proxy/kafka-partition-proxy /usr/bin/kafka-partition-proxy
# A default configuration driven by environment variables; Kubernetes and most users
# mount their own file over /etc/kafka-partition-proxy/.
COPY deploy/container/config.yaml /etc/kafka-partition-proxy/config.yaml
# Fails the build when a shared library is missing from the list above.
RUN /usr/bin/kafka-partition-proxy --version

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 9092: bootstrap (listen.address); 9093-9101: brokers with node ids 0-8
# (listen.broker_port_base 9093 + node id); 9090: /metrics, /health, /ready.
EXPOSE 9090 9092 9093-9101
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/kafka-partition-proxy", "--config", "/etc/kafka-partition-proxy/config.yaml"]
