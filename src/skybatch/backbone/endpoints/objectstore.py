"""Endpoints in an object store (``s3://bucket/prefix/``), through ``lsst-resources``.

A Butler datastore may live in an S3 bucket; its archive endpoint then holds each file
as the object ``<root>/<logical path>``. The managed layer's guarantees carry over:

- **Two-phase writes.** :meth:`temp_path` is a local spool file (an object store has
  no rename); :meth:`commit` uploads it in one PUT, which an object store makes visible
  all at once or not at all, so a partial file never has its final name. The spool
  file is removed only after the object is checked.
- **Verified copies.** The managed layer checksums the bytes as it writes the spool
  file and compares them with the catalog before the commit; the commit then makes
  the store check what it received: a file sent in one PUT carries its md5
  (``Content-MD5``, refused by the store if the bytes differ), a larger one sent in
  parts has its size checked after the upload.
- **Write once.** :meth:`commit_new` is a conditional PUT (``If-None-Match: *``) on
  S3, so two writers of one path cannot both succeed.
- **No local paths.** Jobs cannot open objects in place (``shared_fs`` is False), so
  the managed layer streams them (:meth:`open_read`) into a site cache or job scratch.

Credentials and the endpoint URL are those of ``lsst-resources`` (``S3_ENDPOINT_URL``,
the AWS credential chain, ``LSST_RESOURCES_S3_PROFILE_<name>``), as for the Butler.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, cast

from skybatch.backbone.endpoints.base import Capabilities, Endpoint, FileState
from skybatch.backbone.endpoints.posix import TEMP_SUFFIX, PosixEndpoint, path_problem
from skybatch.backbone.errors import BackboneError, ChecksumMismatchError, FileMissingError
from skybatch.errors import InputError

__all__ = ["ObjectStoreEndpoint", "is_object_store", "normalize_root"]

_PATH_HINT = "Logical paths are relative POSIX paths such as 'run/calexp/file.fits'"

#: Files up to this size go to S3 in one PUT with their md5 (checked by the store);
#: larger ones through the client's multipart upload (boto3's default threshold).
SINGLE_PUT_BYTES = 8 * 1024 * 1024


def is_object_store(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` names a location outside the local filesystem (``s3://...``)."""
    text = os.fspath(root)
    return "://" in text and not text.startswith("file://")


def normalize_root(root: str) -> str:
    """The canonical form of an object-store root: its URI with one trailing slash."""
    from lsst.resources import ResourcePath

    return str(ResourcePath(root, forceDirectory=True))


class _Reader(io.RawIOBase):
    """A raw binary stream over a ``ResourcePath`` handle (which may lack ``readinto``),
    closing the handle's context when it is closed."""

    def __init__(self, handle: Any, stack: ExitStack) -> None:
        super().__init__()
        self._handle = handle
        self._stack = stack

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._handle.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stack.close()
        super().close()


class ObjectStoreEndpoint(Endpoint):
    """Files as objects under a URI root; partial copies spooled on local disk.

    Args:
        name: Endpoint name in the catalog.
        root: The root URI (``s3://bucket/prefix/``).
        spool_dir: Local directory for partial copies (default: a directory per
            endpoint under the system's temporary directory).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(shared_fs=False, local_files=False)

    def __init__(self, name: str, root: str, *, spool_dir: Path | None = None) -> None:
        from lsst.resources import ResourcePath

        self.uri = ResourcePath(os.fspath(root), forceDirectory=True)
        if self.uri.isLocal:
            raise InputError(
                f"{root} is a local path, not an object store",
                where=f"endpoint {name!r}",
                hint="give an object-store URI such as s3://bucket/prefix/",
            )
        if spool_dir is None:
            key = hashlib.sha1(str(self.uri).encode(), usedforsecurity=False).hexdigest()[:12]
            spool_dir = Path(tempfile.gettempdir()) / "skybatch-spool" / key
        super().__init__(name, spool_dir)
        #: The local directory of partial copies (``root`` is the spool, ``uri`` the store).
        self.spool = self.root
        #: Partial copies live in a plain directory tree (temp names, sweeping).
        self._spool = PosixEndpoint(f"{name} (spool)", self.spool)

    @property
    def location(self) -> str:
        return str(self.uri)

    # -- paths ------------------------------------------------------------------------
    def _check(self, path: str) -> str:
        reason = path_problem(path)
        if reason is not None:
            raise InputError(
                f"invalid logical path {path!r}: {reason}",
                where=f"endpoint {self.name!r}",
                hint=_PATH_HINT,
            )
        return path

    def object_uri(self, path: str) -> Any:
        """The ``ResourcePath`` of ``path``'s object."""
        return self.uri.join(self._check(path))

    def local_path(self, path: str) -> Path:
        raise BackboneError(
            f"endpoint {self.name!r} is an object store ({self.uri}): {path!r} has no local path",
            where=f"{self.name}:{path}",
            hint="read it with open_read, or stage it to a site cache first",
        )

    def temp_path(self, path: str) -> Path:
        return self._spool.temp_path(self._check(path))

    def sweep_temp_files(self, prefix: str = "", *, min_age_s: float = 0.0) -> list[str]:
        """Delete the partial copies a crash left in the spool (see PosixEndpoint's)."""
        return self._spool.sweep_temp_files(prefix, min_age_s=min_age_s)

    # -- reading ----------------------------------------------------------------------
    def state(self, path: str) -> FileState:
        return FileState.ONLINE if self.object_uri(path).exists() else FileState.MISSING

    def size(self, path: str) -> int:
        try:
            return int(self.object_uri(path).size())
        except FileNotFoundError:
            raise self._missing(path) from None

    def open_read(self, path: str) -> BinaryIO:
        uri = self.object_uri(path)
        if not uri.exists():
            raise self._missing(path)
        stack = ExitStack()
        try:
            handle = stack.enter_context(uri.open("rb"))
        except FileNotFoundError:
            stack.close()
            raise self._missing(path) from None
        return cast(BinaryIO, _Reader(handle, stack))

    def download(self, path: str, local: Path) -> None:
        """The object into ``local`` with the S3 client's (multipart, threaded)
        download, as ``aws s3 cp`` does; other stores stream it."""
        uri = self.object_uri(path)
        if uri.scheme != "s3":
            super().download(path, local)
            return
        try:
            uri.client.download_file(uri.netloc, uri.relativeToPathRoot, str(local))
        except Exception as exc:
            if _status(exc) == 404:
                raise self._missing(path) from None
            raise

    def _missing(self, path: str) -> FileMissingError:
        return FileMissingError(
            f"{path!r} is not on endpoint {self.name!r}",
            where=str(self.uri.join(path)),
            hint="Check the catalog replica of this file and re-transfer it if it is lost",
        )

    def iter_files(self, prefix: str = "") -> Iterator[str]:
        """Objects under ``prefix`` (a string prefix of the logical path), sorted."""
        if prefix:
            self._check(prefix.rstrip("/"))
        start = prefix.rpartition("/")[0]
        top = self.uri.join(start, forceDirectory=True) if start else self.uri
        found: list[str] = []
        try:
            for here, _dirs, files in top.walk():
                base = (here.relative_to(self.uri) or "").rstrip("/")
                for filename in files:
                    logical = f"{base}/{filename}" if base else filename
                    if logical.startswith(prefix) and not filename.endswith(TEMP_SUFFIX):
                        found.append(logical)
        except FileNotFoundError:
            return
        yield from sorted(found)

    # -- writing ----------------------------------------------------------------------
    def commit(self, path: str, *, durable: bool = True) -> None:
        """Upload the spool file of ``path``, check what landed, drop the spool file.

        An object store makes a PUT durable before it answers, so ``durable`` changes
        nothing here.
        """
        self._upload(path, only_new=False)

    def commit_new(self, path: str, *, durable: bool = True) -> None:
        """Commit only if no object has the name: atomically on S3 (a conditional PUT,
        ``If-None-Match: *``) for a file sent in one part, else checked first.
        FileExistsError (the spool file kept) if there is one."""
        self._upload(path, only_new=True)

    def _upload(self, path: str, *, only_new: bool) -> None:
        """The one upload path: a file up to :data:`SINGLE_PUT_BYTES` goes to S3 in one
        PUT carrying its md5 (``Content-MD5``: the store refuses bytes that differ), a
        larger one through the client's multipart upload, then its size is checked."""
        from lsst.resources import ResourcePath

        temp = self._spool.existing_temp_path(self._check(path))
        if temp is None or not temp.is_file():
            raise FileMissingError(
                f"there is no partial copy of {path!r} to commit on endpoint {self.name!r}",
                where=f"{self.spool}/{path}",
                hint="Write the data to temp_path(path) first, then commit",
            )
        target = self.object_uri(path)
        sent = temp.stat().st_size
        if target.scheme == "s3" and sent <= SINGLE_PUT_BYTES:
            _put_with_md5(target, temp, path, only_new=only_new)
            temp.unlink()
            return
        if only_new and target.exists():
            raise FileExistsError(path)
        target.transfer_from(ResourcePath(str(temp)), transfer="copy", overwrite=True)
        landed = int(target.size())
        if landed != sent:
            target.remove()
            raise ChecksumMismatchError(
                f"the upload of {path!r} to {self.name!r} landed as {landed} bytes, not the "
                f"{sent} bytes sent",
                path=path,
                expected=(sent, "?"),
                actual=(landed, "?"),
                where=str(target),
                hint="the object store or the network corrupted the upload; transfer again",
            )
        temp.unlink()

    def sync(self) -> None:
        """Nothing to do: an object store's PUT is durable when it returns."""

    def discard(self, path: str) -> None:
        self._spool.discard(self._check(path))

    def remove(self, path: str) -> None:
        try:
            self.object_uri(path).remove()
        except FileNotFoundError:
            return

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["root"] = str(self.uri)
        info["spool_dir"] = str(self.spool)
        info["capabilities"] = self.capabilities.model_dump()
        return info


def _put_with_md5(uri: Any, temp: Path, path: str, *, only_new: bool) -> None:
    """PUT ``temp`` as the S3 object ``uri`` with its md5 for the store to check;
    FileExistsError when ``only_new`` and the object exists; ChecksumMismatchError
    when the store received other bytes (BadDigest). A store that does not implement
    conditional writes (501) is asked whether the object exists first instead."""
    import base64

    from skybatch.backbone.checksums import md5_file

    size, md5 = md5_file(temp)
    content_md5 = base64.b64encode(bytes.fromhex(md5)).decode()
    conditional = only_new
    while True:
        extra = {"IfNoneMatch": "*"} if conditional else {}
        with open(temp, "rb") as body:
            try:
                uri.client.put_object(
                    Bucket=uri.netloc,
                    Key=uri.relativeToPathRoot,
                    Body=body,
                    ContentLength=size,
                    ContentMD5=content_md5,
                    **extra,
                )
                return
            except Exception as exc:
                status, code = _status(exc), _error_code(exc)
                if conditional and status in (409, 412):
                    raise FileExistsError(path) from None
                if conditional and status == 501:  # no conditional writes: check, then PUT
                    if uri.exists():
                        raise FileExistsError(path) from None
                    conditional = False
                    continue
                if code in ("BadDigest", "InvalidDigest"):
                    raise ChecksumMismatchError(
                        f"the object store received other bytes than the {size} sent for {path!r}",
                        path=path,
                        expected=(size, md5),
                        actual=(-1, "?"),
                        where=str(uri),
                        hint="the network corrupted the upload; transfer again",
                    ) from None
                raise


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _status(exc: Exception) -> int | None:
    """The HTTP status of a botocore ClientError, or None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None
