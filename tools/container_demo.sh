#!/usr/bin/env bash
# Builds the container image from this checkout and runs the quick-start demo through it:
# the proxy in the image (read-only root file system, no capabilities, no new privileges,
# user 10001, seccomp on) in front of the mock cluster, kcat producing to and reading back
# virtual partitions, SIGHUP and SIGTERM to PID 1. Not part of tools/test.sh: the image
# build compiles the proxy again (about ten minutes on two cores) and needs Debian's mirror.
#
# Uses Docker when its engine answers, else Podman from Debian 12 with runc (crun refuses
# hybrid cgroup v1/v2 hosts) and base images made with debootstrap, since no registry can be
# pulled from here: debian:12 and debian:12-slim are both that minbase root file system.
# Runs first with the runtime's default seccomp profile (where io_uring is refused the proxy
# must say so and stop), then with that profile plus io_uring (tools/seccomp_allow_io_uring.py).
#
# Usage: tools/container_demo.sh   (root; installs podman, runc, debootstrap when missing)
# Environment: KPP_BUILD_DIR, the build folder for the mock cluster launcher (default build).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${KPP_BUILD_DIR:-build}"
bash tools/setup.sh --skip-node >/dev/null
bash tools/build.sh "$build_dir"   # the mock cluster launcher

version="$(meson introspect --projectinfo "$build_dir" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')"
image="kafka-partition-proxy:$version"
work="$(mktemp -d /tmp/kpp-container.XXXXXX)"
container=""
cleanup() {
  [[ -n "$container" ]] && $engine rm -f "$container" >/dev/null 2>&1 || true
  [[ -n "${mock_pid:-}" ]] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null || true
  [[ -n "${keep_open_pid:-}" ]] && kill "$keep_open_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker
  run_options=()
  default_profile=""
else
  echo "==> no Docker engine here: Podman with runc"
  missing=()
  for package in podman runc debootstrap; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
  engine="podman --runtime runc"
  # This machine's hard limits are below Podman's defaults and cannot be raised.
  run_options=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
  default_profile=/usr/share/containers/seccomp.json
  if ! $engine image exists docker.io/library/debian:12-slim; then
    echo "==> making debian:12 and debian:12-slim with debootstrap (no registry to pull from)"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log"; exit 1; }
    tar -C "$work/rootfs" -c . | $engine import - docker.io/library/debian:12 >/dev/null
    $engine tag docker.io/library/debian:12 docker.io/library/debian:12-slim
    rm -rf "$work/rootfs"
  fi
fi

echo "==> building $image ($engine build; the log is in $work/build.log while it runs)"
# From the committed tree plus the working tree's changes, without build folders.
$engine build --network host "${run_options[@]}" --build-arg "VERSION=$version" -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkfifo "$work/mock.in"
sleep infinity >"$work/mock.in" &
keep_open_pid=$!
"$build_dir/tools/kpp-mock-cluster" --brokers 3 --topic demo:10 --topic __kpr_offsets:4 <"$work/mock.in" >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
for _ in $(seq 100); do grep -q '^BOOTSTRAP' "$work/mock.out" 2>/dev/null && break; sleep 0.1; done
bootstrap="$(sed -n 's/^BOOTSTRAP //p' "$work/mock.out")"
port="$(free_port)"
metrics_port="$(free_port)"
mkdir -m 0755 "$work/config"
cat >"$work/config/config.yaml" <<YAML
listen:
  address: "127.0.0.1:$port"
  broker_port_base: $((port + 10))
kafka:
  bootstrap_servers: ["${bootstrap%%,*}"]
metrics:
  address: "127.0.0.1:$metrics_port"
mapping:
  topics:
    demo: { virtual_partitions: 100, physical_partitions: 10 }
YAML
chmod 0644 "$work/config/config.yaml"
hardened=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges
          -v "$work/config:/etc/kafka-partition-proxy:ro" "${run_options[@]}")

if [[ -n "$default_profile" ]] && ! grep -q io_uring_setup "$default_profile"; then
  echo "==> the runtime's default seccomp profile has no io_uring: the proxy must refuse to start"
  output="$(timeout 60 $engine run --rm "${hardened[@]}" "$image" 2>&1 || true)"
  echo "$output" | tail -1 | sed 's/^/    /'
  echo "$output" | grep -q 'io_uring: cannot create a ring' || { echo "unexpected: $output" >&2; exit 1; }
fi

seccomp=()
if [[ -n "$default_profile" ]]; then
  /usr/bin/python3 tools/seccomp_allow_io_uring.py "$default_profile" >"$work/kpp-seccomp.json"
  seccomp=(--security-opt "seccomp=$work/kpp-seccomp.json")
fi
echo "==> running the proxy in the image (read-only, no capabilities, user 10001, seccomp with io_uring)"
container="$($engine run -d "${hardened[@]}" "${seccomp[@]}" "$image")"
for _ in $(seq 100); do curl -fs "127.0.0.1:$metrics_port/ready" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "127.0.0.1:$metrics_port/ready" >/dev/null || { $engine logs "$container"; exit 1; }
$engine exec "$container" bash -c 'echo "    user: $(id -u), root file system writable: $(touch /probe 2>/dev/null && echo yes || echo no), capabilities: $(grep CapEff /proc/1/status | cut -f2)"'
partitions="$(kcat -b "127.0.0.1:$port" -L -t demo | grep -c '    partition ')"
echo "    through the proxy, topic demo has $partitions partitions"
[[ "$partitions" == 100 ]]
for partition in 3 13 57; do printf 'hello-%s\n' "$partition" | kcat -b "127.0.0.1:$port" -P -t demo -p "$partition"; done
for partition in 3 13 57 42; do
  records="$(kcat -b "127.0.0.1:$port" -C -t demo -p "$partition" -o beginning -e -q -f '%s ')"
  echo "    virtual partition $partition: ${records:-(empty)}"
  if [[ "$partition" == 42 ]]; then [[ -z "$records" ]]; else [[ "$records" == "hello-$partition " ]]; fi
done
$engine exec "$container" bash -c 'kill -HUP 1'
sleep 1
$engine logs "$container" 2>&1 | grep -q 'reload' || { echo "SIGHUP was not handled" >&2; exit 1; }
$engine stop -t 30 "$container" >/dev/null
$engine logs "$container" 2>&1 | tail -2 | sed 's/^/    proxy | /'
[[ "$($engine inspect "$container" --format '{{.State.ExitCode}}')" == 0 ]]
echo "==> done: the image runs the demo read-only and unprivileged, reloads on SIGHUP and stops cleanly on SIGTERM"
