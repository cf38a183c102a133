#!/usr/bin/env bash
# Makes the base images docker/Dockerfile names in its FROM lines (debian:<release>-slim and
# rust:1-<release>) when they are not in the local image store and no registry can be reached:
# debian from `debootstrap` + `docker import`, rust from that debian plus the host's own Rust
# toolchain ($AMIHUB_RUST_SYSROOT or `rustc --print sysroot`; only cargo, rustc and lib/). Images already present are kept, so
# this is a no-op after the first run. Usage: base-images.sh <docker> <release>
set -euo pipefail

docker=$1
release=$2
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { "$docker" image inspect "$1" >/dev/null 2>&1; }

# A registry may be reachable after all (a developer's machine): try it, briefly.
try_pull() { timeout 60 "$docker" pull -q "$1" >/dev/null 2>&1; }

make_debian() {
  local tag=$1 root
  command -v debootstrap >/dev/null || { echo "debootstrap is missing" >&2; return 1; }
  root=$(mktemp -d /var/tmp/amihub-rootfs.XXXXXX)
  echo "   debootstrap --variant=minbase $release ($mirror)"
  if ! debootstrap --variant=minbase "$release" "$root" "$mirror" >"$root.log" 2>&1; then
    tail -20 "$root.log" >&2
    rm -rf "$root" "$root.log"
    return 1
  fi
  # The same sources as the official image: the release, its updates and security.
  local sec=${mirror%/debian}/debian-security
  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $release main
deb $mirror $release-updates main
deb $sec $release-security main
EOF
  # The official image's apt and dpkg settings (debuerreotype's): without docker-clean every
  # `apt-get install` layer keeps ~90 MB of package caches. Then what -slim leaves out.
  local apt=$root/etc/apt/apt.conf.d dpkg=$root/etc/dpkg/dpkg.cfg.d
  printf '%s\n' \
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$apt/docker-clean"
  echo 'Acquire::GzipIndexes "true";' >"$apt/docker-gzip-indexes"
  echo 'Acquire::Languages "none";' >"$apt/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$apt/docker-autoremove-suggests"
  echo 'force-unsafe-io' >"$dpkg/docker-apt-speedup"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' \
    'path-exclude /usr/share/info/*' >"$dpkg/docker-slim"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/usr/share/info/*
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  tar --numeric-owner -C "$root" -c . |
    "$docker" import --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase $release (amihub docker smoke test)" - "$tag" >/dev/null
  rm -rf "$root" "$root.log"
}

make_rust() {
  local tag=$1 base=$2 sysroot ctx
  sysroot=${AMIHUB_RUST_SYSROOT:-$(rustc --print sysroot 2>/dev/null || true)}
  [ -x "$sysroot/bin/cargo" ] || { echo "no host Rust toolchain to make $tag from" >&2; return 1; }
  ctx=$(mktemp -d /var/tmp/amihub-rustctx.XXXXXX)
  # Laid out as the official image: CARGO_HOME=/usr/local/cargo, RUSTUP_HOME=/usr/local/rustup;
  # the toolchain's own bin/ is on PATH instead of rustup's proxies.
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
# The host's own extra CAs (e.g. a TLS-intercepting egress proxy's), so cargo reaches crates.io
# from inside the build exactly as it does on the host.
COPY local-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain/ /usr/local/rustup/toolchains/host/
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rustup/toolchains/host/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
EOF
  mkdir -p "$ctx/toolchain/bin" "$ctx/local-ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/local-ca/" 2>/dev/null || true
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$ctx/toolchain/bin/"
  cp -a "$sysroot/lib" "$ctx/toolchain/"
  echo "   $tag from $base + the host's $("$sysroot/bin/rustc" --version)"
  DOCKER_BUILDKIT=1 "$docker" build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

debian_tag="debian:${release}-slim"
rust_tag="rust:1-${release}"

if ! have "$debian_tag"; then
  echo "== base image $debian_tag"
  try_pull "$debian_tag" || make_debian "$debian_tag"
fi
if ! have "$rust_tag"; then
  echo "== base image $rust_tag"
  try_pull "$rust_tag" || make_rust "$rust_tag" "$debian_tag"
fi
