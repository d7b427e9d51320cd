#!/usr/bin/env bash
# Installs the build and test bed of kafka-partition-proxy on a fresh Debian 12 (root, apt).
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
#
# Go, sarama 1.22 and xdg-go/scram (Debian, built offline with GOPATH=/usr/share/gocode
# GO111MODULE=off) are for tools/sarama/vp_sarama.go and tools/scram_front/scram_front.go,
# which the e2e tests build at test time.
#
# The Node part (node-rdkafka 3.6.1 with librdkafka 2.12, kafkajs 2.2.4; DESIGN.md section 5)
# goes into a cache directory keyed by a hash of tools/node/package.json + package-lock.json,
# because node-rdkafka's native build takes minutes; an existing complete cache is reused.
# The Kubernetes API schemas for tests/packaging (kubernetes-models, pinned in
# tests/packaging/node) go into a second cache directory keyed the same way.
#
# Usage: tools/setup.sh [--print-node-dir] [--print-k8s-schema-dir] [--skip-apt] [--skip-node] [--help]
#   --print-node-dir  print the Node cache directory and exit (installs nothing)
#   --print-k8s-schema-dir  print the Kubernetes schema cache directory and exit
#   --skip-apt        do not install Debian packages
#   --skip-node       do not install the Node packages
# Environment:
#   KPP_NODE_CACHE    the Node cache directory to use instead of
#                     /var/cache/kafka-partition-proxy/node-<hash>
#   KPP_K8S_SCHEMA_CACHE  likewise for /var/cache/kafka-partition-proxy/k8s-schemas-<hash>
# On success prints only the Node cache directory; on failure prints the failing step's log.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_src_dir="$repo_root/tools/node"

print_node_dir_only=false
print_k8s_schema_dir_only=false
skip_apt=false
skip_node=false
for arg in "$@"; do
  case "$arg" in
    --print-node-dir) print_node_dir_only=true ;;
    --skip-apt) skip_apt=true ;;
    --skip-node) skip_node=true ;;
    --print-k8s-schema-dir) print_k8s_schema_dir_only=true ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# The key covers the pinned packages and Node's native ABI (the addon is built against it).
node_hash() {
  local abi=none
  if command -v node >/dev/null 2>&1; then
    abi="$(node -p 'process.versions.modules + "-" + process.arch' 2>/dev/null || echo none)"
  fi
  { cat "$node_src_dir/package.json" "$node_src_dir/package-lock.json"; echo "node-abi $abi"; } \
    | sha256sum | cut -c1-16
}

node_dir() {
  if [[ -n "${KPP_NODE_CACHE:-}" ]]; then
    echo "$KPP_NODE_CACHE"
  else
    echo "/var/cache/kafka-partition-proxy/node-$(node_hash)"
  fi
}

k8s_schema_src_dir="$repo_root/tests/packaging/node"
k8s_schema_dir() {
  if [[ -n "${KPP_K8S_SCHEMA_CACHE:-}" ]]; then
    echo "$KPP_K8S_SCHEMA_CACHE"
  else
    echo "/var/cache/kafka-partition-proxy/k8s-schemas-$(cat "$k8s_schema_src_dir/package.json" \
      "$k8s_schema_src_dir/package-lock.json" | sha256sum | cut -c1-16)"
  fi
}

if $print_node_dir_only; then
  node_dir
  exit 0
fi
if $print_k8s_schema_dir_only; then
  k8s_schema_dir
  exit 0
fi

log_file="$(mktemp /tmp/kpp-setup.XXXXXX.log)"
node_staging_dir=""
trap 'rm -f "$log_file"; if [[ -n "$node_staging_dir" ]]; then rm -rf "$node_staging_dir"; fi' EXIT

# Runs a step with its output captured; prints the output and fails loudly if the step fails.
run_logged() {
  local what="$1"
  shift
  if ! "$@" >"$log_file" 2>&1; then
    echo "setup.sh: FAILED: $what" >&2
    echo "setup.sh: command: $*" >&2
    cat "$log_file" >&2
    exit 1
  fi
}

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "setup.sh: need root (or sudo) for: $*" >&2
    exit 1
  fi
}

is_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_debian_packages() {
  local wanted=(
    build-essential make g++ clang pkg-config meson ninja-build
    liburing-dev libyaml-cpp-dev libspdlog-dev prometheus-cpp-dev libsimdjson-dev
    libssl-dev zlib1g-dev liblz4-dev libzstd-dev libsnappy-dev
    libgtest-dev libgmock-dev libbenchmark-dev
    librdkafka-dev kcat
    golang-go golang-github-shopify-sarama-dev golang-github-xdg-go-scram-dev
    python3 python3-pytest python3-confluent-kafka python3-kafka python3-yaml
    python3-snappy python3-lz4 python3-zstandard
    curl procps valgrind ca-certificates haproxy openssl
    systemd strace
  )
  # Node only when absent: a NodeSource or hand-installed node must not be replaced.
  if ! command -v node >/dev/null 2>&1; then wanted+=(nodejs); fi
  if ! command -v npm >/dev/null 2>&1; then wanted+=(npm); fi
  # node-gyp builds offline against the system headers (Debian: libnode-dev).
  if [[ ! -e /usr/include/node/node.h ]]; then
    wanted+=(libnode-dev)
  fi
  local missing=()
  local package
  for package in "${wanted[@]}"; do
    is_installed "$package" || missing+=("$package")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  run_logged "apt-get update" as_root apt-get -qq update
  run_logged "apt-get install ${missing[*]}" \
    as_root apt-get -qq install -y --no-install-recommends "${missing[@]}"
}

install_node_packages() {
  local target
  target="$(node_dir)"
  local hash
  hash="$(node_hash)"
  local marker="$target/.kpp-complete"
  local addon="$target/node_modules/node-rdkafka/build/Release/node-librdkafka.node"
  if [[ -f "$marker" && "$(cat "$marker")" == "$hash" && -f "$addon" ]]; then
    echo "$target"
    return
  fi
  local parent
  parent="$(dirname "$target")"
  as_root mkdir -p "$parent"

  # One installer at a time per cache directory.
  exec 9>"$target.lock"
  flock -w 1800 9 || { echo "setup.sh: timed out waiting for $target.lock" >&2; exit 1; }
  if [[ -f "$marker" && "$(cat "$marker")" == "$hash" && -f "$addon" ]]; then
    echo "$target"
    return
  fi

  local staging
  rm -rf "$target".staging.*
  staging="$(mktemp -d "$target.staging.XXXXXX")"
  node_staging_dir="$staging"
  cp "$node_src_dir/package.json" "$node_src_dir/package-lock.json" "$staging/"
  local npm_args=(ci --no-audit --no-fund --loglevel=error)
  if [[ -e /usr/include/node/node.h ]]; then
    npm_args+=(--nodedir=/usr)
  fi
  # node-gyp wants a Python with the standard library only; Debian's is always there.
  export npm_config_python=/usr/bin/python3
  # node-rdkafka's gyp build races under parallel make (config.h is generated by an action).
  unset JOBS npm_config_jobs
  run_logged "npm ${npm_args[*]} in $staging" \
    bash -c 'cd "$1" && shift && npm "$@"' _ "$staging" "${npm_args[@]}"
  # npm may skip install scripts (allowScripts policy): build the addon explicitly then.
  if [[ ! -f "$staging/node_modules/node-rdkafka/build/Release/node-librdkafka.node" ]]; then
    run_logged "npm rebuild node-rdkafka in $staging" \
      bash -c 'cd "$1" && npm rebuild node-rdkafka --loglevel=error' _ "$staging"
  fi
  run_logged "loading node-rdkafka and kafkajs" \
    bash -c 'cd "$1" && node -e "require(\"node-rdkafka\"); require(\"kafkajs\")"' _ "$staging"
  echo "$hash" >"$staging/.kpp-complete"
  rm -rf "$target"
  mv "$staging" "$target"
  node_staging_dir=""
  echo "$target"
}

# Plain JavaScript (ajv validators), so no native build: quick, and silent on success
# (stdout carries only the Node cache directory).
install_k8s_schemas() {
  local target marker
  target="$(k8s_schema_dir)"
  marker="$target/.kpp-complete"
  if [[ -f "$marker" && -d "$target/node_modules/kubernetes-models" ]]; then
    return
  fi
  as_root mkdir -p "$(dirname "$target")"
  exec 8>"$target.lock"
  flock -w 600 8 || { echo "setup.sh: timed out waiting for $target.lock" >&2; exit 1; }
  if [[ -f "$marker" && -d "$target/node_modules/kubernetes-models" ]]; then
    return
  fi
  local staging
  rm -rf "$target".staging.*
  staging="$(mktemp -d "$target.staging.XXXXXX")"
  node_staging_dir="$staging"
  cp "$k8s_schema_src_dir/package.json" "$k8s_schema_src_dir/package-lock.json" "$staging/"
  run_logged "npm ci (Kubernetes schemas) in $staging" \
    bash -c 'cd "$1" && npm ci --no-audit --no-fund --loglevel=error' _ "$staging"
  touch "$staging/.kpp-complete"
  rm -rf "$target"
  mv "$staging" "$target"
  node_staging_dir=""
}

if ! $skip_apt; then
  install_debian_packages
fi
if ! $skip_node; then
  install_k8s_schemas
  install_node_packages
fi
