#!/usr/bin/env bash
# Installs the Debian packages the test suite starts for real: Java + Maven (Kafka broker),
# clickhouse-server (server path of the store), prometheus + promtool, chromium (pages we serve).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)   # Chinese glyphs in the progress-page screenshot
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Debian's packages start their own services; our tests start private instances on free ports.
for svc in clickhouse-server prometheus; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
  (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done
