#!/bin/sh
# The proxy's entry point: renders nginx.conf.template with the environment, then runs
# nginx in the foreground. tests/test_front_proxy.py runs this same script (loopback
# ports, a temporary prefix); `entrypoint.sh --render-only` stops after rendering.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${NGINX_TEMPLATE:=$here/nginx.conf.template}"
# The pid file and the temporary files' directories are relative to the prefix.
: "${NGINX_PREFIX:=/var/lib/nginx/}"
: "${NGINX_CONF:=${NGINX_PREFIX%/}/nginx.conf}"
: "${PROXY_HTTP_LISTEN:=80}"
: "${PROXY_HTTPS_LISTEN:=443}"
: "${PROXY_UPSTREAM:=web:8000}"
: "${PROXY_TLS_CERTIFICATE:=/etc/nginx/tls/fullchain.pem}"
: "${PROXY_TLS_CERTIFICATE_KEY:=/etc/nginx/tls/privkey.pem}"
# portal/settings.py's defaults, so that nginx refuses exactly the bodies the app would
# (tests/test_docker.py checks that they agree). Empty counts as unset, as in the app.
: "${API_MAX_BODY_BYTES:=1048576}"
: "${API_MAX_BATCH_BODY_BYTES:=$((API_MAX_BODY_BYTES * 16))}"
# The HTTPS port plain HTTP redirects to: the port of PROXY_HTTPS_LISTEN ("8443",
# "127.0.0.1:8443", "[::]:8443"), or PROXY_HTTPS_PORT when clients reach nginx on another
# port than it listens on (a container's published port). None in the URL for 443.
: "${PROXY_HTTPS_PORT:=${PROXY_HTTPS_LISTEN##*:}}"
case "$PROXY_HTTPS_PORT" in
  443) PROXY_HTTPS_PORT_SUFFIX= ;;
  *) PROXY_HTTPS_PORT_SUFFIX=":$PROXY_HTTPS_PORT" ;;
esac
export PROXY_HTTP_LISTEN PROXY_HTTPS_LISTEN PROXY_UPSTREAM PROXY_TLS_CERTIFICATE \
  PROXY_TLS_CERTIFICATE_KEY API_MAX_BODY_BYTES API_MAX_BATCH_BODY_BYTES PROXY_HTTPS_PORT_SUFFIX

# Only these names: nginx's own $variables stay as they are.
envsubst '${PROXY_HTTP_LISTEN} ${PROXY_HTTPS_LISTEN} ${PROXY_UPSTREAM} ${PROXY_TLS_CERTIFICATE}
${PROXY_TLS_CERTIFICATE_KEY} ${API_MAX_BODY_BYTES} ${API_MAX_BATCH_BODY_BYTES} ${PROXY_HTTPS_PORT_SUFFIX}' \
  <"$NGINX_TEMPLATE" >"$NGINX_CONF"

if [ "${1:-}" = --render-only ]; then
  exit 0
fi
exec nginx -p "$NGINX_PREFIX" -c "$NGINX_CONF" -e stderr
