#!/usr/bin/env bash
# Installs what clbn needs on Debian 12 (run as root), skipping what is already installed.
# libdnnl-dev (oneDNN) is optional to the build: `clbn bench` measures it next to clbn.
# With --tests it adds what the tests need: cmocka, clang (offline kernel checks, the fuzz
# targets) with libclang-rt-14-dev (libFuzzer and the sanitizer runtimes, which clang only
# recommends), PyTorch (the outside oracle) and Oclgrind.
set -euo pipefail
pkgs=(build-essential cmake pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
  libdnnl-dev libclblast-dev zlib1g-dev gnuplot-nox dataset-fashion-mnist)
if [ "${1:-}" = "--tests" ]; then
  pkgs+=(libcmocka-dev clang libclang-rt-14-dev python3-torch python3-numpy oclgrind)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
