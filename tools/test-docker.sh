#!/usr/bin/env bash
# Proves the Dockerfile builds and the image trains, on a machine without a Docker engine or registry
# access (npm run test:docker; not part of the default CI run: it takes minutes and needs root).
#   1. podman, runc and debootstrap from Debian's packages;
#   2. a local base image: debootstrap --variant=minbase bookworm + this machine's node and npm;
#   3. podman build of the project's Dockerfile with --build-arg BASE=<that image>, up to the
#      `selftest` stage, whose last RUN step runs `bin/train --summary` and a two-epoch synthetic run.
# (`podman run` is refused by rlimits on these machines; RUN steps inside a build work.)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
base=localhost/trainpool-base:bookworm-node$(node -p 'process.versions.node.split(".")[0]')
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }

if ! podman image exists "$base"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "test:docker: debootstrap bookworm (minbase) from $mirror ..."
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  cp "$(command -v node)" "$rootfs/usr/bin/node"
  mkdir -p "$rootfs/usr/lib/node_modules"
  cp -r /usr/lib/node_modules/npm "$rootfs/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/bin/npx"
  # The machine's node (NodeSource's build) needs only libc and libstdc++, which minbase has.
  chroot "$rootfs" /usr/bin/node -e 'console.log("node " + process.version + " runs in the base image")'
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
fi

# Machines behind a TLS-inspecting proxy trust its CA through NODE_EXTRA_CA_CERTS: give the base the same
# trust, or npm ci inside the build cannot reach the registry. (A test base only; the Dockerfile is unchanged.)
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
  ctx=$(mktemp -d)
  cp "$NODE_EXTRA_CA_CERTS" "$ctx/host-ca.crt"
  printf 'FROM %s\nCOPY host-ca.crt /usr/local/share/host-ca.crt\nENV NODE_EXTRA_CA_CERTS=/usr/local/share/host-ca.crt\n' "$base" > "$ctx/Containerfile"
  podman build --network host -t "$base-hostca" -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
  base="$base-hostca"
fi

echo "test:docker: building the Dockerfile on $base (selftest stage) ..."
podman build --network host --build-arg BASE="$base" --target selftest -t trainpool:selftest -f Dockerfile . 2>&1 | tee /tmp/trainpool-docker-build.log | grep -E '^(STEP|Epoch|Total params|Trainable|Non-trainable|done in|device-select|COMMIT|Error|error)' || true
if grep -q '^Epoch 2/2' /tmp/trainpool-docker-build.log && podman image exists trainpool:selftest; then
  echo "test:docker: OK (the image printed the summary and trained two epochs while building)"
else
  echo "test:docker: FAILED, see /tmp/trainpool-docker-build.log" >&2
  exit 1
fi
