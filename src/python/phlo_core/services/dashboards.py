"""Superset's dashboards as code: the bundle in infra/superset (Superset's own import format,
YAML: the database, a dataset per published mart, the charts, the dashboards, all linked by
fixed UUIDs), imported into a running Superset over its REST API and exported back from it.

Import (`/api/v1/assets/import/`) replaces every object of the bundle by its UUID, so importing
twice changes nothing and a chart edited in the repository wins over the UI's copy. The
database the dashboards read is where the settings publish the marts
(PHLO_PUBLISH_POSTGRES_URL): its address goes into the imported copy, its password only into
the import request's `passwords` field (Superset keeps it encrypted with its secret key); the
repository's YAML names neither (`XXXXXXXXXX`, Superset's mask, stands for the password).

Export (`/api/v1/assets/export/`) writes what Superset holds back into the bundle's layout, the
database's address masked again, so a dashboard edited in the UI can be committed; files the
export leaves unchanged are not rewritten.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import yaml

from phlo_core.services.layout import ServiceError
from phlo_core.workspace import REPO_ROOT

BUNDLE_DIR = REPO_ROOT / "infra" / "superset"
MASK = "XXXXXXXXXX"  # Superset's stand-in for a password it does not show
CANONICAL_HOST = "127.0.0.1:5432"  # the address the repository's copy names
_ARCHIVE_ROOT = "phlo_dashboards"
_TIMEOUT = 120.0


class DashboardError(ServiceError):
    """The dashboards could not be imported or exported; one line, no secret in it."""


@dataclass(frozen=True)
class Dashboard:
    title: str
    slug: str
    url: str
    charts: int


def read_bundle(folder: Path = BUNDLE_DIR) -> dict[str, dict[str, Any]]:
    """Every YAML file of the bundle, by its path inside the bundle."""
    if not (folder / "metadata.yaml").is_file():
        raise DashboardError(f"{folder} holds no Superset bundle (no metadata.yaml)")
    found = {}
    for path in sorted(folder.rglob("*.yaml")):
        found[path.relative_to(folder).as_posix()] = yaml.safe_load(path.read_text()) or {}
    return found


def database_target(publish_url: str) -> tuple[str, str]:
    """(the SQLAlchemy URI Superset gets, its password masked; the password) for the marts'
    PostgreSQL URL."""
    parts = urlsplit(publish_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise DashboardError("PHLO_PUBLISH_POSTGRES_URL is not a postgresql:// URL")
    if not parts.hostname or not parts.path.strip("/"):
        raise DashboardError("PHLO_PUBLISH_POSTGRES_URL names no host or database")
    user = unquote(parts.username or "postgres")
    return _with_netloc(parts, user, MASK), unquote(parts.password or "")


def _with_netloc(parts: SplitResult, user: str, password: str) -> str:
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    query = f"?{parts.query}" if parts.query else ""
    login = f"{quote(user, safe='')}:{password}"
    return f"postgresql+psycopg2://{login}@{host}{port}{parts.path}{query}"


def bundle_archive(bundle: Mapping[str, dict[str, Any]], database_uri: str) -> bytes:
    """The bundle as the zip Superset imports, every database pointed at `database_uri`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in bundle.items():
            if name.startswith("databases/"):
                content = {**content, "sqlalchemy_uri": database_uri}
            archive.writestr(f"{_ARCHIVE_ROOT}/{name}", yaml.safe_dump(content, sort_keys=False))
    return buffer.getvalue()


class SupersetApi:
    """A logged-in session on Superset's REST API (a bearer token and the CSRF token its
    writes want)."""

    def __init__(self, url: str, user: str, password: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=_TIMEOUT)
        try:
            login = self._client.post(
                "/api/v1/security/login",
                json={"username": user, "password": password, "provider": "db", "refresh": False},
            )
        except httpx.HTTPError as exc:
            self._client.close()
            raise DashboardError(f"Superset at {self.url} does not answer: {exc}") from None
        if login.status_code != 200:
            self._client.close()
            raise DashboardError(f"Superset refused the login of {user!r} ({login.status_code})")
        self._client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        csrf = self._get("/api/v1/security/csrf_token/")["result"]
        self._client.headers.update({"X-CSRFToken": csrf, "Referer": self.url})

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, **params: str) -> Any:
        answer = self._client.get(path, params=params)
        if answer.status_code != 200:
            raise DashboardError(f"Superset {path}: {answer.status_code} {_message(answer.text)}")
        return answer.json()

    def import_assets(self, archive: bytes, passwords: Mapping[str, str]) -> None:
        answer = self._client.post(
            "/api/v1/assets/import/",
            files={"bundle": ("bundle.zip", archive, "application/zip")},
            data={"passwords": json.dumps(dict(passwords))},
        )
        if answer.status_code != 200:
            raise DashboardError(f"Superset refused the bundle: {_message(answer.text)}")

    def export_assets(self) -> bytes:
        answer = self._client.get("/api/v1/assets/export/")
        if answer.status_code != 200:
            raise DashboardError(f"Superset's export failed: {answer.status_code}")
        return answer.content

    def dashboards(self) -> list[dict[str, Any]]:
        query = "(columns:!(id,uuid,dashboard_title,slug,url),page_size:100)"
        return self._get("/api/v1/dashboard/", q=query)["result"]

    def update_chart(self, chart_id: int, fields: Mapping[str, Any]) -> None:
        answer = self._client.put(f"/api/v1/chart/{chart_id}", json=dict(fields))
        if answer.status_code != 200:
            raise DashboardError(f"Superset kept chart {chart_id}: {_message(answer.text)}")

    def charts(self) -> list[dict[str, Any]]:
        query = "(columns:!(id,uuid,slice_name,viz_type),page_size:100)"
        return self._get("/api/v1/chart/", q=query)["result"]

    def dashboard_charts(self, id_or_slug: str | int) -> list[dict[str, Any]]:
        return self._get(f"/api/v1/dashboard/{id_or_slug}/charts")["result"]

    def chart_data(self, chart_id: int) -> list[dict[str, Any]]:
        """The rows of the chart's saved query, as its data endpoint answers them."""
        answer = self._get(f"/api/v1/chart/{chart_id}/data/", format="json", type="full")
        return [row for result in answer["result"] for row in result["data"]]


def _message(text: str) -> str:
    """An error body's message, on one line (Superset answers JSON with `message`/`errors`)."""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    if isinstance(body, dict):
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            first = errors[0]
            extra = first.get("extra") or {}
            detail = json.dumps(extra.get("errors") or extra, default=str)[:300] if extra else ""
            return f"{first.get('message', '')} {detail}".strip()
        return str(body.get("message", body))[:300]
    return str(body)[:300]


@contextmanager
def superset_session(url: str, user: str, password: str) -> Iterator[SupersetApi]:
    api = SupersetApi(url, user, password)
    try:
        yield api
    finally:
        api.close()


def import_dashboards(
    api: SupersetApi, publish_url: str, folder: Path = BUNDLE_DIR
) -> list[Dashboard]:
    """Import the bundle, its database pointed at the marts published to `publish_url`; the
    bundle's dashboards as Superset now holds them."""
    bundle = read_bundle(folder)
    uri, password = database_target(publish_url)
    passwords = {name: password for name in bundle if name.startswith("databases/")}
    api.import_assets(bundle_archive(bundle, uri), passwords)
    wanted = {
        str(content["uuid"]) for name, content in bundle.items() if name.startswith("dashboards/")
    }
    return [
        Dashboard(
            title=found["dashboard_title"],
            slug=found.get("slug") or str(found["id"]),
            url=f"{api.url}{found['url']}",
            charts=len(api.dashboard_charts(found["id"])),
        )
        for found in api.dashboards()
        if str(found.get("uuid")) in wanted
    ]


def export_dashboards(api: SupersetApi, folder: Path = BUNDLE_DIR) -> list[str]:
    """Write Superset's databases, datasets, charts and dashboards into `folder` in the
    bundle's layout and form (below); the files written or removed.

    What depends on the Superset it came from is left out, so that an export of what was just
    imported changes nothing: the numeric ids Superset gave the objects (in the file names, the
    charts' datasource, the dashboards' layout), the database's address (the bundle's stays),
    the order Superset lists a dataset's columns in (by name). An object already in the bundle
    keeps its file; one that Superset no longer holds loses it."""
    kept = read_bundle(folder) if (folder / "metadata.yaml").is_file() else {}
    by_uuid = {str(content.get("uuid")): name for name, content in kept.items()}
    exported: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(io.BytesIO(api.export_assets())) as archive:
        for member in archive.namelist():
            if not member.endswith(".yaml") or "/" not in member:
                continue
            name = member.split("/", 1)[1]
            content = yaml.safe_load(archive.read(member)) or {}
            if name == "metadata.yaml":
                exported[name] = kept.get(name) or content  # only its timestamp would change
                continue
            name = by_uuid.get(str(content.get("uuid"))) or re.sub(r"_[0-9]+\.yaml$", ".yaml", name)
            exported[name] = _canonical(name, content, kept.get(name))
    changed = []
    for name, content in exported.items():
        if kept.get(name) != content:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
            changed.append(name)
    for name in kept.keys() - exported.keys():
        if name.split("/", 1)[0] in ("databases", "datasets", "charts", "dashboards"):
            (folder / name).unlink()
            changed.append(name)
    return sorted(changed)


def _canonical(name: str, content: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """An exported object without what ties it to one Superset (see export_dashboards)."""
    kind = name.split("/", 1)[0]
    if kind == "databases":
        uri = (before or {}).get("sqlalchemy_uri") or _canonical_uri(content["sqlalchemy_uri"])
        content["sqlalchemy_uri"] = uri
    elif kind == "datasets":
        content["columns"] = sorted(content.get("columns") or [], key=lambda c: c["column_name"])
    elif kind == "charts":
        content["params"]["datasource"] = ""
        content["params"].pop("dashboards", None)
        if content.get("query_context"):
            query_context = json.loads(content["query_context"])
            query_context["datasource"] = {"id": 0, "type": "table"}
            if "form_data" in query_context:
                query_context["form_data"] = content["params"]
            for query in query_context.get("queries", []):
                if "datasource" in query:
                    query["datasource"] = query_context["datasource"]
            content["query_context"] = json.dumps(query_context)
    elif kind == "dashboards":
        for element in (content.get("position") or {}).values():
            if isinstance(element, dict) and element.get("type") == "CHART":
                element.setdefault("meta", {})["chartId"] = 0
    return content


def _canonical_uri(uri: str) -> str:
    """The repository's form of a database URI: the password masked, the host the one every
    deployment replaces at import (only the database's name is kept)."""
    parts = urlsplit(uri)
    canonical = urlsplit(f"postgresql://x@{CANONICAL_HOST}{parts.path}")
    return _with_netloc(canonical, unquote(parts.username or "phlo"), MASK)
