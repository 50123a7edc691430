"""gunicorn configuration of the production web service (docker/compose.yaml, the README's
production recipe, tests/test_front_proxy.py): ``gunicorn -c docker/gunicorn.conf.py
portal.wsgi:application``.

gunicorn runs behind nginx (docker/nginx/nginx.conf.template), never facing clients: nginx
reads each request whole (header and body, with timeouts) before it opens an upstream
request, and buffers each response, so a slow or stalled client ties up an nginx
connection (cheap, event driven) and never a gunicorn worker. Facing clients directly,
16 connections that send headers and then stall took every worker (issue 12).

Worker model: sync, 2 x cores + 1 processes (gunicorn's rule of thumb), chosen from
measurements behind this nginx on the 2-core development machine, quiet apart from the run
(`make bench`'s part 1, `--proxy-only --rounds 3 --seconds 5`: wrk, 32 connections over
HTTPS, median of three interleaved rounds; 4 December 2026, load average 1.7 to 13 during
the runs, which load the machine themselves):

  model          bare   +SELECT  +upsert   GET    PUT   GET/SELECT  PUT/upsert  p99 GET/PUT ms
  gthread 2x16   3624    2062     1414    1573   1072     0.76        0.76        56 / 68
  gthread 4x4    3913    2116     1493    1624   1167     0.77        0.78        46 / 80
  gthread 2x4    3694    2081     1560    1615   1209     0.78        0.77        35 / 62
  sync 5         3868    2142     1593    1682   1307     0.79        0.82        22 / 28
  sync 9         4077    2037     1481    1524   1204     0.75        0.81        28 / 36

(req/s; record GET and PUT of a platform-managed environment, 1 KiB records.) sync with
2 x cores + 1 answered the most GETs and PUTs and had a third to a half of gthread's p99:
one request per process, so no request waits for the GIL behind another's Python, and
nginx, which holds every request until it is complete, queues the rest evenly (gthread
keeps its keep-alive connections, so their load stays where they first landed). This is
the set-up gunicorn's deployment guide describes: sync workers behind a buffering proxy,
which is what makes them safe from slow clients. What it costs: a request that waits
(KMS or STS on a data-key cache miss, within the data plane's few-second budget; a
transient failure is then held for 2 s, keys/cache.py) holds its whole process, and
`timeout` below is a hard limit on every request. So a KMS that hangs while caches are
cold can hold every process for one such budget (a trial saw /healthz wait 7.5 s behind
8 such requests on 5 processes), once per process every 2 s while it lasts; gthread
would keep threads for other requests. Raise GUNICORN_WORKERS if that matters more than
latency. An earlier measurement (1 December, at
load 5 to 11) saw sync collapse behind nginx; that was not reproduced on a quiet machine.
An ASGI server (uvicorn workers) was not measured: every view is synchronous Django (ORM,
boto3), which under ASGI runs in a thread pool anyway, so it would add a hop for nothing.
GUNICORN_WORKER_CLASS=gthread with GUNICORN_THREADS keeps the threaded model available.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "sync"
workers = int(os.environ.get("GUNICORN_WORKERS") or 2 * multiprocessing.cpu_count() + 1)
# Threads per process, gthread only: sync serves one request per process, and gunicorn turns
# a sync worker with more than one thread into gthread.
threads = int(os.environ.get("GUNICORN_THREADS") or (4 if worker_class == "gthread" else 1))

# X-Forwarded-Proto sets the request's scheme only when it comes from these addresses: the
# proxy's (a fixed address in docker/compose.yaml; loopback by default). Django reads the
# scheme from gunicorn (SECURE_PROXY_SSL_HEADER stays off), so a client that reaches
# gunicorn some other way cannot claim HTTPS. Only the one header nginx sets is honoured.
# The portal reads the same variable for X-Forwarded-For (TRUSTED_PROXY_ADDRESSES in
# portal/settings.py), so such a client cannot claim another address either.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# gthread: longer than nginx keeps idle upstream connections (the upstream block's
# keepalive_timeout, 60 s by default), so gunicorn never closes one nginx is about to reuse.
# sync workers close the connection after each answer; nginx then opens another.
keepalive = 75
timeout = 30
graceful_timeout = 20
# No runtime control socket (gunicorn 25.1+ opens $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl by default: one path for every gunicorn of the user, so on a
# host running several, gunicornc would reach whichever bound it last). Nothing here uses
# gunicornc; signals (HUP, TERM) still work.
control_socket_disable = True
# The app writes one portal.request line per request; nginx writes the access log.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
