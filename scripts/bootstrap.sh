#!/usr/bin/env bash
# Idempotent set-up: Debian packages the project runs against, then the project venv at .venv/.
# Usage: scripts/bootstrap.sh [--test]   (--test adds what the test suite and benchmarks need)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# gcc/g++ (and Python's headers): `visitwire compile` builds capture's kernels into an extension module
apt_pkgs=(redis-server libpcap0.8 tcpdump gcc g++)
python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || apt_pkgs+=(python3-dev)
# ZooKeeper (the jars, run by engine/services.start_zookeeper in the foreground; not the `zookeeper` package,
# whose default-jre pulls the desktop JRE): 42 packages, 32 MB to download / 40 MB installed with a JRE there,
# +44 / 189 MB for openjdk-17-jre-headless on a machine without one; 13 s to install here
[ "$want_test" = 1 ] && apt_pkgs+=(clickhouse-server clickhouse-client tshark tcpreplay chromium
                                   libzookeeper-java default-jre-headless)

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[bootstrap] installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv" >&2
  python3 -m venv .venv
fi
extras="."; [ "$want_test" = 1 ] && extras=".[test]"
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-$want_test"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] installing Python dependencies into .venv" >&2
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e "$extras" >&2
  touch "$stamp"
fi

# numba compiles each kernel on first use (capture's: about a minute and a half) and caches it; do it
# here, once, so the first `visitwire demo` / `capture` / test starts as fast as the next ones; capture's
# are also built ahead of time (about two minutes more), so that a capture start needs no numba at all
.venv/bin/visitwire compile >&2
