"""A small Flask app: what most dynocorn users serve. `dynocorn --chdir examples flask_app:app`."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, object]:
    return {"message": "Hello from Flask on dynocorn", "pid": os.getpid()}


@app.get("/json")
def json_endpoint() -> object:
    return jsonify(message="Hello, World!")


@app.post("/echo")
def echo() -> dict[str, object]:
    return {"length": len(request.get_data()), "content_type": request.content_type}


@app.get("/headers")
def headers() -> dict[str, object]:
    return {
        "scheme": request.scheme,
        "host": request.host,
        "remote_addr": request.remote_addr,
        "request_id": request.headers.get("X-Request-Id"),
    }
