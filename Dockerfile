# A container for a WSGI app served by dynocorn. Copy this file beside your app; its
# requirements.txt must name dynocorn (README: "Installing").
FROM python:3.13-slim

# Logs straight to the container's output; no .pyc files written at run time; no pip cache
# in the image. PORT: dynocorn listens on [::]:$PORT (0.0.0.0 where IPv6 is off), as on a dyno.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=8000

WORKDIR /app
# Dependencies first: a code change then rebuilds only the layers below.
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .

# Not root: a process that needs no privilege should not have them.
RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 8000

# What `docker stop` and Kubernetes send to PID 1 (dynocorn's master): finish the requests
# in flight, then exit 0. `docker stop` sends SIGKILL 10 s later, so the requests get 8 s
# here: raise both together (`docker run --stop-timeout 35` with `--graceful-timeout 30`;
# Kubernetes' terminationGracePeriodSeconds, deploy/kubernetes/).
STOPSIGNAL SIGTERM

# Exec form: dynocorn is PID 1 itself, gets the signals, and reaps orphans. The worker count
# comes from the container's memory limit and CPUs (or WEB_CONCURRENCY).
CMD ["dynocorn", "--graceful-timeout", "8", "app:app"]
