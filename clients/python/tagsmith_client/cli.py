"""The `tagsmith` command: log in, import folders of photos, and browse, tag, fetch and remove images."""

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tagsmith_client.bulk import FAILED, REFUSED, FileResult, Importer
from tagsmith_client.client import DEFAULT_URL, Client
from tagsmith_client.config import SavedSession, SessionStore
from tagsmith_client.errors import ApiError, NotLoggedIn, TagsmithError
from tagsmith_client.models import Count, Image
from tagsmith_client.progress import Progress

MAX_JOBS = 32
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


class Output:
    """Text for people, or one JSON object per line with --json."""

    def __init__(self, *, as_json: bool, stream: TextIO) -> None:
        self.as_json, self._stream = as_json, stream
        self.emitted = 0

    def emit(self, data: dict[str, Any], text: str) -> None:
        self._stream.write((json.dumps(data) if self.as_json else text) + "\n")
        self._stream.flush()
        self.emitted += 1

    def note_if_empty(self, text: str) -> None:
        """Says `text` on stderr when nothing was listed, so an empty answer is not mistaken for a silent failure;
        stdout stays empty for scripts, and --json output is left alone."""
        if not self.emitted and not self.as_json:
            sys.stderr.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Output(as_json=args.json, stream=sys.stdout)
    store = SessionStore()
    try:
        return args.run(args, out, store)
    except (ApiError, TagsmithError) as exc:
        return _fail(out, exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tagsmith ls | head`); Python's own flush at exit would complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _fail(out: Output, exc: TagsmithError) -> int:
    code = exc.code if isinstance(exc, ApiError) else "not_logged_in" if isinstance(exc, NotLoggedIn) else "error"
    message = exc.message if isinstance(exc, ApiError) else str(exc)
    if out.as_json:
        out.emit({"error": {"code": code, "message": message}}, "")
    else:
        sys.stderr.write(f"tagsmith: {message}\n")
    return EXIT_FAILED


def open_client(args: argparse.Namespace, store: SessionStore) -> Client:
    """Logs in by itself with TAGSMITH_USERNAME and TAGSMITH_PASSWORD; otherwise uses the saved session."""
    username, password = os.environ.get("TAGSMITH_USERNAME"), os.environ.get("TAGSMITH_PASSWORD")
    if username and password:
        return Client(args.url, username=username, password=password)
    saved = SavedSession(store, args.url)
    with store.locked():
        if saved.load() is None:
            raise NotLoggedIn(
                f"not logged in to {args.url}: run `tagsmith login`, or set TAGSMITH_USERNAME and TAGSMITH_PASSWORD"
            )
    return Client(args.url, keeper=saved)


def _with_client(command: Callable[[argparse.Namespace, Output, Client], int]):
    def run(args: argparse.Namespace, out: Output, store: SessionStore) -> int:
        with open_client(args, store) as client:
            return command(args, out, client)

    return run


# --- sessions ----------------------------------------------------------------------------------------


def login(args: argparse.Namespace, out: Output, store: SessionStore) -> int:
    username = args.username or input("Username: ").strip()
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    with Client(args.url) as client:
        session = client.login(username, password)
        with store.locked():
            store.save(args.url, session, username=username)
        user = client.me()
    out.emit({"url": args.url, "username": user.username, "id": user.id}, f"logged in to {args.url} as {username}")
    return 0


def logout(args: argparse.Namespace, out: Output, store: SessionStore) -> int:
    saved = SavedSession(store, args.url)
    with store.locked():
        known = saved.load() is not None
        if known:
            try:
                with Client(args.url, keeper=saved) as client:
                    client.authenticate()
                    client.logout()
            except NotLoggedIn:
                pass  # the session had already ended on the server
            store.forget(args.url)
    out.emit({"url": args.url, "logged_out": known}, "logged out" if known else "was not logged in")
    return 0


# --- images ------------------------------------------------------------------------------------------


def upload(args: argparse.Namespace, out: Output, client: Client) -> int:
    terminal = sys.stderr.isatty()
    progress = Progress(None if args.quiet else sys.stderr, terminal=terminal)

    def report(result: FileResult) -> None:
        if out.as_json:
            out.emit(result.as_json(), "")
        elif result.status in (REFUSED, FAILED):
            progress.note(f"{result.status}: {result.path}: {result.error}")

    importer = Importer(client, progress=progress, report=report, concurrency=args.jobs)
    summary = importer.run(args.paths, recursive=args.recursive)
    out.emit(summary.as_json(), "\n".join(summary.describe()))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.ok else EXIT_FAILED


def image_line(image: Image) -> str:
    what = image.category or image.status
    return f"{image.uid}  {what:<24.24}  {', '.join(image.tags[:4]):<40.40}  {image.filename}"


def list_images(args: argparse.Namespace, out: Output, client: Client) -> int:
    for image in client.images(category=args.category or "", tag=args.tag or ""):
        out.emit(image.raw, image_line(image))
    filters = [f'{name} "{value}"' for name, value in (("tag", args.tag), ("category", args.category)) if value]
    none = f"no images with {' and '.join(filters)}" if filters else "no images yet: tagsmith upload adds some"
    out.note_if_empty(none)
    return 0


def search(args: argparse.Namespace, out: Output, client: Client) -> int:
    for image in client.search(args.query):
        out.emit(image.raw, image_line(image))
    out.note_if_empty(f'no images match "{args.query}" (tagsmith tags lists the words your images are found by)')
    return 0


def similar(args: argparse.Namespace, out: Output, client: Client) -> int:
    for image, similarity in client.similar(args.uid, limit=args.limit):
        out.emit(image.raw, f"{similarity:5.2f}  {image_line(image)}")
    out.note_if_empty("no other images to compare it with yet")
    return 0


def duplicates(args: argparse.Namespace, out: Output, client: Client) -> int:
    for number, group in enumerate(client.duplicates(), start=1):
        text = "\n".join([f"group {number}:", *(f"  {image_line(image)}" for image in group)])
        out.emit({"group": number, "images": [image.raw for image in group]}, text)
    out.note_if_empty("no near-duplicates found")
    return 0


def show(args: argparse.Namespace, out: Output, client: Client) -> int:
    image = client.image(args.uid)
    labels = ", ".join(f"{label.label} {label.score:.2f}" for label in image.labels)
    text = [
        f"uid:       {image.uid}",
        f"file:      {image.filename} ({image.content_type}, {image.width}x{image.height}, {image.size} bytes)",
        f"status:    {image.status}",
        f"category:  {image.category}",
        f"tags:      {', '.join(image.tags)}",
        f"manual:    {', '.join(image.manual_tags)}",
        f"labels:    {labels}",
        f"sha256:    {image.sha256}",
        f"added:     {image.created_at}",
    ]
    out.emit(image.raw, "\n".join(text))
    return 0


def get(args: argparse.Namespace, out: Output, client: Client) -> int:
    if args.output == "-":
        size = client.download(args.uid, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.output) if args.output else Path(Path(client.image(args.uid).filename).name or args.uid)
    if not args.output and target.exists():
        raise TagsmithError(f"{target} already exists; choose another name with -o")
    size = client.download(args.uid, target)
    out.emit({"uid": args.uid, "path": str(target), "bytes": size}, f"saved {target} ({size} bytes)")
    return 0


def remove(args: argparse.Namespace, out: Output, client: Client) -> int:
    failed = 0
    for uid in args.uids:
        try:
            client.delete(uid)
        except ApiError as exc:
            failed += 1
            out.emit({"uid": uid, "status": "failed", "error": exc.message}, f"{uid}: {exc.message}")
            continue
        out.emit({"uid": uid, "status": "removed", "error": ""}, f"removed {uid}")
    return EXIT_FAILED if failed else 0


def tag(args: argparse.Namespace, out: Output, client: Client) -> int:
    changes = [change for change in args.changes if change != "--json"]
    out.as_json = out.as_json or len(changes) != len(args.changes)
    wrong = [change for change in changes if len(change) < 2 or change[0] not in "+-"]
    if wrong or not changes:
        raise TagsmithError("write +word to add a tag and -word to remove one, e.g. tagsmith tag UID +beach -dog")
    add = [change[1:] for change in changes if change[0] == "+"]
    remove_ = [change[1:] for change in changes if change[0] == "-"]
    image = client.update_tags(args.uid, add=add, remove=remove_)
    out.emit(image.raw, f"{image.uid}: {', '.join(image.tags)}")
    return 0


def _counts(counts: list[Count], key: str, out: Output, *, none: str) -> int:
    for entry in counts:
        out.emit({key: entry.name, "count": entry.count}, f"{entry.count:>7}  {entry.name}")
    out.note_if_empty(none)
    return 0


def categories(args: argparse.Namespace, out: Output, client: Client) -> int:
    return _counts(client.categories(), "category", out, none="no categories yet: they come with classified images")


def tags(args: argparse.Namespace, out: Output, client: Client) -> int:
    return _counts(client.tags(), "tag", out, none="no tags yet: they come with classified images")


# --- arguments ---------------------------------------------------------------------------------------


def _jobs(value: str) -> int:
    jobs = int(value)
    if not 1 <= jobs <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_JOBS}")
    return jobs


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"server (TAGSMITH_URL, default {DEFAULT_URL})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")
    top = argparse.ArgumentParser(prog="tagsmith", description=__doc__, parents=[common])
    top.set_defaults(url=os.environ.get("TAGSMITH_URL") or DEFAULT_URL, json=False)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    sub = command("login", login, "log in and keep the session in the config directory")
    sub.add_argument("--username", help="instead of being asked")
    sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    command("logout", logout, "end the saved session")
    sub = command("upload", _with_client(upload), "import files and folders, skipping those already there")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("-r", "--recursive", action="store_true", help="import folders and everything below them")
    sub.add_argument("-j", "--jobs", type=_jobs, default=4, help="uploads at once (default 4)")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = command("ls", _with_client(list_images), "list your images, newest first")
    sub.add_argument("--category", help="exact category, e.g. tabby")
    sub.add_argument("--tag", help="exact tag, e.g. dog")
    command("search", _with_client(search), "images matching every word of QUERY").add_argument("query")
    command("show", _with_client(show), "one image's details").add_argument("uid")
    sub = command("get", _with_client(get), "download an original")
    sub.add_argument("uid")
    sub.add_argument("-o", "--output", help="file to write ('-' for standard output); default: its filename")
    command("rm", _with_client(remove), "delete images").add_argument("uids", nargs="+", metavar="UID")
    sub = command("tag", _with_client(tag), "add (+word) and remove (-word) manual tags")
    sub.add_argument("uid")
    sub.add_argument("changes", nargs=argparse.REMAINDER, metavar="+word|-word")
    sub = command("similar", _with_client(similar), "your images that look most like UID, most similar first")
    sub.add_argument("uid")
    sub.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20, at most 100)")
    command("duplicates", _with_client(duplicates), "groups of near-duplicates: the same shot stored more than once")
    command("categories", _with_client(categories), "images per category")
    command("tags", _with_client(tags), "images per tag")
    return top


if __name__ == "__main__":
    sys.exit(main())
