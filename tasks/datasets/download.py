"""Download a dataset archive, verify its checksum, and unpack it safely into the data directory.

For machines with internet access: the archive is streamed to a temporary file next to the target folder
while its MD5 and SHA-256 are computed; a mismatch with the expected checksum deletes it and stops. Only
then is it unpacked (zip or tar; absolute paths, `..` and links that leave the folder are refused) into a
staging folder, in which the dataset's root is found by its marker files and moved into place. A failed or
interrupted download leaves no partial dataset folder behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from common.errors import UserError

CHUNK = 1 << 20
HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}
Report = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)


@dataclass(frozen=True)
class ZenodoArchive:
    """One file of a Zenodo record, its published checksum(s) and how to find the dataset inside it."""

    record: str
    file_name: str
    md5: str | None = None
    sha256: str | None = None
    root_marker: tuple[str, ...] = ()  # names that all sit in the dataset's root folder inside the archive

    @property
    def url(self) -> str:
        return f"https://zenodo.org/records/{self.record}/files/{self.file_name}?download=1"

    @property
    def page(self) -> str:
        return f"https://zenodo.org/records/{self.record}"


def _check_hex(kind: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower().removeprefix(f"{kind}:")
    if not HEX[kind].match(value):
        raise UserError(f"--{kind} must be {32 if kind == 'md5' else 64} hexadecimal digits, got {value!r}")
    return value


def stream_to_file(
    url: str, path: Path, opener: Callable = urllib.request.urlopen, report: Report | None = None
) -> dict[str, str]:
    """Write the body of `url` to `path`; returns its {'md5': hex, 'sha256': hex}."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    try:
        with opener(url, timeout=60) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(length) if length and str(length).isdigit() else None
            done = 0
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                for h in digests.values():
                    h.update(chunk)
                done += len(chunk)
                if report:
                    report(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"download of {url} failed: {reason}") from None
    return {kind: h.hexdigest() for kind, h in digests.items()}


def _unsafe(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None or ".." in parts


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into `dest`, refusing any member that would land outside it."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if _unsafe(info.filename) or not _inside(dest, info.filename) or stat.S_ISLNK(mode):
                    raise UserError(
                        f"archive {archive.name} has an unsafe member {info.filename!r} (absolute "
                        "path, '..' or link); refusing to unpack it"
                    )
            zf.extractall(dest)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                bad_link = (m.issym() or m.islnk()) and (
                    _unsafe(m.linkname) or not _inside(dest, str(PurePosixPath(m.name).parent / m.linkname))
                )
                if _unsafe(m.name) or not _inside(dest, m.name) or bad_link or m.isdev():
                    raise UserError(
                        f"archive {archive.name} has an unsafe member {m.name!r} (absolute path, "
                        "'..', device or link leaving the folder); refusing to unpack it"
                    )
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover  (Python without extraction filters; members were checked above)
                tf.extractall(dest, members=members)
        return
    raise UserError(f"downloaded file {archive.name} is neither a zip nor a tar archive")


def find_root(folder: Path, marker: tuple[str, ...], max_depth: int = 3) -> Path | None:
    """The shallowest folder (breadth first, sorted) under `folder` holding every name in `marker`."""
    level = [folder]
    for _ in range(max_depth + 1):
        for candidate in level:
            if all((candidate / name).exists() for name in marker):
                return candidate
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir())
        if not level:
            break
    return None


def download_archive(
    name: str,
    dest: Path,
    archive: ZenodoArchive,
    md5: str | None = None,
    sha256: str | None = None,
    url: str | None = None,
    opener: Callable = urllib.request.urlopen,
    report: Report | None = None,
) -> Path:
    """Fetch, verify and unpack `archive` so that `dest` becomes the dataset's folder; returns `dest`."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UserError(
            f"dataset {name} is already in {dest}; check it with `bench data verify {name}` or delete "
            "that folder to download it again"
        )
    expected = {"md5": _check_hex("md5", md5) or archive.md5, "sha256": _check_hex("sha256", sha256) or archive.sha256}
    expected = {k: v for k, v in expected.items() if v}
    if not expected:
        raise UserError(
            f"no published checksum is recorded for {archive.file_name} of {name}; copy the md5 "
            f"that Zenodo lists for it on {archive.page} and pass it: "
            f"`bench data download {name} --md5 HEX` (or --sha256 HEX)"
        )
    url = url or archive.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}-", suffix=".part")
    os.close(fd)
    part = Path(part)
    staging = None
    try:
        got = stream_to_file(url, part, opener, report)
        for kind, value in expected.items():
            if got[kind] != value:
                raise UserError(
                    f"checksum mismatch for {url}: expected {kind} {value}, got {got[kind]}; the "
                    "download was deleted (retry, or check the checksum)"
                )
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}-unpack-"))
        safe_extract(part, staging)
        root = find_root(staging, archive.root_marker) if archive.root_marker else staging
        if root is None:
            raise UserError(
                f"{archive.file_name} does not hold {name} as expected (no folder with "
                f"{', '.join(archive.root_marker)}); nothing was installed"
            )
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(root, dest)
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def archive_downloader(name: str, folder: str, archive: ZenodoArchive) -> Callable[..., Path]:
    """A DatasetSpec.download: `download(data_dir, md5=None, sha256=None, url=None, opener=..., report=None)`."""

    def download(data_dir: Path, **options) -> Path:  # options: download_archive's md5 ... report
        return download_archive(name, Path(data_dir) / folder, archive, **options)

    return download
