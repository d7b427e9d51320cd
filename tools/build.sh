#!/usr/bin/env bash
# Configures (once) and builds one build directory. Usage: tools/build.sh DIR [meson options...]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="$1"
shift
cd "$repo_root"
if [[ ! -f "$build_dir/build.ninja" ]]; then
  meson setup "$build_dir" "$@" >/dev/null
fi
ninja -C "$build_dir" >/dev/null
