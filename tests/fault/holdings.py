"""What the system holds, seen from outside (the API) and from inside (the database rows and the blob directory)."""

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.fault.load import Ack, User

DOWNLOADERS = 4
# The local blob store's layout (services/catalog/content.py and blobstore/local.py).
ORIGINALS = "objects"
THUMBNAILS = "thumbs"
UNFINISHED = ".tmp"


def listed(client: httpx.Client, user: User) -> dict[str, str]:
    """uid -> status of every image GET /v1/images shows the user, page by page."""
    found, token = {}, ""
    while True:
        reply = client.get("/v1/images", params={"page_size": 100, "page_token": token}, headers=user.headers)
        reply.raise_for_status()
        page = reply.json()
        found |= {image["uid"]: image["status"] for image in page["images"]}
        if not (token := page["next_page_token"]):
            return found


def lost_uploads(client: httpx.Client, users: list[User], acks: list[Ack]) -> list[str]:
    """Acknowledged uploads that are not listed, or whose download differs from what was sent: one line each."""
    shown = {user.username: listed(client, user) for user in users}
    headers = {user.username: user.headers for user in users}
    lost = [f"{a.uid} ({a.photo.filename}) is not listed" for a in acks if a.uid not in shown[a.user]]

    def download(ack: Ack) -> str | None:
        reply = client.get(f"/v1/images/{ack.uid}/content", headers=headers[ack.user])
        if reply.status_code != 200 or reply.content != ack.photo.data:
            return f"{ack.uid} ({ack.photo.filename}) downloads as {reply.status_code}, {len(reply.content)} B"
        return None

    with ThreadPoolExecutor(DOWNLOADERS) as pool:
        lost += [problem for problem in pool.map(download, acks) if problem]
    return lost


@dataclass(frozen=True)
class Row:
    uid: str
    sha256: str
    size_bytes: int
    status: str
    created_at: datetime


def rows(dsn: str) -> list[Row]:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT uid, sha256, size_bytes, status, created_at FROM catalog.images").fetchall()
    return [Row(*values) for values in found]


@dataclass(frozen=True)
class StoredBytes:
    """The blob directory: originals by content hash, thumbnails, and temporary files of writes never finished."""

    originals: dict[str, Path]
    thumbnails: list[Path]
    unfinished_writes: list[Path]

    @classmethod
    def scan(cls, blob_dir: Path) -> "StoredBytes":
        originals = {path.name: path for path in _files(blob_dir / ORIGINALS)}
        return cls(originals, list(_files(blob_dir / THUMBNAILS)), list(_files(blob_dir / UNFINISHED)))


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def rows_without_bytes(found: list[Row], stored: StoredBytes) -> list[str]:
    """Visible rows whose original is missing or is not the bytes the row describes."""
    problems = []
    for row in found:
        if row.status == "uploading":
            continue
        path = stored.originals.get(row.sha256)
        if path is None:
            problems.append(f"{row.uid} ({row.status}) has no bytes")
        elif path.stat().st_size != row.size_bytes or _sha256(path) != row.sha256:
            problems.append(f"{row.uid} ({row.status}) has bytes that do not match its hash or size")
    return problems


def bytes_without_rows(found: list[Row], stored: StoredBytes) -> list[Path]:
    """Originals and thumbnails whose content hash (the name, or the name up to "-256.jpg") no row names."""
    referenced = {row.sha256 for row in found}
    files = [*stored.originals.values(), *stored.thumbnails]
    return sorted(path for path in files if path.name.split("-", 1)[0] not in referenced)


def written_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
