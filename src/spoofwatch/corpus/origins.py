"""Read the files of an origin: a directory, a (bare) git repository at a commit, a .deb, a wheel
or zip, an sdist tarball, or an extracted tree. Paths are relative, with ``/``, sorted."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Protocol

from spoofwatch.errors import DataError


class OriginError(DataError):
    """An origin that cannot be opened (missing path, commit not in the repository, ...)."""


class MissingFile(DataError):
    """A file the origin lists but cannot give (e.g. absent from a git snapshot)."""


class OriginReader(Protocol):
    def files(self) -> list[str]: ...

    def read(self, path: str) -> bytes: ...

    def close(self) -> None: ...


class DirReader:
    """A directory tree (``.git`` folders are left out)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise OriginError(f"{root}: expected a directory, found none")
        self.root = root

    def files(self) -> list[str]:
        found: list[str] = []
        for folder, dirs, names in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            base = Path(folder).relative_to(self.root)
            for name in names:
                full = Path(folder) / name
                if full.is_file():
                    found.append((base / name).as_posix())
        return sorted(found)

    def read(self, path: str) -> bytes:
        try:
            return (self.root / path).read_bytes()
        except OSError as exc:
            raise MissingFile(f"{path}: expected a readable file, found {exc}") from exc

    def close(self) -> None:
        return None


class GitReader:
    """The tree of ``commit`` in a bare or normal repository, read with ``git ls-tree`` and one
    long-lived ``git cat-file --batch`` process."""

    def __init__(self, path: Path, commit: str) -> None:
        if shutil.which("git") is None:
            raise OriginError("git: expected the git program on PATH to read git origins, found none")
        if not path.exists():
            raise OriginError(f"{path}: expected a git repository, found no such path")
        dot_git = path / ".git"
        self.git_dir = dot_git if dot_git.is_dir() else path
        if dot_git.is_file():  # a worktree or submodule: .git names the real folder
            found = subprocess.run(
                ["git", "-C", str(path), "rev-parse", "--absolute-git-dir"], capture_output=True, check=False
            )
            self.git_dir = Path(found.stdout.decode().strip() or path)
        self.commit = commit
        kind = self._git("cat-file", "-t", f"{commit}^{{commit}}", check=False).strip()
        if kind != b"commit":
            head = self._git("rev-parse", "HEAD", check=False).decode().strip() or "no HEAD"
            raise OriginError(
                f"{path}: expected commit {commit} in this git repository, found none (HEAD is {head}); "
                "fetch that commit or update the card's origin.commit"
            )
        self._batch: subprocess.Popen[bytes] | None = None

    def _git(self, *args: str, check: bool = True) -> bytes:
        result = subprocess.run(["git", f"--git-dir={self.git_dir}", *args], capture_output=True, check=False)
        if check and result.returncode != 0:
            raise OriginError(
                f"{self.git_dir}: git {' '.join(args)} failed: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout if result.returncode == 0 else b""

    def files(self) -> list[str]:
        out = self._git("ls-tree", "-r", "-z", "--full-tree", self.commit)
        self._blobs: dict[str, str] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, raw_path = entry.partition(b"\t")
            mode, kind, sha = meta.decode().split()
            if kind == "blob" and mode != "120000":  # symlinks carry a path, not audio
                self._blobs[raw_path.decode("utf-8", errors="surrogateescape")] = sha
        return sorted(self._blobs)

    def read(self, path: str) -> bytes:
        if not hasattr(self, "_blobs"):
            self.files()
        sha = self._blobs.get(path)
        if sha is None:
            raise MissingFile(f"{path}: expected a file in commit {self.commit}, found none")
        proc = self._process()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(sha.encode() + b"\n")
        proc.stdin.flush()
        header = proc.stdout.readline().decode().split()
        if len(header) != 3:
            raise MissingFile(f"{path}: the object {sha} is absent from this snapshot of the repository")
        size = int(header[2])
        data = _read_exact(proc.stdout, size)
        proc.stdout.read(1)
        return data

    def _process(self) -> subprocess.Popen[bytes]:
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._batch

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise MissingFile(f"expected {size} bytes from git cat-file, found {size - left}")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class ZipReader:
    """A wheel or zip archive, read in place."""

    def __init__(self, path: Path) -> None:
        try:
            self.archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise OriginError(f"{path}: expected a readable wheel or zip archive, found {exc}") from exc

    def files(self) -> list[str]:
        return sorted(i.filename for i in self.archive.infolist() if not i.is_dir())

    def read(self, path: str) -> bytes:
        try:
            return self.archive.read(path)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise MissingFile(f"{path}: expected a readable archive member, found {exc}") from exc

    def close(self) -> None:
        self.archive.close()


class TarReader:
    """An sdist or other tarball, read in place."""

    def __init__(self, path: Path) -> None:
        try:
            self.archive = tarfile.open(path)  # noqa: SIM115 (kept open while the build reads it)
        except (OSError, tarfile.TarError) as exc:
            raise OriginError(f"{path}: expected a readable tar archive, found {exc}") from exc
        self.members = {m.name.removeprefix("./"): m for m in self.archive.getmembers() if m.isfile()}

    def files(self) -> list[str]:
        return sorted(self.members)

    def read(self, path: str) -> bytes:
        handle = self.archive.extractfile(self.members[path])
        if handle is None:
            raise MissingFile(f"{path}: expected a regular archive member, found none")
        return handle.read()

    def close(self) -> None:
        self.archive.close()


def extract_deb(deb: Path, cache: Path) -> Path:
    """``dpkg-deb -x`` into ``cache/debs/<sha1 of the .deb>`` once; later builds reuse the tree."""
    if shutil.which("dpkg-deb") is None:
        raise OriginError(f"{deb}: expected dpkg-deb on PATH to unpack a .deb, found none")
    digest = hashlib.sha1(deb.read_bytes()).hexdigest()
    target = cache / "debs" / digest
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(f"{digest}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], capture_output=True, check=False)
    if result.returncode != 0:
        raise OriginError(
            f"{deb}: expected a .deb dpkg-deb can unpack, found: {result.stderr.decode().strip()}"
        )
    (partial / ".complete").write_text("")
    if (target / ".complete").is_file():  # another build unpacked it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


class _WithoutMarker(DirReader):
    def files(self) -> list[str]:
        return [f for f in super().files() if f != ".complete"]


def open_origin(kind: str, path: Path, commit: str, cache: Path) -> OriginReader:
    """The reader for a card's origin type and the local PATH given for it."""
    if not path.exists():
        raise OriginError(f"{path}: expected the origin's local copy, found no such path")
    if kind == "git":
        return GitReader(path, commit)
    if path.is_dir():
        return DirReader(path)
    name = path.name.lower()
    if name.endswith(".deb"):
        return _WithoutMarker(extract_deb(path, cache))
    if name.endswith((".whl", ".zip")):
        return ZipReader(path)
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        return TarReader(path)
    raise OriginError(
        f"{path}: expected a directory, a .deb, a wheel/zip or a tarball for a {kind} origin, "
        "found another file"
    )
