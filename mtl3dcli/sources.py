"""Where `--weights` comes from: a local file, a Hugging Face Hub file or a URL, resolved to a local path.

    runs/x/weights/best.safetensors                     a local file, as it is
    hf://owner/repo/path/best.safetensors               the hub's main branch, through huggingface_hub
    hf://owner/repo@v1.0/path/model.onnx                a tag, branch or commit (pin a commit to reproduce)
    https://host/path/best.safetensors                  any URL, into mtl3d's cache
    ...#sha256=<64 hex digits>                           on any remote reference: the file must have this digest

Hub files live in huggingface_hub's own cache (HF_HOME / HF_HUB_CACHE) and honour HF_ENDPOINT, HF_TOKEN and
HF_HUB_OFFLINE. URL files are cached in `<cache>/weights/<hash of the URL>/<file name>`, where <cache> is
MTL3D_CACHE or ~/.cache/mtl3d. A file already in either cache is used without any request (so a hub reference
without a revision stays at what its first download found; pin `@<commit>`, or clear the cache, to move).
`resolve_weights` is the one call behind every command's `--weights`; each failure is one `Mtl3dError`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from mtl3dcli.datasets.download import download_file, verify_file
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.progress import ProgressFactory

HUB_SCHEME = "hf://"
URL_SCHEMES = ("https://", "http://")
CACHE_ENV = "MTL3D_CACHE"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HUB = re.compile(r"(?P<repo>[^/@]+/[^/@]+)(?:@(?P<revision>[^/]+))?/(?P<path>.+)")


@dataclass(frozen=True)
class HubFile:
    repo: str
    path: str
    revision: str | None = None


def is_remote(reference: str | os.PathLike) -> bool:
    return str(reference).startswith((HUB_SCHEME, *URL_SCHEMES))


def split_digest(reference: str) -> tuple[str, str | None]:
    """"<ref>#sha256=<hex>" -> ("<ref>", "<hex>"); a malformed digest is an error."""
    if "#" not in reference:
        return reference, None
    base, fragment = reference.split("#", 1)
    key, _, value = fragment.partition("=")
    value = value.lower()
    if key != "sha256" or not _SHA256.fullmatch(value):
        raise Mtl3dError(f"{reference}: a weights reference may end in #sha256=<64 hex digits>, got #{fragment}")
    return base, value


def parse_hub(reference: str) -> HubFile:
    """"hf://owner/repo[@revision]/path/in/repo" -> HubFile."""
    match = _HUB.fullmatch(reference[len(HUB_SCHEME):])
    if match is None or not match["path"].strip("/"):
        raise Mtl3dError(f"{reference}: hub weights look like hf://owner/repo[@revision]/path/file.safetensors")
    return HubFile(match["repo"], match["path"].strip("/"), match["revision"])


def cache_root() -> Path:
    """MTL3D_CACHE, else $XDG_CACHE_HOME/mtl3d, else ~/.cache/mtl3d."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtl3d"


def url_cache_path(url: str) -> Path:
    """Where a URL's file is cached: one folder per URL, the file keeping its name (and so its suffix)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "weights"
    return cache_root() / "weights" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def resolve_weights(reference: str | os.PathLike, progress: ProgressFactory | None = None) -> Path:
    """A local path for `reference` (see the module docstring), downloading it once when it is remote."""
    text = str(reference)
    if not is_remote(text):
        return Path(reference)
    base, digest = split_digest(text)
    if base.startswith(HUB_SCHEME):
        path = hub_file(parse_hub(base))
        if digest is not None:
            try:
                verify_file(path, sha256=digest)
            except Mtl3dError as exc:
                raise Mtl3dError(f"{base}: {str(exc).split(': ', 1)[1]}") from None
        return path
    return download_file(base, url_cache_path(base), sha256=digest, progress=progress, retries=2)


def hub_file(ref: HubFile) -> Path:
    """The file from huggingface_hub's cache, downloaded first when it is not there."""
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise Mtl3dError("hf:// weights need huggingface_hub (pip install 'mtl3d[hub]')") from None
    args = {"repo_id": ref.repo, "filename": ref.path, "revision": ref.revision,
            "endpoint": os.environ.get("HF_ENDPOINT") or None}
    where = f"hf://{ref.repo}{'@' + ref.revision if ref.revision else ''}/{ref.path}"
    try:
        return Path(huggingface_hub.hf_hub_download(**args, local_files_only=True))
    except errors.LocalEntryNotFoundError:
        pass  # not cached: ask the hub
    except errors.HFValidationError as exc:
        raise Mtl3dError(f"{where}: {str(exc).splitlines()[0]}") from None
    try:
        return Path(huggingface_hub.hf_hub_download(**args))
    except errors.RevisionNotFoundError:
        raise Mtl3dError(f"{where}: the hub repository {ref.repo} has no revision {ref.revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise Mtl3dError(f"{where}: no hub repository {ref.repo} (or it is private: log in with "
                         f"`hf auth login` or set HF_TOKEN)") from None
    except (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError):  # before EntryNotFoundError, its base
        reason = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
                  else f"the hub at {args['endpoint'] or constants.ENDPOINT} cannot be reached")
        raise Mtl3dError(f"{where}: not in the local hub cache, and {reason}") from None
    except errors.EntryNotFoundError:
        raise Mtl3dError(f"{where}: the hub repository {ref.repo} has no file {ref.path}") from None
    except (errors.HfHubHTTPError, OSError) as exc:
        raise Mtl3dError(f"{where}: hub download failed ({str(exc).splitlines()[0]})") from None
