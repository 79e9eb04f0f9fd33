"""The local object store: files under one root, written atomically and fsynced.

`put` returns only once the file and its directory entry are on stable storage (one shared
`syncfs()` per round of concurrent writers, or fsyncs of file and directory), which is what lets
SMTP say 250.
Every key is checked before it becomes a path, so nothing can escape the root. Blocking file work
runs in a small thread pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from storage.barrier import SyncBarrier, syncfs_available
from storage.errors import InvalidKey, ObjectNotFound, ObjectStoreUnavailable
from storage.objects import PresignedGet, PresignedPost, StoredObject, check_key
from storage.presign import PostPolicy, SignedGet, SignedPut, UrlSigner

T = TypeVar("T")

# Writes this small, and renames of this many files, run on the caller's thread: a few syscalls
# cost less than handing them to the pool and back (futex wake-ups and GIL hand-offs).
INLINE_PUT = 64 * 1024
INLINE_MOVES = 8


def load_or_create_secret(path: Path) -> bytes:
    """The HMAC key at `path`, created (0600) with 32 random bytes on first use."""
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode("ascii")
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # Two processes starting at once: the first link wins and both read the winner.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes().strip()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Objects as files under `root`; downloads via URLs signed for the daemon's own HTTP API."""

    def __init__(self, root: Path, signer: UrlSigner, public_url: str, threads: int = 16,
                 group_sync: bool = True) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="localstore")
        # One syncfs() per round of concurrent writers instead of two fsyncs per object.
        self._barrier = (SyncBarrier(self.root, self._pool)
                         if group_sync and syncfs_available() else None)
        self._dir_lock = threading.Lock()
        self._durable: dict[Path, None] = {}  # insertion-ordered: oldest evicted first
        self._inside: dict[Path, None] = {}  # folders that resolve inside the root, as above
        for top in ("raw", "inbound"):
            self._durable_dir(self.root / top)
        # Spool files live on the store's filesystem, so that one becomes an object by rename.
        # Keys never start with ".", so no key can reach this directory.
        self.spool_dir = self.root / ".spool"
        self.spool_dir.mkdir(exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file behind `key`; InvalidKey for anything that is not ours or escapes the root.

        `check_key` admits only plain segments (no "", ".", "..", no leading "/"), so joining
        cannot climb out. A symlink could (the store makes none; someone could plant one): the
        file must not be one, and its folder must resolve inside the root, which is checked
        once per folder (`resolve()` on every call cost more than the write on the hot path).
        """
        path = self.root.joinpath(*check_key(key).split("/"))
        folder = path.parent
        if folder not in self._inside:
            if not Path(os.path.realpath(folder)).is_relative_to(self.root):
                raise InvalidKey(f"object key {key[:80]!r} leads out of the store's root")
            self._inside[folder] = None
            if len(self._inside) > 4096:
                self._inside.pop(next(iter(self._inside)))
        if os.path.islink(path):
            raise InvalidKey(f"object key {key[:80]!r} is a symlink")
        return path

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn` in the store's pool, its OSErrors as ObjectStoreUnavailable."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._inline,
                                                                fn, *args)

    @staticmethod
    def _inline(fn: Callable[..., T], *args: Any) -> T:
        """`fn` on the calling thread (for work of a few syscalls, cheaper than a hop to the
        pool), its OSErrors as ObjectStoreUnavailable."""
        try:
            return fn(*args)
        except (InvalidKey, ObjectNotFound):
            raise
        except OSError as e:
            raise ObjectStoreUnavailable(f"local store: {e.strerror or e}") from e

    def _durable_dir(self, directory: Path) -> None:
        """Make `directory` exist and be recorded durably in every parent up to the root.

        Under one lock, so a put never returns while another thread's new directory entry is
        still only in the page cache.
        """
        if directory in self._durable:
            return
        with self._dir_lock:
            if directory in self._durable:
                return
            directory.mkdir(parents=True, exist_ok=True)
            p = directory
            while self._barrier is None and p != self.root:
                p = p.parent
                _fsync_dir(p)
            self._durable[directory] = None
            if len(self._durable) > 4096:
                self._durable.pop(next(iter(self._durable)))

    def _put_sync(self, key: str, data: bytes) -> None:
        """Write via a temp file and rename; fsync file and directory unless a barrier will."""
        path = self.path_for(key)
        parent = path.parent
        self._durable_dir(parent)
        tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileNotFoundError:
            # Someone removed the directory since we made it: make it (durably) again, once.
            with self._dir_lock:
                self._durable.clear()
            self._durable_dir(parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._barrier is None:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        if self._barrier is None:
            _fsync_dir(parent)

    def _move_sync(self, items: Sequence[tuple[str, Path]]) -> None:
        """Rename each finished file into place (fsyncs unless a barrier will sync them all)."""
        for key, source in items:
            path = self.path_for(key)
            self._durable_dir(path.parent)
            if self._barrier is None:
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            try:
                os.replace(source, path)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                # Not on our filesystem: copy in, then drop the source.
                self._put_sync(key, source.read_bytes())
                source.unlink(missing_ok=True)
                continue
            if self._barrier is None:
                _fsync_dir(path.parent)

    def _get_sync(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError as e:
            raise ObjectNotFound(key) from e
        except IsADirectoryError as e:
            raise ObjectNotFound(key) from e

    def _get_file_sync(self, key: str, dest: Path) -> None:
        try:
            source = self.path_for(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as e:
            raise ObjectNotFound(key) from e
        with source:
            try:
                with dest.open("wb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise

    def _delete_sync(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    async def put(self, key: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        if self._barrier is not None and len(data) <= INLINE_PUT:
            self._inline(self._put_sync, key, data)
        else:
            await self._run(self._put_sync, key, data)
        if self._barrier is not None:
            await self._barrier.sync()

    async def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Store each file durably under its key, consuming (moving) the file."""
        if not items:
            return
        if self._barrier is not None and len(items) <= INLINE_MOVES:
            self._inline(self._move_sync, items)
        else:
            await self._run(self._move_sync, items)
        if self._barrier is not None:
            await self._barrier.sync()

    def local_path(self, key: str) -> Path | None:
        """The file that holds `key`, for readers in other processes."""
        return self.path_for(key)

    @property
    def url_signer(self) -> UrlSigner:
        """The signer of this store's URLs, which the daemon's `/objects/…` routes answer."""
        return self.signer

    async def get(self, key: str) -> bytes:
        return await self._run(self._get_sync, key)

    async def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to `dest` (a copy, not a link: the caller may change or remove it)."""
        await self._run(self._get_file_sync, key, dest)

    async def delete(self, key: str) -> None:
        await self._run(self._delete_sync, key)

    async def exists(self, key: str) -> bool:
        return await self._run(lambda: self.path_for(key).is_file())

    async def list_keys(self, prefix: str, start_after: str = "",
                        limit: int = 1000) -> list[StoredObject]:
        """Files under the folder `prefix`, in key order (a walk of that folder per page)."""
        def walk() -> list[StoredObject]:
            top = self.root.joinpath(*check_key(prefix.rstrip("/")).split("/"))
            found: list[tuple[str, Path]] = []
            for folder, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                rel = Path(folder).relative_to(self.root).as_posix()
                found += [(f"{rel}/{f}", Path(folder) / f) for f in files
                          if not f.startswith(".")]
            out: list[StoredObject] = []
            for key, path in sorted(k for k in found if k[0] > start_after)[:limit]:
                with contextlib.suppress(FileNotFoundError):  # removed while we walked
                    out.append(StoredObject(key, path.stat().st_mtime))
            return out

        return await self._run(walk)

    async def size(self, key: str) -> int | None:
        def size_of() -> int | None:
            try:
                st = self.path_for(key).stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        return await self._run(size_of)

    async def presign_post(self, key: str, *, expires_in: float, content_type: str,
                           max_bytes: int) -> PresignedPost:
        """A form for the daemon's own `POST /objects`, which enforces the policy itself."""
        check_key(key)
        expires = int(time.time() + expires_in)
        document = PostPolicy(key, expires, content_type, max_bytes).document()
        fields = {"key": key, "Content-Type": content_type, "policy": document,
                  "signature": self.signer.sign_policy(document)}
        return PresignedPost(f"{self.public_url}/objects", fields, float(expires))

    async def presign_put(self, key: str, *, expires_in: float, content_type: str,
                          size: int) -> PresignedGet:
        """A URL for the daemon's own `PUT /objects/<key>`, bound to the type and the size."""
        check_key(key)
        expires = int(time.time() + expires_in)
        params = self.signer.sign_put(SignedPut(key, expires, content_type, size))
        return PresignedGet(f"{self.public_url}/objects/{key}?{urlencode(params)}", float(expires))

    async def presign_get(
        self, key: str, *, expires_in: float, file_name: str, content_type: str
    ) -> PresignedGet:
        check_key(key)
        expires = int(time.time() + expires_in)
        params = self.signer.sign(SignedGet(key, expires, file_name, content_type))
        return PresignedGet(f"{self.public_url}/objects/{key}?{urlencode(params)}", float(expires))

    def _check_sync(self) -> None:
        # A name of its own per call: concurrent probes must not delete each other's file.
        probe = self.root / f".readyz.{os.getpid()}.{secrets.token_hex(8)}"
        probe.write_bytes(b"ok")
        probe.unlink()

    async def check(self) -> None:
        await self._run(self._check_sync)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
