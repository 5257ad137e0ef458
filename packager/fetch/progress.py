"""Download progress on stderr, only when stderr is a terminal (CI logs stay clean)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from packager.fetch.http import RequestsFetcher

if TYPE_CHECKING:
    from rich.progress import TaskID


@contextmanager
def download_progress(fetcher: RequestsFetcher, *, enabled: bool | None = None) -> Iterator[None]:
    """Show one bar per target URL while ``fetcher`` downloads inside this block.

    The targets download in parallel: the hook runs in the downloading threads (rich's Progress
    takes its own lock; ours only makes one bar per URL)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield
        return
    # rich costs ~30 ms to import: only a command that shows a bar pays for it.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

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
        lock = threading.Lock()

        def hook(url: str, size: int, total: int | None) -> None:
            if "/targets/" not in url:
                return  # metadata is small; bars only for targets
            with lock:
                task = tasks.get(url)
                if task is None:
                    name = url.split("/targets/", 1)[1]
                    task = tasks[url] = progress.add_task(name, total=total)
            progress.advance(task, size)

        previous = fetcher.progress
        fetcher.progress = hook
        try:
            yield
        finally:
            fetcher.progress = previous
