"""gunicorn configuration of the production web service (docker/compose.yaml, the README's
production recipe, tests/test_front_proxy.py): ``gunicorn -c docker/gunicorn.conf.py
portal.wsgi:application``.

gunicorn runs behind nginx (docker/nginx/nginx.conf.template), never facing clients: nginx
reads each request whole (header and body, with timeouts) before it opens an upstream
request, and buffers each response, so a slow or stalled client ties up an nginx
connection (cheap, event driven) and never a gunicorn worker. Facing clients directly,
16 connections that send headers and then stall took every worker (issue 12).

Worker model: gthread, chosen from measurements behind this nginx on the 2-core development
machine (wrk, 32 connections, 8 s per figure, record GET of a platform-managed environment
and a bare Django JSON view; the machine was shared, load average 5 to 11, so the figures
are rough; 1 December 2026):

  record GET via nginx, req/s        gthread 4x4: 147, 71, 40   gthread 2x4: 122, 101, 63
                                     sync 5 workers: 7, 4, 0 (p50 7 s, or nothing at all)
  bare view via nginx, req/s         gthread 4x4: 1505, 305, 662   sync 5: 255, 231, 100

Sync workers collapsed behind nginx on the record GET (gunicorn's sync worker serves one
connection at a time and closes it after each answer; why it stalled this badly was not
pinned down in the time available), and on the bare view they reached a fifth to a half of
gthread. gthread keeps nginx's upstream keep-alive connections in its poller at no cost, and
a request waiting on PostgreSQL or KMS idles one thread, not a process. Neither 4 x 4 nor
2 x 4 was clearly ahead in this noise; the default is 2 x cores processes (gunicorn's rule of
thumb) x 4 threads. The same runs sent straight to gunicorn gave the record GET 333, 80, 76
(4 x 4) and 304, 99, 103 (2 x 4) req/s: on two cores the proxy's TLS and extra hop compete
with the application for CPU. An ASGI server (uvicorn workers) was not measured: every view
is synchronous Django (ORM, boto3), which under ASGI runs in a thread pool anyway, so it
would add a hop for nothing.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("GUNICORN_WORKERS") or 2 * multiprocessing.cpu_count())
threads = int(os.environ.get("GUNICORN_THREADS") or 4)

# X-Forwarded-Proto sets the request's scheme only when it comes from these addresses: the
# proxy's (a fixed address in docker/compose.yaml; loopback by default). Django reads the
# scheme from gunicorn (SECURE_PROXY_SSL_HEADER stays off), so a client that reaches
# gunicorn some other way cannot claim HTTPS. Only the one header nginx sets is honoured.
# The portal reads the same variable for X-Forwarded-For (TRUSTED_PROXY_ADDRESSES in
# portal/settings.py), so such a client cannot claim another address either.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Longer than nginx keeps idle upstream connections (the upstream block's keepalive_timeout,
# 60 s by default), so gunicorn never closes one nginx is about to reuse.
keepalive = 75
timeout = 30
graceful_timeout = 20
# The app writes one portal.request line per request; nginx writes the access log.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
