"""The console's Jinja2 environment: templates, formatting filters and asset URLs.

Pages and the live channel render the same partial templates, so a cell pushed over the
WebSocket is byte for byte the cell a reload would show. Templates and assets are found next to
the package in an installed wheel (``agent_pm/_web``, ``agent_pm/_static``) or at the top of a
checkout.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from agent_pm.api.dashboard import _format
from agent_pm.api.dashboard._assets import AssetFiles
from agent_pm.api.dashboard._view import domid

__all__ = ["ASSETS", "STATIC_DIR", "TEMPLATE_DIR", "environment", "render"]

_PACKAGE = Path(__file__).resolve().parents[2]


def _asset_dir(name: str) -> Path:
    packaged = _PACKAGE / f"_{name}"
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


TEMPLATE_DIR = _asset_dir("web") / "templates"
STATIC_DIR = _asset_dir("static")
ASSETS = AssetFiles(STATIC_DIR)

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(domid=domid, asset=ASSETS.url)
environment.filters.update(
    count=_format.count,
    duration=_format.duration,
    ratio=_format.ratio,
    rate=_format.rate,
    utc=_format.utc,
    utc_ms=partial(_format.utc, millis=True),
    isotime=_format.utc_time,
    tojson_pretty=lambda value: json.dumps(value, indent=2, sort_keys=True),
)


def render(template: str, **context: Any) -> Markup:
    """Render ``template``; the result is safe to embed in another template."""
    return Markup(environment.get_template(template).render(**context))  # autoescaped jinja output  # noqa: S704  # nosec B704
