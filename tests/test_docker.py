"""The docker/ files, checked by reading them (no Docker engine on the development machines)."""

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SETTINGS_SOURCE = (ROOT / "portal" / "settings.py").read_text()
GUNICORN_CONF = ROOT / "docker" / "gunicorn.conf.py"
ENTRYPOINT = ROOT / "docker" / "nginx" / "entrypoint.sh"


def _settings_variables() -> set[str]:
    """Every variable name settings.py reads through env.<type>("NAME") or _required("NAME")."""
    return set(re.findall(r'(?:env(?:\.\w+)?|_required)\(\s*"([A-Z0-9_]+)"', SETTINGS_SOURCE))


def _gunicorn_variables() -> set[str]:
    """Every variable docker/gunicorn.conf.py reads through os.environ.get("NAME")."""
    return set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', GUNICORN_CONF.read_text()))


def _compose_variables() -> set[str]:
    """Every variable docker/compose.yaml interpolates (``${NAME:-default}``) from docker/.env."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker" / "compose.yaml").read_text()))


def _env_example_variables() -> set[str]:
    text = (ROOT / "docker" / ".env.example").read_text()
    return {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_it_has_the_six_services_each_with_a_healthcheck():
    services = COMPOSE["services"]
    assert set(services) == {"proxy", "web", "worker", "beat", "postgres", "redis"}
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name


def test_it_starts_the_right_command_in_each_service():
    services = COMPOSE["services"]
    assert "gunicorn -c docker/gunicorn.conf.py portal.wsgi:application" in " ".join(services["web"]["command"])
    assert services["proxy"]["build"]["dockerfile"] == "docker/nginx/Dockerfile"
    assert services["worker"]["command"][:4] == ["celery", "-A", "portal", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_it_only_sets_variables_the_settings_read():
    read = _settings_variables()
    for name in ("web", "worker", "beat"):
        for variable in COMPOSE["services"][name].get("environment", {}):
            assert variable in read | _gunicorn_variables(), f"{name} sets {variable}, which nothing reads"


def test_it_lists_every_settings_variable_in_env_example():
    listed = _env_example_variables()
    missing = _settings_variables() - listed
    assert not missing, f"docker/.env.example lacks {sorted(missing)}"
    # Every listed variable is either read by settings or used by the compose file itself.
    extra = listed - _settings_variables() - _gunicorn_variables() - _compose_variables() - {"POSTGRES_PASSWORD"}
    assert not extra, f"docker/.env.example lists {sorted(extra)}, which nothing reads"


def test_it_comments_every_variable_in_env_example():
    lines = (ROOT / "docker" / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{line.split('=')[0]} has no comment line above it"


def test_it_runs_gunicorn_in_the_dockerfile():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r'^CMD \["gunicorn", "-c", "docker/gunicorn\.conf\.py", "portal\.wsgi:application"\]', dockerfile, re.M)
    assert "USER portal" in dockerfile


# ---------------------------------------------------------------------------
# The front proxy (docker/nginx/)
# ---------------------------------------------------------------------------


def _rendered_nginx_conf(tmp_path: Path, **env: str) -> str:
    """nginx.conf as the proxy's entry point renders it (its own defaults, plus ``env``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("API_MAX_", "PROXY_", "NGINX_"))}
    subprocess.run([str(ENTRYPOINT), "--render-only"], check=True, timeout=30,
                   env=base | {"NGINX_PREFIX": f"{tmp_path}/"} | env)
    return (tmp_path / "nginx.conf").read_text()


def _body_limits(conf: str) -> list[int]:
    return [int(n) for n in re.findall(r"client_max_body_size (\d+);", conf)]


def test_it_publishes_the_proxy_and_never_gunicorn():
    services = COMPOSE["services"]
    assert services["proxy"]["ports"] == ["${PROXY_HTTP_PORT:-80}:80", "${PROXY_HTTPS_PORT:-443}:443"]
    # The plain-HTTP redirect names the host's HTTPS port, not the container's 443.
    assert services["proxy"]["environment"]["PROXY_HTTPS_PORT"] == "${PROXY_HTTPS_PORT:-443}"
    for name, service in services.items():
        if name != "proxy":
            assert "ports" not in service, f"{name} is published; clients must go through the proxy"
    assert services["web"]["expose"] == ["8000"]
    assert services["proxy"]["environment"]["PROXY_UPSTREAM"] == "web:8000"


def test_it_trusts_forwarded_headers_from_the_proxys_address_only():
    services = COMPOSE["services"]
    proxy_address = services["proxy"]["networks"]["default"]["ipv4_address"]
    assert services["web"]["environment"]["FORWARDED_ALLOW_IPS"] == proxy_address
    subnet = COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    conf = GUNICORN_CONF.read_text()
    assert 'forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")' in conf
    assert 'secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}' in conf
    # Django itself does not trust the header: gunicorn decides the scheme.
    assert "SECURE_PROXY_SSL_HEADER=false" in (ROOT / "docker" / ".env.example").read_text()


def test_it_passes_the_apis_limits_from_the_env_file_to_the_proxy():
    environment = COMPOSE["services"]["proxy"]["environment"]
    assert environment["API_MAX_BODY_BYTES"] == "${API_MAX_BODY_BYTES:-}"
    assert environment["API_MAX_BATCH_BODY_BYTES"] == "${API_MAX_BATCH_BODY_BYTES:-}"
    # The proxy gets no secrets: only the two limits, not the whole env file.
    assert "env_file" not in COMPOSE["services"]["proxy"]


def test_it_keeps_the_proxys_spooled_bodies_in_memory_and_says_the_apps_retry_after(tmp_path):
    """Bodies over nginx's buffer wait in client_body_temp_path (plaintext records): compose
    mounts exactly that directory as tmpfs. nginx's own 503s ask for the app's Retry-After."""
    from portal import outages

    conf = _rendered_nginx_conf(tmp_path)
    temp_path = re.search(r"client_body_temp_path (\S+);", conf).group(1)
    entrypoint = (ROOT / "docker" / "nginx" / "entrypoint.sh").read_text()
    prefix = re.search(r'NGINX_PREFIX:=([^}]+)\}', entrypoint).group(1)
    assert COMPOSE["services"]["proxy"]["tmpfs"] == [prefix + temp_path]
    assert "client_body_buffer_size 128k;" in conf  # allocated per connection for the declared length
    retry_afters = set(re.findall(r"add_header Retry-After (\d+) always;", conf))
    assert retry_afters == {str(outages.RETRY_AFTER_SECONDS)}


def test_it_gives_nginx_the_settings_default_body_limits(tmp_path):
    """The entry point's defaults are portal/settings.py's defaults (this run sets neither)."""
    assert "API_MAX_BODY_BYTES" not in os.environ and "API_MAX_BATCH_BODY_BYTES" not in os.environ
    conf = _rendered_nginx_conf(tmp_path)
    # Portal pages 1m, then /api/ and batch/find.
    assert _body_limits(conf) == [settings.API_MAX_BODY_BYTES, settings.API_MAX_BATCH_BODY_BYTES]
    assert f"may be at most {settings.API_MAX_BODY_BYTES} bytes." in conf
    assert f"may be at most {settings.API_MAX_BATCH_BODY_BYTES} bytes." in conf
    assert "client_max_body_size 1m;" in conf
    assert "${" not in conf


def test_it_derives_the_batch_limit_from_the_record_limit_as_the_settings_do(tmp_path):
    conf = _rendered_nginx_conf(tmp_path, API_MAX_BODY_BYTES="2048", API_MAX_BATCH_BODY_BYTES="")
    assert _body_limits(conf) == [2048, 2048 * 16]
    conf = _rendered_nginx_conf(tmp_path, API_MAX_BODY_BYTES="2048", API_MAX_BATCH_BODY_BYTES="5000")
    assert _body_limits(conf) == [2048, 5000]


def test_it_redirects_plain_http_to_the_https_port_it_listens_on(tmp_path):
    assert "return 308 https://$host$request_uri;" in _rendered_nginx_conf(tmp_path)
    assert "return 308 https://$host:8443$request_uri;" in _rendered_nginx_conf(tmp_path, PROXY_HTTPS_LISTEN="8443")
    conf = _rendered_nginx_conf(tmp_path, PROXY_HTTPS_LISTEN="127.0.0.1:8443")
    assert "return 308 https://$host:8443$request_uri;" in conf
    # Published on another port than it listens on (compose): PROXY_HTTPS_PORT says which.
    conf = _rendered_nginx_conf(tmp_path, PROXY_HTTPS_LISTEN="443", PROXY_HTTPS_PORT="9443")
    assert "return 308 https://$host:9443$request_uri;" in conf


def test_it_passes_the_host_with_its_port_upstream(tmp_path):
    """Django's CSRF check compares a POST's Origin (port included) with the Host it gets."""
    conf = _rendered_nginx_conf(tmp_path)
    assert "proxy_set_header Host $portal_host;" in conf
    assert re.search(r'map \$http_host \$portal_host \{\s*"" \$host;\s*default \$http_host;\s*\}', conf)
    assert "proxy_set_header Host $host;" not in conf


def test_it_keeps_record_keys_out_of_the_proxys_access_log(tmp_path):
    conf = _rendered_nginx_conf(tmp_path)
    log_format = re.search(r"log_format front (.*?);", conf, re.S).group(1)
    for variable in ("$request ", "$request_uri", "$uri", "$args", "$query_string", "$http_referer"):
        assert variable not in log_format + " "


def test_it_sets_the_slow_client_timeouts_and_buffering(tmp_path):
    conf = _rendered_nginx_conf(tmp_path)
    for directive in ("client_header_timeout 10s;", "client_body_timeout 10s;", "send_timeout 10s;",
                      "keepalive_timeout 30s;", "proxy_request_buffering on;", "proxy_buffering on;"):
        assert directive in conf
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (./scripts/test.sh installs it)")
    result = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                            capture_output=True, text=True, timeout=30)
    # Syntax only: the certificate files of production do not exist here.
    assert "unknown directive" not in result.stderr and "invalid" not in result.stderr, result.stderr
