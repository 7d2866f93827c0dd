"""python -m services.catalog [serve | migrate | reclassify | retag | sweep]."""

import argparse
import logging
import sys

from services.catalog.config import Settings
from services.catalog.inference_client import InferenceUnavailable
from services.catalog.models import BatchResult
from services.catalog.retag import Retagger
from services.catalog.server import (
    MIGRATIONS,
    SCHEMA,
    create_server,
    open_runtime,
    service_identity,
)
from services.catalog.sweeper import Sweeper
from services.common.db import SchemaNotReady, migrate
from services.common.identity import LoginFailed
from services.common.logging import setup_logging
from services.common.server import run, serve_until_signalled
from services.common.settings import settings_or_report

log = logging.getLogger("services.catalog")


async def serve(settings: Settings) -> int:
    try:
        running = await create_server(settings)
    except (ValueError, SchemaNotReady) as exc:
        log.error("cannot start: %s", exc)
        return 2
    await serve_until_signalled(running, grace=settings.grace_seconds)
    return 0


async def reclassify(settings: Settings, batch_size: int) -> int:
    runtime = await open_runtime(settings)
    try:
        tokens = service_identity(settings, runtime)
        if tokens is None:
            log.error("reclassify needs TAGSMITH_SERVICE_USERNAME and TAGSMITH_SERVICE_PASSWORD")
            return 2

        def report(batch: BatchResult) -> None:
            log.info(
                "batch done: %d reclassified, %d failed, %d remaining (model version %s)",
                batch.reclassified,
                batch.failed,
                batch.remaining,
                batch.model_version,
                extra={"errors": batch.errors[:10]},
            )

        try:
            total = await runtime.reclassifier.run_all(tokens, batch_size=batch_size, report=report)
        except (InferenceUnavailable, LoginFailed) as exc:
            log.error("reclassification stopped (run it again to resume): %s", exc)
            return 1
        log.info("reclassification complete: %d reclassified, %d failed", total.reclassified, total.failed)
        return 0
    finally:
        await runtime.close()


async def retag(settings: Settings, batch_size: int) -> int:
    runtime = await open_runtime(settings)
    try:
        done = await Retagger(runtime.store, batch_size=batch_size).run_all()
        log.info("re-tagging complete: %d images now use vocabulary %s", done, runtime.store.vocabulary.version)
        return 0
    finally:
        await runtime.close()


async def sweep(settings: Settings) -> int:
    runtime = await open_runtime(settings)
    try:
        sweeper = Sweeper(
            store=runtime.store,
            contents=runtime.contents,
            grace_seconds=settings.sweep_grace_seconds,
            trash_retention_seconds=settings.trash_retention_seconds,
        )
        report = await sweeper.sweep_once()
        log.info(
            "sweep: %d expired trashed images, %d unfinished uploads and %d orphaned contents removed",
            report.trash,
            report.uploads,
            report.contents,
        )
        return 0
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    commands.add_parser("migrate", help="apply pending database migrations, then exit")
    again = commands.add_parser("reclassify", help="re-label images whose model version differs from the served one")
    again.add_argument("--batch-size", type=int, default=None, help="images per batch")
    again_tags = commands.add_parser(
        "retag", help="derive model tags again from stored labels after a vocabulary change (no model calls)"
    )
    again_tags.add_argument("--batch-size", type=int, default=None, help="images per batch")
    commands.add_parser("sweep", help="remove unfinished uploads and orphaned bytes once, then exit")
    args = parser.parse_args(argv)
    if (settings := settings_or_report(Settings)) is None:
        return 2
    setup_logging("catalog", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        applied = migrate(settings.postgres_dsn, schema=SCHEMA, directory=MIGRATIONS)
        log.info("migrations applied: %s", ", ".join(applied) or "none pending")
        return 0
    if args.command == "reclassify":
        return run(reclassify(settings, args.batch_size or settings.reclassify_batch_size))
    if args.command == "retag":
        return run(retag(settings, args.batch_size or settings.retag_batch_size))
    if args.command == "sweep":
        return run(sweep(settings))
    return run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
