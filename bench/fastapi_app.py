"""The FastAPI cell's app: examples/flask_app.py's `/json` route as FastAPI users write it.

A module of its own, so that the WSGI cells (bench/apps.py) do not import FastAPI."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def json_endpoint() -> dict[str, str]:
    return {"message": "Hello, World!"}
