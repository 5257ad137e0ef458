"""Download progress on stderr, only when stderr is a terminal (CI logs stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from packager.fetch.http import RequestsFetcher


@contextmanager
def download_progress(fetcher: RequestsFetcher, *, enabled: bool | None = None) -> Iterator[None]:
    """Show one bar per target URL while ``fetcher`` downloads inside this block."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield
        return
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def hook(url: str, size: int, total: int | None) -> None:
            if "/targets/" not in url:
                return  # metadata is small; bars only for targets
            if url not in tasks:
                name = url.split("/targets/", 1)[1]
                tasks[url] = progress.add_task(name, total=total)
            progress.advance(tasks[url], size)

        previous = fetcher.progress
        fetcher.progress = hook
        try:
            yield
        finally:
            fetcher.progress = previous
