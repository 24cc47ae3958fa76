"""The console's HTTP side (FastAPI): the REST API under ``/api/v1`` (OpenAPI at ``/docs``) and the page.

Reads need no token unless ``console.token_for_reads``; every change needs ``Authorization: Bearer
<console.token>`` (401 without it; 403 when no token is configured: the console is then read-only), checked
by :mod:`pipeline.web.auth` like every Vigil HTTP endpoint.
Camera URLs are always redacted: credentials never reach the browser or an API client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import Body, Depends, FastAPI, HTTPException, Path
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from pipeline.console.data import ConsoleData
from pipeline.core.camera_store import validate_stream, with_update
from pipeline.core.config import ConsoleConfig, StreamConfig, classifier_problems
from pipeline.core.errors import BusError, ConfigError
from pipeline.web.auth import bearer

API = "/api/v1"
LIVE_EVERY_S = 1.0
# A camera's id in a route: ``{sid}`` is the HTTP API's name for it (OpenAPI, error bodies), kept as it was.
StreamIdInPath = Annotated[str, Path(alias="sid")]


def _labelled(jpeg: bytes, view: dict[str, Any]) -> bytes:
    """The picture with the camera's label and scene drawn in its top-left corner."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return jpeg
    label, scene = view.get("label"), view.get("scene")
    text = f"{label['name'].split(',')[0]} {label['score']:.2f}" if label else "no result yet"
    if scene:
        text += f" / {scene['name']}"
    cv2.rectangle(img, (0, 0), (min(img.shape[1], 12 + 9 * len(text)), 26), (0, 0, 0), -1)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return bytes(buf.tobytes()) if ok else jpeg


def _valid(doc: dict[str, Any]) -> StreamConfig:
    """The camera ``doc`` describes, or 422 naming each bad field as ``vigil config check`` does."""
    try:
        return validate_stream(doc)
    except ConfigError as exc:
        raise HTTPException(422, {"message": str(exc), "problems": exc.problems}) from exc


def _fits(data: ConsoleData, stream: StreamConfig) -> StreamConfig:
    """``stream``, or 422 when one of its zones is too small on the camera's real resolution (when known), or when
    it takes a zone away from a classifier that runs on it."""
    resolution_wh = data.resolution_wh(stream.id)
    problems = [f"zones[{i}]: {p}" for i, z in enumerate(stream.zones)
                if resolution_wh is not None and (p := z.size_problem(resolution_wh))]
    problems += _classifier_problems(data, stream.id, stream)
    if problems:
        raise HTTPException(422, {"message": "; ".join(problems), "problems": problems})
    return stream


def _classifier_problems(data: ConsoleData, stream_id: str, stream: StreamConfig | None) -> list[str]:
    """What the change of camera ``stream_id`` to ``stream`` (None: removed) would take from the config's
    classifiers (what they lacked before is not this change's doing, and does not block it)."""
    now = data.streams()
    after = [s for s in now if s.id != stream_id] + ([stream] if stream is not None else [])
    before = set(classifier_problems(data.cfg.classifiers, now))
    return [f"{p} (the config's classifiers use it: change them first, or keep it)"
            for p in classifier_problems(data.cfg.classifiers, after) if p not in before]


def _store(data: ConsoleData, stream_id: str, change: dict[str, Any]) -> None:
    try:
        data.store.put(stream_id, change)
    except BusError as exc:
        raise HTTPException(503, str(exc)) from exc


def _configured(stream: StreamConfig) -> dict[str, Any]:
    """A camera as it was accepted (URL redacted); its state follows once an ingest worker runs it."""
    return {"id": stream.id, "url": stream.redacted_url(), "fps": stream.fps, "resize": stream.resize,
            "loop": stream.loop, "full_frame": stream.full_frame,
            "zones": [z.model_dump(mode="json", exclude_none=True) for z in stream.zones], "state": "accepted"}


def build_app(data: ConsoleData, cfg: ConsoleConfig, stop: threading.Event | None = None) -> FastAPI:
    """The console application over ``data``; ``stop`` ends the live event streams (at shutdown)."""
    app = FastAPI(title="Vigil console", version="1", docs_url="/docs", openapi_url=f"{API}/openapi.json",
                  description="Cameras, what the model says about them, and their pictures.")

    reads = bearer(cfg.token, change=False, setting="console.token", app="the console", required=cfg.token_for_reads)
    changes = bearer(cfg.token, change=True, setting="console.token", app="the console")
    _read_routes(app, data, [Depends(reads)], stop or threading.Event())
    _change_routes(app, data, [Depends(changes)])
    static = resources.files("pipeline.console").joinpath("static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return static.joinpath("index.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _found(data: ConsoleData, stream_id: str) -> dict[str, Any]:
    view = data.view(stream_id)
    if view is None:
        raise HTTPException(404, f"no camera {stream_id!r}; GET {API}/streams lists them")
    return view


def _read_routes(app: FastAPI, data: ConsoleData, reads: list[Any], stop: threading.Event) -> None:
    @app.get(f"{API}/health", dependencies=reads, summary="Is the console's Redis up, and how many cameras are live")
    def health() -> dict[str, Any]:
        views = data.views()
        return {"status": "ok", "cameras": len(views), "live": sum(v["state"] == "live" for v in views)}

    @app.get(f"{API}/streams", dependencies=reads, summary="Every camera: state, fps, label, scene, frame age")
    def streams() -> list[dict[str, Any]]:
        return data.views()

    @app.get(f"{API}/sinks", dependencies=reads,
             summary="Every sink: records its output refused for good (in the results dead-letter), last refusal")
    def sinks() -> list[dict[str, Any]]:
        return data.sinks()

    @app.get(f"{API}/streams/{{sid}}", dependencies=reads, summary="One camera")
    def stream(stream_id: StreamIdInPath) -> dict[str, Any]:
        return _found(data, stream_id)

    @app.get(f"{API}/streams/{{sid}}/snapshot.jpg", dependencies=reads, response_class=Response,
             summary="The camera's latest picture (JPEG); ?label=true draws the label in")
    def snapshot(stream_id: StreamIdInPath, label: bool = False) -> Response:
        view = _found(data, stream_id)
        jpeg = data.snapshot(stream_id)
        if jpeg is None:
            raise HTTPException(404, f"camera {stream_id!r} has no recent picture (state: {view['state']})")
        return Response(_labelled(jpeg, view) if label else jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})

    @app.get(f"{API}/streams/{{sid}}/events", dependencies=reads,
             summary="The camera's recent label, scene, state and health changes, oldest first")
    def events(stream_id: StreamIdInPath, limit: int = 200) -> list[dict[str, Any]]:
        _found(data, stream_id)
        return data.timeline(stream_id, limit)

    @app.get(f"{API}/streams/{{sid}}/results", dependencies=reads, summary="The camera's newest results")
    def results(stream_id: StreamIdInPath, limit: int = 50) -> list[dict[str, Any]]:
        _found(data, stream_id)
        return data.recent_results(stream_id, limit)

    @app.get(f"{API}/live", dependencies=reads, response_class=StreamingResponse,
             summary="Server-sent events: the camera list (as GET /streams) once a second")
    def live() -> StreamingResponse:
        return StreamingResponse(_live(data.views, stop), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})


def _change_routes(app: FastAPI, data: ConsoleData, changes: list[Any]) -> None:
    @app.post(f"{API}/streams", dependencies=changes, status_code=201,
              summary="Add a camera (body: one streams[] entry of the config); the ingest workers start it")
    def add(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        stream = _fits(data, _valid(body))
        if data.stream(stream.id) is not None:
            raise HTTPException(409, f"camera {stream.id!r} exists; PATCH {API}/streams/{stream.id} changes it")
        _store(data, stream.id, {"set": body})
        return _configured(stream)

    @app.patch(f"{API}/streams/{{sid}}", dependencies=changes,
               summary="Change a camera: the given keys replace its settings; the ingest workers restart it")
    def change(stream_id: StreamIdInPath, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        current = data.stream(stream_id)
        if current is None:
            raise HTTPException(404, f"no camera {stream_id!r}; POST {API}/streams adds one")
        if body.get("id", stream_id) != stream_id:
            raise HTTPException(422, {"message": "id: cannot be changed; add a new camera and remove this one",
                                      "problems": ["id: cannot be changed"]})
        return _replace(data, current, body)

    @app.put(f"{API}/streams/{{sid}}/zones", dependencies=changes,
             summary="Set a camera's zones (body: a list of streams[].zones entries); applied without reconnecting")
    def set_zones(stream_id: StreamIdInPath, body: Annotated[list[dict[str, Any]], Body()]) -> dict[str, Any]:
        current = data.stream(stream_id)
        if current is None:
            raise HTTPException(404, f"no camera {stream_id!r}; POST {API}/streams adds one")
        return _replace(data, current, {"zones": body})

    @app.delete(f"{API}/streams/{{sid}}", dependencies=changes, status_code=204, response_class=Response,
                summary="Remove a camera; the ingest workers stop it")
    def remove(stream_id: StreamIdInPath) -> Response:
        if data.stream(stream_id) is None:
            raise HTTPException(404, f"no camera {stream_id!r}")
        problems = _classifier_problems(data, stream_id, None)
        if problems:
            raise HTTPException(422, {"message": "; ".join(problems), "problems": problems})
        _store(data, stream_id, {"removed": True})
        return Response(status_code=204)


def _replace(data: ConsoleData, current: StreamConfig, body: dict[str, Any]) -> dict[str, Any]:
    """Store the keys of ``body`` as the camera's change (422 and nothing stored when the result is not valid): a
    camera added at runtime gets them in its stored entry; a camera of the YAML an ``update`` on top of it, so its
    URL (secrets expanded from ``${VAR}``) and health are never copied into Redis."""
    try:
        before = data.store.changes().get(current.id, {})
    except BusError as exc:
        raise HTTPException(503, str(exc)) from exc
    if "set" in before:
        change: dict[str, Any] = {"set": {**before["set"], **body}}
        stream = _valid(change["set"])
    else:
        change = {"update": {**before.get("update", {}), **body}}
        try:
            stream = with_update(next(s for s in data.cfg.streams if s.id == current.id), change["update"])
        except ConfigError as exc:
            raise HTTPException(422, {"message": str(exc), "problems": exc.problems}) from exc
    _fits(data, stream)
    _store(data, current.id, change)
    return _configured(stream)


def _live(views: Callable[[], list[dict[str, Any]]], stop: threading.Event) -> Iterator[str]:
    while not stop.is_set():
        yield f"event: streams\ndata: {json.dumps(views())}\n\n"
        stop.wait(LIVE_EVERY_S)
