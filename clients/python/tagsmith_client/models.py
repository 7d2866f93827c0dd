"""Typed views of the API's JSON; each keeps the JSON it came from in `raw` for --json output."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Label:
    label: str
    score: float
    rank: int
    source: str


@dataclass(frozen=True)
class Image:
    uid: str
    filename: str
    content_type: str
    size: int
    sha256: str
    width: int
    height: int
    status: str
    category: str
    tags: list[str]
    manual_tags: list[str]
    labels: list[Label]
    created_at: str | None
    duplicate: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Image":
        return cls(
            uid=data["uid"],
            filename=data.get("filename", ""),
            content_type=data.get("content_type", ""),
            size=int(data.get("size", 0)),
            sha256=data.get("sha256", ""),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            status=data.get("status", ""),
            category=data.get("category", ""),
            tags=list(data.get("tags", [])),
            manual_tags=list(data.get("manual_tags", [])),
            labels=[
                Label(label=x["label"], score=float(x["score"]), rank=int(x["rank"]), source=x.get("source", "model"))
                for x in data.get("labels", [])
            ],
            created_at=data.get("created_at"),
            duplicate=bool(data.get("duplicate", False)),
            raw=data,
        )


@dataclass(frozen=True)
class KnownDigest:
    sha256: str
    uid: str
    category: str


@dataclass(frozen=True)
class Count:
    """How many images are in one category or carry one tag."""

    name: str
    count: int


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    content_types: list[str]
    max_files: int


@dataclass(frozen=True)
class User:
    id: str
    username: str
    roles: list[str]


@dataclass(frozen=True)
class Session:
    """What login or refresh answered; `expires_at` is a time.time() value."""

    access_token: str
    refresh_token: str
    expires_at: float
