"""gunicorn configuration of the production web service (docker/compose.yaml, the README's
production recipe, tests/test_front_proxy.py): ``gunicorn -c docker/gunicorn.conf.py
portal.wsgi:application``.

gunicorn runs behind nginx (docker/nginx/nginx.conf.template), never facing clients: nginx
reads each request whole (header and body, with timeouts) before it opens an upstream
request, and buffers each response, so a slow or stalled client ties up an nginx
connection (cheap, event driven) and never a gunicorn worker. Facing clients directly,
16 connections that send headers and then stall took every worker (issue 12).

Worker model, measured behind nginx on the 2-core development machine (wrk, 32
connections, 10 s; figures in the README's production section): sync workers and gthread
workers served a record GET within a few percent of each other, and gthread kept upstream
keep-alive connections from nginx open (sync closes each one). We use gthread:
``GUNICORN_WORKERS`` processes (default 2 × cores) × ``GUNICORN_THREADS`` threads (default
4), so a request waiting on PostgreSQL or KMS does not idle a whole process. An ASGI server
gains nothing here: every view is synchronous Django (ORM, boto3), which under ASGI runs in
a thread pool anyway.
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
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Longer than nginx keeps idle upstream connections (keepalive_timeout 60 s in the upstream
# block's default), so gunicorn never closes one nginx is about to reuse.
keepalive = 75
timeout = 30
graceful_timeout = 20
# The app writes one portal.request line per request; nginx writes the access log.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
