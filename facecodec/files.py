"""Output files appear whole or not at all."""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

from facecodec.errors import FacecodecError

# Folders made for outputs by this command, in the order made: a command that fails removes
# those still empty (`settle_made_folders`), so it leaves nothing behind.
_made: list[Path] = []


def path_arg(text: str) -> Path:
    """A path given on the command line (argparse `type=`): an empty one is refused, since
    Path("") is the current folder and an error would name "." instead."""
    if not text:
        raise argparse.ArgumentTypeError("an empty name; give a path")
    return Path(text)


def count(text: str) -> int:
    """A whole number from 1 up (argparse `type=`): 0 steps would write untrained weights
    as the best, 0 frames measure nothing."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


# Standard output as an output: `-o -` names it (a file named so is `-o ./-`), and a video's
# frames go there as y4m, as a player reads them from a pipe (`decode x.fcv -o - | mpv -`).
STDOUT = Path("/dev/stdout")
STDOUT_TERMINAL = ("-o - writes uncompressed video to standard output, not to a terminal: "
                   "pipe it to a player (| mpv -)")


def to_stdout(path: str | Path) -> bool:
    return Path(path) == STDOUT


def output_arg(text: str) -> Path:
    """An output file's name on the command line (argparse `type=`): `-` is standard output.
    One ending in a slash means a folder, which Path would drop (`-o out/` wrote a file
    named `out`)."""
    if text == "-":
        return STDOUT
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder; give a file name")
    return path_arg(text)


def make_folder(path: Path) -> None:
    """Create an output folder (and its parents), or fail with one line."""
    missing = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FacecodecError(f"cannot create folder {path}: a file is in the way") from None
    except OSError as e:
        raise FacecodecError(f"cannot create folder {path}: {e.strerror or e}") from None
    finally:  # also the parents made before a deeper one failed
        _made.extend(p for p in reversed(missing) if p.is_dir())


def settle_made_folders(failed: bool) -> None:
    """At a command's end: if it failed, remove the folders `make_folder` made that are still
    empty, deepest first (one that holds anything, such as a damaged stream's frames, stays);
    either way forget them."""
    while _made:
        folder = _made.pop()
        if failed:
            try:
                folder.rmdir()
            except OSError:
                pass


def landing(path: Path) -> Path:
    """Where writing `path` lands: a symbolic link is written through to its target, not
    replaced by a file."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def temp_beside(path: Path) -> tuple[int, Path]:
    """A hidden temporary file beside where `path` lands (open descriptor, path), to
    `publish` onto `path` when complete. Its name keeps a prefix of `path`'s (a name near
    the system's 255-byte limit would not fit with the prefix and suffix added)."""
    path = landing(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise FacecodecError(f"cannot write {path}: {e.strerror or e}") from None
    return fd, Path(tmp)


def publish(tmp: Path, dst: Path) -> None:
    """Move a finished temporary file onto `dst`, or remove it and fail with one line (e.g.
    a folder made at `dst` since it was checked). mkstemp makes files private (0600); give
    the result the mode an ordinary `open()` would have (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, landing(dst))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FacecodecError(f"cannot write {dst}: {e.strerror or e}") from None


def check_readable(path: Path, kind: str, pipe: bool = False) -> None:
    """Fail with one line unless `path` is a regular file (`kind`: what it should hold, "a
    video file"). A pipe is refused unless `pipe` (an input read once, to its end, such as
    `<(cat x.fcv)`): most inputs are opened more than once. A device is always refused: one
    such as /dev/zero never ends. With `pipe`, a missing file is left to the reader's open."""
    try:
        if path.is_dir():
            raise FacecodecError(f"{path}: is a folder, not {kind}")
        if path.exists() and not path.is_file():
            if not pipe:
                raise FacecodecError(f"{path}: not a regular file (a pipe or device); give "
                                     f"{kind}")
            if not path.is_fifo():
                raise FacecodecError(f"{path}: a device, not {kind}")
        if not pipe and not path.is_file():
            raise FacecodecError(f"{path}: no such file")
    except OSError as e:  # a name too long, a loop of links ...
        raise FacecodecError(f"{path}: {e.strerror or e}") from None


def check_writable(path: Path) -> None:
    """Fail now, before the work that produces it, if `path` cannot be written. An output
    is written whole under a temporary name and renamed onto `path`, so a device or a pipe
    there (as root, `-o /dev/null` would replace the system's) is refused, not replaced."""
    try:
        if path.is_dir():
            raise FacecodecError(f"cannot write {path}: it is a folder")
        if path.exists() and not path.is_file():
            raise FacecodecError(f"cannot write {path}: not a regular file (a device, pipe or "
                                 "socket)")
        target = landing(path)
        make_folder(target.parent)
        # A file made and dropped there: the only test a read-only mount, a pseudo file
        # system such as /sys or a full quota cannot pass (as root, access() passes them).
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as e:  # a name too long, a loop of links ...
        raise FacecodecError(f"cannot write {path}: {e.strerror or e}") from None


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one existing file (links and relative paths followed)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_text(path: Path, text: str) -> None:
    """Write a small text file whole or not at all."""
    check_writable(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def content_id(path: Path) -> str:
    """What a file holds, as a short digest: two data sets may name different clips alike."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:32]
    except OSError as e:
        raise FacecodecError(f"cannot read {path}: {e.strerror or e}") from None


def same_name(paths: list[Path]) -> tuple[Path, Path] | None:
    """The first two of `paths` with one name (stem), for what tells files by name."""
    named: dict[str, Path] = {}
    for path in paths:
        if path.stem in named:
            return named[path.stem], path
        named[path.stem] = path
    return None
