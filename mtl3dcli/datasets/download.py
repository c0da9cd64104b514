"""Fetch the standard multi-task archives: sources, resumable verified HTTP download, safe extraction.

`download_dataset` is the one call behind `mtl3d download nyuv2|pascal-context` (through the dataset registry): resolve
a URL (explicit, then the dataset's environment variable, then MTL3D_MIRROR, then the known URLs in order), stream
it into a cache with resume, verify size and digest, extract with a member check plus PEP 706's "data" filter, and
convert into the common layout atomically (nothing appears at `out` unless the whole dataset was written).
A full disk (`DiskFull`) or Ctrl-C (`Interrupted`) stops at once, keeping the bytes downloaded so far for a resume.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mtl3dcli import fileio
from mtl3dcli.errors import DiskFull, Interrupted, Mtl3dError
from mtl3dcli.progress import Advance, ProgressFactory, stage

CHUNK_BYTES = 1 << 20
RETRY_DELAY_S = 1.0  # first back-off between retries; doubles each try (tests set it to 0)
USER_AGENT = "mtl3d-downloader/1"


Log = Callable[[str], None]
# convert(upstream root, out, overwrite=..., progress=..., extra=provenance) -> the converted dataset's root
Converter = Callable[..., Path]


@dataclass(frozen=True)
class Source:
    """One upstream archive. Digests are those published for the archive at `urls`; None where none is known."""

    name: str
    filename: str
    urls: tuple[str, ...]
    env_var: str  # full-URL override for this archive (a mirror of the same file)
    archive_root: str  # top folder inside the archive
    marker: str  # a folder that identifies the dataset root after extraction
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    provenance: str = ""  # where the URL and digests come from


MIRROR_ENV = "MTL3D_MIRROR"  # base URL serving <base>/<filename> for every source

# --- download -------------------------------------------------------------------------------------------------
def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """sha256 and md5 (hex) of a file, read once in 1 MiB chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def verify_file(path: Path, *, expected_size: int | None = None, sha256: str | None = None,
                md5: str | None = None) -> dict[str, str]:
    """Check size, then whichever digest is known; return the computed digests. Raise Mtl3dError on mismatch."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise Mtl3dError(f"{path}: size mismatch, expected {expected_size} bytes, got {size}")
    digests = file_digests(path)
    for kind, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and digests[kind] != expected.lower():
            raise Mtl3dError(f"{path}: {kind} mismatch, expected {expected.lower()}, got {digests[kind]}")
    return digests


class _Truncated(Exception):
    """The server closed the stream before the announced length (retryable)."""


def _stream_once(url: str, part: Path, timeout: float, advance: Advance) -> int | None:
    """One HTTP attempt appending to `part` (Range-resuming when it exists). Returns the total size if known."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range past the end: what we have is the whole file (checked later)
            return offset
        raise
    with response:
        status = response.status
        if "text/html" in (response.headers.get("Content-Type") or "").lower():
            raise Mtl3dError(f"{url} returned a web page instead of the archive (download quota or login page?)")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            content_range = response.headers.get("Content-Range", "")  # "bytes start-end/total"
            start = content_range.split(" ")[-1].split("-")[0]
            if not start.isdigit() or int(start) != offset:
                part.unlink(missing_ok=True)
                raise _Truncated(f"server answered the resume request with range {content_range!r}")
            total_text = content_range.rsplit("/", 1)[-1]
            total = int(total_text) if total_text.isdigit() else (offset + length if length is not None else None)
            mode = "ab"
        else:  # 200: the server ignored Range (or we asked for none): start over
            offset = 0
            total = length
            mode = "wb"
        received = offset
        advance(received, total or 0)
        kept = "the bytes downloaded so far are kept there: free some space and run the same command to resume"
        with fileio.writing(part, hint=kept), open(part, mode) as handle:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as exc:
                    raise _Truncated(str(exc) or type(exc).__name__) from None
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                advance(received, total or 0)
        if total is not None and received < total:
            raise _Truncated(f"connection closed at {received} of {total} bytes")
        return total if total is not None else received


def download_file(url: str, dest: str | os.PathLike, *, expected_size: int | None = None, sha256: str | None = None,
                  md5: str | None = None, progress: ProgressFactory | None = None, timeout: float = 30,
                  retries: int = 3) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming with HTTP Range, retrying dropped connections.

    An existing `dest` that verifies is reused. A size or digest mismatch deletes the partial file and raises
    Mtl3dError naming expected and actual values; a transfer still short after `retries` retries keeps the
    `.part` so the next call resumes it.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            verify_file(dest, expected_size=expected_size, sha256=sha256, md5=md5)
            return dest
        except Mtl3dError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with stage(progress, f"download {dest.name}") as advance:
            _download_with_retries(url, part, expected_size, timeout, retries, advance)
    except KeyboardInterrupt:
        have = part.stat().st_size if part.exists() else 0
        raise Interrupted(f"download of {url} interrupted; {have} bytes kept in {part}: run the same command again "
                          f"to resume it") from None
    try:
        verify_file(part, expected_size=expected_size, sha256=sha256, md5=md5)
    except Mtl3dError as exc:
        part.unlink(missing_ok=True)
        raise Mtl3dError(f"{url}: {str(exc).split(': ', 1)[1]} (partial file removed)") from None
    os.replace(part, dest)
    return dest


def _download_with_retries(url: str, part: Path, expected_size: int | None, timeout: float, retries: int,
                           advance: Advance) -> None:
    """Stream `url` into `part`, retrying (with back-off) what a retry can fix; the bytes received are kept."""
    last_error = ""
    for attempt in range(retries + 1):
        if expected_size is not None and part.exists() and part.stat().st_size > expected_size:
            part.unlink()
        try:
            _stream_once(url, part, timeout, advance)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code not in (408, 429):
                raise Mtl3dError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            last_error = f"HTTP {exc.code} {exc.reason}"
        except (_Truncated, urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException,
                OSError) as exc:
            last_error = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        if attempt < retries:
            time.sleep(RETRY_DELAY_S * 2**attempt)
    have = part.stat().st_size if part.exists() else 0
    raise Mtl3dError(f"download of {url} failed after {retries + 1} tries ({last_error}); {have} bytes kept "
                     f"in {part}, run again to resume")


# --- extraction -----------------------------------------------------------------------------------------------
def _escapes(path: str) -> bool:
    """True if a relative archive path is absolute or climbs above the extraction folder."""
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return True
    depth = 0
    for part in PurePosixPath(path.replace("\\", "/")).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def check_member(member: tarfile.TarInfo, archive: str | os.PathLike) -> None:
    """Refuse absolute paths, '..' escapes, links pointing outside the extraction folder and device files."""
    name = member.name
    if _escapes(name):
        raise Mtl3dError(f"{archive}: refusing unsafe member {name!r} (absolute path or '..')")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise Mtl3dError(f"{archive}: refusing device or pipe member {name!r}")
    if member.issym():
        target = str(PurePosixPath(name).parent / member.linkname)
        if member.linkname.startswith("/") or _escapes(target):
            raise Mtl3dError(f"{archive}: refusing symlink {name!r} -> {member.linkname!r} pointing outside")
    if member.islnk() and _escapes(member.linkname):
        raise Mtl3dError(f"{archive}: refusing hard link {name!r} -> {member.linkname!r} pointing outside")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike,
                 progress: ProgressFactory | None = None) -> Path:
    """Extract a tar archive into `dest` (which must not exist) through a temporary sibling folder.

    Every member is checked first (`check_member`), then `extractall(filter="data")` (PEP 706) applies Python's own
    safety rules as a second line; any refusal raises Mtl3dError naming the member and leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise Mtl3dError(f"extraction target {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = fileio.make_temp_dir(dest.parent, f".{dest.name}.extract-")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member, archive)
            with stage(progress, f"extract {archive.name}") as advance:

                def counted() -> Iterator[tarfile.TarInfo]:
                    for index, member in enumerate(members):
                        yield member
                        advance(index + 1, len(members))

                with fileio.writing(dest, hint="free some space and run the same command again"):
                    tar.extractall(tmp, members=counted(), filter="data")
        os.replace(tmp, dest)
    except tarfile.FilterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Mtl3dError(f"{archive}: refusing unsafe member ({exc})") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Mtl3dError(f"{archive}: corrupt or unreadable archive ({exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def find_dataset_root(folder: Path, marker: str) -> Path:
    """The folder holding `marker`: `folder` itself or a descendant at most two levels down."""
    for depth in range(3):
        pattern = "/".join(["*"] * depth + [marker]) if depth else marker
        hits = sorted(p.parent for p in folder.glob(pattern) if p.is_dir())
        if hits:
            return hits[0]
    raise Mtl3dError(f"archive content in {folder} has no {marker}/ folder; is this the right archive?")


# --- one call per dataset -------------------------------------------------------------------------------------
def candidate_urls(source: Source, url: str | None = None) -> list[tuple[str, bool]]:
    """(url, pinned) in the order to try; `pinned` says whether the source's digests apply to that URL.

    An explicit URL is the user's own choice of file and is checked by size only if nothing else is known; the
    environment mirrors are taken to serve the same archive, so the published digests apply to them.
    """
    if url:
        return [(url, False)]
    found: list[tuple[str, bool]] = []
    if os.environ.get(source.env_var):
        found.append((os.environ[source.env_var], True))
    if os.environ.get(MIRROR_ENV):
        found.append((f"{os.environ[MIRROR_ENV].rstrip('/')}/{source.filename}", True))
    found.extend((u, True) for u in source.urls)
    return found


def download_dataset(source: Source, convert: Converter, out: str | os.PathLike, *, url: str | None = None,
                     overwrite: bool = False, keep_archive: bool = False, cache_dir: str | os.PathLike | None = None,
                     progress: ProgressFactory | None = None, log: Log | None = None) -> Path:
    """Download, verify and extract the archive `source`, then `convert` its dataset root into the common layout at
    `out`.

    `log` receives one-line notices (which URL, the computed sha256 where none is published). The archive is kept
    in `cache_dir` (default `out.parent/.downloads`) only with `keep_archive`; a failed download keeps its `.part`
    there for a later resume.
    """
    name = source.name
    out = Path(out)
    if out.exists() and not overwrite:
        raise Mtl3dError(f"{out} already exists (pass --overwrite to replace it)")
    cache = Path(cache_dir) if cache_dir is not None else out.parent / ".downloads"
    archive = cache / source.filename
    say = log or (lambda message: None)

    errors = []
    digests: dict[str, str] | None = None
    chosen = None
    for candidate, pinned in candidate_urls(source, url):
        say(f"downloading {source.filename} from {candidate}")
        try:
            download_file(candidate, archive, expected_size=source.size if pinned else None,
                          sha256=source.sha256 if pinned else None, md5=source.md5 if pinned else None,
                          progress=progress)
        except (DiskFull, Interrupted):
            raise  # another URL cannot help
        except Mtl3dError as exc:
            errors.append(str(exc))
            say(f"failed: {exc}")
            continue
        chosen = candidate
        if not (pinned and (source.sha256 or source.md5)):
            digests = file_digests(archive)
            say(f"no published checksum for {candidate}; sha256 of what was downloaded: {digests['sha256']}")
        break
    if chosen is None:
        raise Mtl3dError(f"could not download {name}: {' | '.join(errors)} (set {source.env_var} or {MIRROR_ENV} "
                         f"to a mirror, or pass --url)")

    extracted = cache / f".{source.name}-extract-{os.getpid()}"
    shutil.rmtree(extracted, ignore_errors=True)
    try:
        safe_extract(archive, extracted, progress=progress)
        root = find_dataset_root(extracted, source.marker)
        provenance = {"source": source.name, "archive": source.filename, "url": chosen,
                      "sha256": (digests or {}).get("sha256") or source.sha256}
        result = convert(root, out, overwrite=overwrite, progress=progress, extra=provenance)
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
        if cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()
    return result
