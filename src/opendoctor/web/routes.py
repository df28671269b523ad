"""`/ui`: the dashboard's shell and files.

The shell and its scripts hold no data: they are served to anyone, as a login page is.
Every piece of data the pages show comes from the API with the caller's identity (a
token, or the identity headers a proxy adds), under the API's own rules: a project
sees its own servers and alarms, the admin everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
# The pages run only the scripts served here: no inline script, nothing from elsewhere.
# Inline styles are allowed (the graph library sets its canvas's style attribute; a
# style runs no code).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(prefix="/ui", include_in_schema=False)


def _shell() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"},
    )


@router.get("")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/")
async def ui_index() -> FileResponse:
    return _shell()


@router.get("/config.json")
async def ui_config(request: Request) -> JSONResponse:
    """What the login needs to know: how callers identify themselves here, and whether
    the libraries were built (`make web`)."""
    settings: Any = request.app.state.settings
    return JSONResponse(
        {
            "auth_mode": settings.api.auth_mode,
            "libraries": (VENDOR / ".built").exists(),
        }
    )


def mount(app: FastAPI) -> None:
    """Serve the dashboard from `app`, the API's."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC, check_dir=False), name="ui-static")
