"""Where cached features live: in memory up to a budget, then in a file on disk."""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import tempfile

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: the pid in the name is the only guard
    fcntl = None

__all__ = ['CACHE_MODES', 'FeatureStore', 'cache_policy', 'cache_report',
           'remove_stale_feature_files']


CACHE_MODES = ("auto", "memory")


FALLBACK_AVAILABLE_BYTES = 4 * 2**30


class FeatureStore:
    """Feature rows appended batch by batch: in memory while they fit in ``budget`` bytes, then
    in a file in ``directory`` (deleted by :meth:`close`).

    With ``rows``, or ``batches`` (then ``rows`` is ``batches`` times the first batch's size),
    an upper bound on the row count is known: the memory is allocated once, so the cache costs
    its own size and no more. Without, the batches are joined at the end.
    """

    def __init__(self, budget, directory, rows=None, batches=None):
        self.budget, self.directory, self.rows, self.batches = budget, directory, rows, batches
        self.count = 0
        self.path = None
        self._file = None
        self._lock = None  # an fd holding an flock on the file while this process may read it
        self._buffer = None
        self._chunks = []
        self._row = None  # (shape, dtype) of one row

    def where(self) -> str:
        if self.budget <= 0:
            return f"on disk in {self.directory}"
        if self.budget == math.inf:
            return "in memory"
        return f"in memory up to {self.budget / 2**20:.0f} MiB, then on disk in {self.directory}"

    @property
    def storage(self) -> str:
        return "memory" if self.path is None else "disk"

    @property
    def bytes(self) -> int:
        return self.count * self._row_bytes() if self._row else 0

    @property
    def memory_bytes(self) -> int:
        return self.bytes if self.path is None else 0

    def append(self, batch) -> None:
        if isinstance(batch, (list, tuple, dict)):
            raise ValueError(
                "Only a backbone with one output can be cached. "
                f"Received: backbone outputs={type(batch).__name__}"
            )
        batch = np.asarray(batch)
        if self._row is None:
            self._row = (batch.shape[1:], batch.dtype)
            if self.rows is None and self.batches is not None:
                self.rows = self.batches * len(batch)
            if self.rows is not None and self.rows * self._row_bytes() > self.budget:
                self._open_file()
            elif self.rows is not None:
                self._buffer = np.empty((self.rows, *batch.shape[1:]), batch.dtype)
        if self._file is not None:
            self._file.write(np.ascontiguousarray(batch).tobytes())
        elif self._buffer is not None and self.count + len(batch) <= len(self._buffer):
            self._buffer[self.count : self.count + len(batch)] = batch
        else:
            self._to_chunks()
            self._chunks.append(batch)
            if (self.count + len(batch)) * self._row_bytes() > self.budget:
                self._open_file()
        self.count += len(batch)

    def result(self) -> np.ndarray:
        shape, dtype = self._row
        if self._file is not None:
            self._file.close()
            self._file = None
            return np.memmap(self.path, dtype=dtype, mode="r", shape=(self.count, *shape))
        if self._buffer is not None:
            return self._buffer[: self.count]
        return np.concatenate(self._chunks)

    def close(self) -> None:
        """Delete the file, if there is one; the features are gone after this."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self._buffer, self._chunks = None, []

    def _row_bytes(self) -> int:
        shape, dtype = self._row
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def _to_chunks(self) -> None:
        if self._buffer is not None:
            self._chunks = [self._buffer[: self.count].copy()]
            self._buffer = None

    def _open_file(self) -> None:
        handle, self.path = tempfile.mkstemp(
            prefix=f"{FILE_PREFIX}{_host()}-{os.getpid()}-", suffix=".bin", dir=self.directory
        )
        if fcntl is not None:
            self._lock = os.dup(handle)  # the lock lives until close(), past result()'s close
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file = os.fdopen(handle, "wb")
        self._to_chunks()
        for chunk in self._chunks:
            self._file.write(np.ascontiguousarray(chunk).tobytes())
        self._chunks = []


FILE_PREFIX = "tlft-features-"
# tlft-features-HOST-PID-RANDOM.bin: the host and pid of the process that wrote it.
_FILE_NAME = re.compile(r"^tlft-features-(?P<host>[A-Za-z0-9_.]*)-(?P<pid>[0-9]+)-[^/]*\.bin$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its file
    return True


def remove_stale_feature_files(directory) -> list[str]:
    """Delete the feature files that killed ``fit_frozen`` runs left in ``directory``.

    A file is stale when it was written on this host by a process that is no longer running
    and no process holds its lock (so a reused pid, or a file still open, keeps it). Files of
    other hosts (a shared folder) are left alone. Returns the paths removed.
    """
    directory = tempfile.gettempdir() if directory is None else os.fspath(directory)
    removed, host = [], _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _FILE_NAME.match(name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone already, or not ours to open
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live process holds it
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def cache_policy(cache, max_memory_bytes):
    """``(budget in bytes, directory or None)`` for the ``cache`` argument."""
    if max_memory_bytes is not None and (
        not isinstance(max_memory_bytes, (int, float)) or max_memory_bytes < 0
    ):
        raise ValueError(
            "max_memory_bytes must be a non-negative number of bytes. "
            f"Received: max_memory_bytes={max_memory_bytes!r}"
        )
    if cache == "memory":
        return math.inf, None
    if cache == "auto":
        budget = available_memory() // 2 if max_memory_bytes is None else max_memory_bytes
        return budget, tempfile.gettempdir()
    if isinstance(cache, (str, os.PathLike)) and os.path.isdir(cache):
        return (max_memory_bytes or 0), os.fspath(cache)
    raise ValueError(
        f"cache must be one of {CACHE_MODES} or an existing directory to write the feature "
        f"files in. Received: cache={cache!r}"
    )


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE_BYTES


def cache_report(stores, seconds) -> dict:
    """Where the features were kept, their bytes and the extraction's seconds (JSON-able)."""
    return {
        "storage": [store.storage for store in stores],
        "bytes": sum(store.bytes for store in stores),
        "memory_bytes": sum(store.memory_bytes for store in stores),
        "extraction_seconds": seconds,
    }

