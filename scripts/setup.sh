#!/usr/bin/env bash
# Installs the Debian 12 packages kiln builds with, if any is missing.
set -euo pipefail

packages=(
  cmake ninja-build g++ make pkg-config
  clang-16 libclang-rt-16-dev
  llvm-16-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libcli11-dev nlohmann-json3-dev libpcre2-dev libsqlite3-dev
  glslang-dev glslang-tools libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers spirv-tools
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
