#!/bin/sh
# A self-signed TLS certificate for a trial of the front proxy (README, "Running with
# PostgreSQL, Redis and a worker"; docker/compose.yaml): writes DIR/fullchain.pem and
# DIR/privkey.pem, the two files nginx is pointed at, valid 30 days for localhost,
# 127.0.0.1 and any host names given. Browsers warn about it and curl needs -k: it is
# for trying the set-up, never for serving customers (use your CA's certificate there).
#
#   ./scripts/trial_certificate.sh /etc/ssl/byok                      # as root
#   ./scripts/trial_certificate.sh docker/tls byok.test.example       # for docker compose
set -eu

if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [HOST NAME ...]" >&2
  exit 2
fi
dir=$1
shift
command -v openssl >/dev/null || { echo "openssl is missing (Debian: apt-get install -y openssl)" >&2; exit 1; }

names="DNS:localhost,IP:127.0.0.1"
for host in "$@"; do
  names="$names,DNS:$host"
done

mkdir -p "$dir"
umask 077  # the private key is readable by its owner only (nginx reads it as root)
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=${1:-localhost}" \
  -addext "subjectAltName=$names" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2>/dev/null
chmod 644 "$dir/fullchain.pem"
echo "Wrote $dir/fullchain.pem and $dir/privkey.pem (self-signed, 30 days, for $names)."
