"""What a benchmark script is asked to run and write, checked before its work starts: a name
that matches nothing would give a table of nan or no table at all, and an output that cannot
be written would fail only after minutes or hours of measuring."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from facecodec.errors import FacecodecError
from facecodec.files import check_writable


def chosen(asked: Sequence[str] | None, known: Iterable[str], what: str) -> list[str]:
    """The names asked for, in the order asked (all of `known` when none are): any not in
    `known` is refused with one line that names those there are."""
    known = list(known)
    if not asked:
        return known
    unknown = list(dict.fromkeys(a for a in asked if a not in known))
    if unknown:
        raise FacecodecError(f"no {what} named {', '.join(unknown)} (there are: "
                             f"{', '.join(known) or 'none'})")
    return list(dict.fromkeys(asked))


def clips_named(clips: Sequence[Path], stems: Sequence[str] | None, where: str) -> list[Path]:
    """The clips among `clips` whose stem is asked for (all when none are), in `clips`'
    order; a stem that names none of them is refused."""
    keep = set(chosen(stems, [c.stem for c in clips], f"clip in {where}"))
    return [c for c in clips if c.stem in keep]


def containing(part: str, known: Iterable[str], what: str) -> list[str]:
    """The names of `known` that contain `part` (a filter such as --only); none is refused."""
    known = list(known)
    hits = [k for k in known if part in k]
    if not hits:
        raise FacecodecError(f"no {what} name contains {part!r} (there are: "
                             f"{', '.join(known) or 'none'})")
    return hits


def check_outputs(*paths: Path | None) -> None:
    """Fail with one line now if an output (a file, made with its folders) cannot be
    written; None stands for an output not asked for."""
    for path in paths:
        if path is not None:
            check_writable(path)
