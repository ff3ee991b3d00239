"""The type of every setting's value: `Config` inherits these annotations, so strict
type checking sees a misspelt setting or a value used as the wrong type.

Generated from the settings table by `make docs` (dynocorn/docs.py); a test fails when
it is out of date. Do not edit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SettingValues:
    config: str | None
    wsgi_app: str | None
    env_file: list[str]
    no_env_file: bool
    bind: list[str]
    backlog: int
    reuse_port: bool
    workers: int
    worker_class: str
    threads: int
    worker_connections: int
    max_requests: int
    max_requests_jitter: int
    max_worker_lifetime: int
    timeout: int
    graceful_timeout: int
    keepalive: int
    asgi_loop: str
    asgi_lifespan: str
    asgi_disconnect_grace_period: int
    websocket_max_message_size: int
    root_path: str
    memory_quota: int | None
    worker_memory: int
    max_worker_memory: int | None
    max_worker_memory_hard: int | None
    memory_budget: float
    metrics_interval: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    preload_app: bool
    sendfile: bool
    chdir: str | None
    daemon: bool
    raw_env: list[str]
    pidfile: str | None
    worker_tmp_dir: str | None
    user: int | str | None
    group: int | str | None
    umask: int
    initgroups: bool
    tmp_upload_dir: str | None
    secure_scheme_headers: dict[str, str]
    forwarded_allow_ips: list[str]
    pythonpath: str | None
    proxy_protocol: str
    proxy_allow_ips: list[str]
    paste: str | None
    accesslog: str | None
    access_log_format: str
    access_log_style: str | None
    errorlog: str
    loglevel: str
    capture_output: bool
    logger_class: str
    logconfig: str | None
    logconfig_dict: dict[str, Any]
    logconfig_json: str | None
    syslog: bool
    syslog_addr: str
    syslog_prefix: str | None
    syslog_facility: str
    disable_redirect_access_to_syslog: bool
    enable_stdio_inheritance: bool
    statsd_host: str | None
    statsd_prefix: str
    dogstatsd_tags: str
    control_socket: str | None
    control_socket_mode: int
    control_socket_disable: bool
    metrics_bind: str | None
    otlp_endpoint: str | None
    otlp_interval: float
    proc_name: str | None
    default_proc_name: str
    keyfile: str | None
    certfile: str | None
    ca_certs: str | None
    cert_reqs: int
    ciphers: str | None
    reload: bool
    reload_engine: str
    reload_extra_files: list[str]
    spew: bool
    check_config: bool
    print_config: bool
    on_starting: Callable[..., Any]
    on_reload: Callable[..., Any]
    when_ready: Callable[..., Any]
    pre_fork: Callable[..., Any]
    post_fork: Callable[..., Any]
    post_worker_init: Callable[..., Any]
    worker_int: Callable[..., Any]
    worker_abort: Callable[..., Any]
    pre_exec: Callable[..., Any]
    pre_request: Callable[..., Any]
    post_request: Callable[..., Any]
    child_exit: Callable[..., Any]
    worker_exit: Callable[..., Any]
    nworkers_changed: Callable[..., Any]
    on_exit: Callable[..., Any]
    enable_backlog_metric: bool
    protocol: str
    uwsgi_allow_ips: str
    ssl_version: str
    suppress_ragged_eofs: bool
    do_handshake_on_connect: bool
    ssl_context: Callable[..., Any]
    http_protocols: str
    http2_cleartext: str
    http2_max_concurrent_streams: int
    http2_initial_window_size: int
    http2_max_frame_size: int
    http2_max_header_list_size: int
    raw_paste_global_conf: list[str]
    permit_obsolete_folding: bool
    strip_header_spaces: bool
    permit_unconventional_http_method: bool
    permit_unconventional_http_version: bool
    casefold_http_method: bool
    forwarder_headers: str
    header_map: str
    http_parser: str
    dirty_apps: list[str]
    dirty_workers: int
    dirty_timeout: int
    dirty_threads: int
    dirty_graceful_timeout: int
    on_dirty_starting: Callable[..., Any]
    dirty_post_fork: Callable[..., Any]
    dirty_worker_init: Callable[..., Any]
    dirty_worker_exit: Callable[..., Any]
