"""Settings gunicorn 27 added (HTTP/2, dirty arbiters, parser relaxations) that dynocorn
does not implement. They are accepted so that a gunicorn 27 Procfile or config file keeps
working, and warned about when set (settings.py makes them settings); docs/settings.md lists them
in one paragraph.
"""

from typing import Any

# name, flag, gunicorn's default (None for a hook: settings.py gives it the empty hook), kind
GUNICORN_EXTRAS: list[tuple[str, str | None, Any, str]] = [
    # name, flag, gunicorn's default, kind
    ("enable_backlog_metric", "--enable-backlog-metric", False, "bool"),
    ("protocol", "--protocol", "http", "str"),
    ("uwsgi_allow_ips", "--uwsgi-allow-from", "127.0.0.1,::1", "str"),
    ("ssl_version", "--ssl-version", "TLS", "str"),
    ("suppress_ragged_eofs", "--suppress-ragged-eofs", True, "bool"),
    ("do_handshake_on_connect", "--do-handshake-on-connect", False, "bool"),
    ("ssl_context", None, None, "hook"),
    ("http_protocols", "--http-protocols", "h1", "str"),
    ("http2_cleartext", "--http2-cleartext", "off", "str"),
    ("http2_max_concurrent_streams", "--http2-max-concurrent-streams", 100, "int"),
    ("http2_initial_window_size", "--http2-initial-window-size", 65535, "int"),
    ("http2_max_frame_size", "--http2-max-frame-size", 16384, "int"),
    ("http2_max_header_list_size", "--http2-max-header-list-size", 65536, "int"),
    ("raw_paste_global_conf", "--paste-global", [], "list"),
    ("permit_obsolete_folding", "--permit-obsolete-folding", False, "bool"),
    ("strip_header_spaces", "--strip-header-spaces", False, "bool"),
    ("permit_unconventional_http_method", "--permit-unconventional-http-method", False, "bool"),
    ("permit_unconventional_http_version", "--permit-unconventional-http-version", False, "bool"),
    ("casefold_http_method", "--casefold-http-method", False, "bool"),
    ("forwarder_headers", "--forwarder-headers", "SCRIPT_NAME,PATH_INFO", "str"),
    ("header_map", "--header-map", "drop", "str"),
    ("http_parser", "--http-parser", "auto", "str"),
    ("dirty_apps", "--dirty-app", [], "list"),
    ("dirty_workers", "--dirty-workers", 0, "int"),
    ("dirty_timeout", "--dirty-timeout", 300, "int"),
    ("dirty_threads", "--dirty-threads", 1, "int"),
    ("dirty_graceful_timeout", "--dirty-graceful-timeout", 30, "int"),
    ("on_dirty_starting", None, None, "hook"),
    ("dirty_post_fork", None, None, "hook"),
    ("dirty_worker_init", None, None, "hook"),
    ("dirty_worker_exit", None, None, "hook"),
]
