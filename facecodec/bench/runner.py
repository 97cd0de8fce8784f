"""`facecodec bench`: every system over every clip, scored, written up.

Conventional codecs and any plug-in (`SystemFn`, e.g. facecodec with one renderer) go
through the same path: reference crop -> system -> decoded frames + bytes -> metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facecodec.bench.conventional import CODECS, HEADLINE_ANCHOR, conventional_system
from facecodec.bench.metrics import ALL_METRICS, SAMPLING, ReferenceFeatures, evaluate
from facecodec.bench.reference import (
    DEFAULT_CACHE,
    ReferenceFn,
    baselines_reference,
    frames_id,
    reference_clip,
)
from facecodec.bench.report import REPORT_FILES, anchor_summary, write_report
from facecodec.bench.system import Skipped, SystemFn
from facecodec.capture.video import refuse_still_picture
from facecodec.errors import FacecodecError
from facecodec.face.tracker import without_face_advice
from facecodec.files import (
    check_writable,
    content_id,
    count,
    make_folder,
    path_arg,
    same_name,
)

VIDEO_SUFFIXES = {".mp4", ".mpg", ".mov", ".avi", ".mkv", ".webm", ".y4m"}
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUICK_CODECS = ("x264-rt", "svtav1-ld")
QUICK_CLIPS = ("clips/grid_swiz3n.mpg", "clips/liveportrait_d19.mp4")


# Systems under test that `--renderers NAME` can name. A factory takes `quick` and returns
# a SystemFn; the codec registers its renderers here (register_system) before bench_main,
# with the reference crop its output must be scored against.
SYSTEM_FACTORIES: dict[str, Callable[[bool], SystemFn]] = {}
SYSTEM_REFERENCES: dict[str, ReferenceFn] = {}


def register_system(
    name: str, factory: Callable[[bool], SystemFn], reference: ReferenceFn = baselines_reference
) -> None:
    """Make a system under test available to `--renderers name`.

    reference: the crop the system reproduces; every codec in a run with this system is
    given (and scored against) that crop, so all systems code identical frames.
    """
    SYSTEM_FACTORIES[name] = factory
    SYSTEM_REFERENCES[name] = reference


def chosen_codecs(systems: list[str] | None, quick: bool) -> list[str]:
    """The conventional codecs to run (None: the default set); unknown names are an error."""
    if systems is None:
        return list(QUICK_CODECS if quick else CODECS)
    unknown = [s for s in systems if s not in CODECS]
    if unknown:
        raise FacecodecError(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
    return list(systems)


def run_bench(
    clips: list[Path],
    out_dir: Path,
    systems: list[str] | None = None,
    quick: bool = False,
    extra: dict[str, SystemFn] | None = None,
    reference_fn: ReferenceFn = baselines_reference,
    max_frames: int | None = None,
    metrics: tuple[str, ...] = ALL_METRICS,
    test_system: str | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    reuse: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Bench `systems` (conventional codec names) and `extra` plug-ins on `clips`.

    quick: 40 frames a clip, sparse ladders (CI smoke run, ~1 minute).
    test_system: the system the headline compares with x264 real time (default: the first
    plug-in in `extra`). reuse: an earlier results.json of the same protocol, whose points of
    conventional codecs are taken instead of coding those clips again (plug-ins always run).
    Returns what results.json holds.
    """
    check_names(clips)
    systems = chosen_codecs(systems, quick)
    runners: dict[str, SystemFn] = {s: conventional_system(s, quick) for s in systems}
    runners.update(extra or {})
    # Systems the plug-ins produced (a plug-in names its points), in order of appearance:
    # each gets a headline against the anchor; the first is the default test system.
    tested: list[str] = []
    frames = max_frames or (40 if quick else 150)
    sampling = SAMPLING
    reused, earlier_ids, earlier_crops = _reusable(reuse, reference_fn, frames, sampling, quick)
    # Points are told apart by clip name: what each name held and the crop every system was
    # given, so a later run reusing these points takes them only for the same video cut the
    # same way (facecodec's crop follows its sender, which may change between runs).
    clip_ids: dict[str, str] = {}
    crop_ids: dict[str, str] = {}
    skipped: list[str] = []  # settings a system could not code a clip at, and why
    training: list[str] = []  # training clips facecodec's networks were benched on
    points: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    t0 = time.time()
    # Progress only on a terminal: a bar in a log or a pipe is noise beside an error line.
    quiet = not sys.stderr.isatty()
    for clip in tqdm(clips, desc="clips", unit="clip", disable=quiet):
        try:
            ref = reference_clip(clip, 256, frames, cache_dir, reference_fn)
        except FacecodecError as e:
            raise FacecodecError(_about(clip, e)) from None
        if extra and trained_on(clip):
            training.append(ref.name)
            print(f"note: {clip} is a training clip: facecodec's networks learnt from it, "
                  "so its scores there flatter them (the validation split holds clips "
                  "they never saw)", file=sys.stderr)
        feats = ReferenceFeatures.compute(ref.frames, **sampling)
        fps = float(ref.fps)
        digest, crop = content_id(clip), frames_id(ref.frames)
        earlier_digest, earlier_crop = earlier_ids.get(ref.name), earlier_crops.get(ref.name)
        same = earlier_digest in (None, digest) and earlier_crop in (None, crop)
        had = any(c == ref.name for c, _ in reused)
        if earlier_digest not in (None, digest):
            print(f"note: {clip} is not the video the earlier results call {ref.name}: its "
                  "codecs are run again", file=sys.stderr)
        elif not same:
            crop_name = ("the BASELINES.md crop" if reference_fn is baselines_reference
                         else "facecodec's crop, which follows its sender,")
            print(f"note: {ref.name} is cut otherwise than in the earlier results ({crop_name} "
                  "changed): its codecs are run again", file=sys.stderr)
        elif had and earlier_digest is None:
            print(f"note: the earlier results do not record which video {ref.name} was; its "
                  "points are taken by name", file=sys.stderr)
        elif had and earlier_crop is None:
            print(f"note: the earlier results do not record how {ref.name} was cut; its "
                  "points are taken as scored against this crop", file=sys.stderr)
        # Recorded only where every point is checked to be this video's, on this crop.
        if not (had and same and earlier_digest is None):
            clip_ids[ref.name] = digest
        if not (had and same and earlier_crop is None):
            crop_ids[ref.name] = crop
        for name, fn in tqdm(runners.items(), desc=ref.name, unit="system", leave=False,
                             disable=quiet):
            earlier = reused.get((ref.name, name), []) if name in systems and same else []
            points += earlier
            try:
                fresh = [] if earlier else fn(ref, clip)
            except FacecodecError as e:
                raise FacecodecError(f"{name}: {_about(clip, e)}") from None
            for p in fresh:
                if isinstance(p, Skipped):
                    skipped.append(f"{p.system} {p.setting} on {ref.name} ({p.why})")
                    print(f"note: {p.system} {p.setting} skipped on {ref.name}: {p.why}",
                          file=sys.stderr)
                    continue
                if p.frames.shape != ref.frames.shape:
                    raise FacecodecError(
                        f"{name} {p.setting} on {ref.name}: gave frames {p.frames.shape}, "
                        f"reference is {ref.frames.shape}"
                    )
                s = evaluate(feats, p.frames, p.y, metrics)
                if name in (extra or {}) and p.system not in tested:
                    tested.append(p.system)
                points.append({
                    "clip": ref.name, "system": p.system, "setting": p.setting,
                    "family": p.family,
                    "frames": len(p.frames), "fps": fps, "bytes_all": p.bytes_all,
                    "bytes_net": p.bytes_net, "bytes_steady": p.bytes_steady,
                    **p.kbps(fps), **s.mean, "no_face_frames": s.no_face_frames,
                })
        # Rewrite the report after every clip: a long run that is stopped still leaves
        # complete results for the clips it finished.
        config = {
            "clips": [str(c) for c in clips], "clips_done": sorted({p["clip"] for p in points}),
            "clip_ids": clip_ids, "crop_ids": crop_ids, "skipped": skipped,
            "training_clips": training,
            "systems": list(runners), "reference": getattr(reference_fn, "__name__", "?"),
            "quick": quick, "max_frames": frames,
            "sampling": sampling, "anchor": HEADLINE_ANCHOR,
            "seconds": round(time.time() - t0, 1),
        }
        result = write_report(
            points, out_dir, config, test_system or (tested[0] if tested else None),
            HEADLINE_ANCHOR, tested,
        )
    return result


def check_names(clips: list[Path]) -> None:
    """Refuse no clips, or two of one name: the report, its curves and --reuse tell clips
    by name."""
    if not clips:
        raise FacecodecError("no clips to bench")
    pair = same_name(clips)
    if pair:
        raise FacecodecError(f"two clips are named {pair[0].stem} ({pair[0]} and {pair[1]}); "
                             "the bench tells clips by name: give each once, under its own "
                             "name")


def _about(clip: Path, e: FacecodecError) -> str:
    """`e`'s message, naming the clip (once) and without the encoder's advice on an option
    the bench does not have."""
    text = without_face_advice(str(e))
    return text if str(clip) in text else f"{clip}: {text}"


# What each reused point must hold, and of what kind: the report reads all of them. Any
# other field is a metric: a number, or null where it could not be scored.
_POINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "clip": str, "system": str, "setting": str, "family": str, "frames": int,
    "fps": (int, float), "bytes_all": int, "bytes_net": int, "bytes_steady": int,
    "kbps_all": (int, float), "kbps_net": (int, float), "kbps_steady": (int, float),
    "no_face_frames": list}


def _reusable(
    reuse: dict[str, Any] | None, reference_fn: ReferenceFn, frames: int,
    sampling: dict[str, int], quick: bool,
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[str, str], dict[str, str]]:
    """Points of an earlier run by (clip, system), after checking it scored the same way,
    what video each of its clip names held and how it was cut (none for results that did
    not record it)."""
    if not reuse:
        return {}, {}, {}
    check_results(reuse)
    cfg = reuse["config"]
    want = {"reference": getattr(reference_fn, "__name__", "?"), "max_frames": frames,
            "sampling": sampling, "quick": quick}
    diff = [f"{k} {cfg.get(k)!r}, here {v!r}" for k, v in want.items() if cfg.get(k) != v]
    if diff:
        # The reference crop differs between a run of the codecs alone (BASELINES.md's crop)
        # and one with facecodec (its own sender's crop): README, "Benchmarks".
        raise FacecodecError(f"cannot reuse the earlier results: they were scored with "
                             f"another {'; '.join(diff)}")
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in reuse["points"]:
        out.setdefault((p["clip"], p["system"]), []).append(p)
    return out, cfg.get("clip_ids", {}), cfg.get("crop_ids", {})


def check_results(results: object) -> None:
    """Refuse (one line) what is not a bench's results.json, before a run that reuses it."""
    if not (isinstance(results, dict) and isinstance(results.get("config"), dict)
            and isinstance(results.get("points"), list)):
        raise FacecodecError("cannot reuse the earlier results: not a bench's results.json")
    for key in ("clip_ids", "crop_ids"):
        ids = results["config"].get(key, {})
        if not (isinstance(ids, dict) and all(isinstance(v, str) for v in ids.values())):
            raise FacecodecError(f"cannot reuse the earlier results: its {key} are not clip "
                                 "names with their digests")
    for p in results["points"]:
        bad = [k for k, kind in _POINT_FIELDS.items()
               if not (isinstance(p, dict) and isinstance(p.get(k), kind)
                       and not isinstance(p.get(k), bool))]
        if not bad:  # scores: numbers (None where unscored); rates and bytes not negative
            bad = [k for k, v in p.items() if k not in _POINT_FIELDS and not (
                v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v))]
            bad += [k for k in _POINT_FIELDS if k.startswith(("kbps", "bytes"))
                    and not (math.isfinite(p[k]) and p[k] >= 0)]
        if bad:
            raise FacecodecError(f"cannot reuse the earlier results: a point without "
                                 f"{', '.join(bad)} (or of the wrong kind)")


def trained_on(clip: Path) -> bool:
    """Whether `clip` is one of the shared train split's clips, by content: a copy under
    any name is one too."""
    try:
        train = json.loads((DATA_DIR / "splits.json").read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no shared data here: nothing to tell
    try:
        size = clip.stat().st_size
        same = [DATA_DIR / t for t in train if isinstance(t, str)
                and (DATA_DIR / t).is_file() and (DATA_DIR / t).stat().st_size == size]
        return any(content_id(t) == content_id(clip) for t in same)
    except (OSError, FacecodecError):  # an unreadable clip is named by the run itself
        return False


def resolve_clips(items: list[Path], quick: bool) -> list[Path]:
    """Video files from files and folders; none given: the validation split."""
    if not items:
        splits = DATA_DIR / "splits.json"
        if not splits.is_file():
            raise FacecodecError(f"no clips given and no data at {DATA_DIR}")
        names = QUICK_CLIPS if quick else json.loads(splits.read_text())["validation"]
        return [DATA_DIR / n for n in names]
    out: list[Path] = []
    for p in items:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise FacecodecError(f"no video files in {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FacecodecError(f"no such file or folder: {p}")
    return out


def _frames_arg(text: str) -> int:
    """--frames: a whole number from 2 (steady-state rates and jitter leave the first frame
    out: over one frame there is nothing to score them on)."""
    n = count(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be 2 or more, got {n} (steady-state rates "
                                         "leave out the first frame)")
    return n


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `facecodec bench` options on the CLI's sub-parser."""
    parser.add_argument("clips", nargs="*", type=path_arg,
                        help="video files or folders (default: validation)")
    parser.add_argument("--out", type=path_arg, default=Path("out/bench"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="short clips, sparse ladders")
    parser.add_argument("--frames", type=_frames_arg, default=None, metavar="N",
                        help="frames scored from the start of each clip, 2 or more (default "
                        "150; quick: 40)")
    parser.add_argument(
        "--codecs", nargs="*", default=None, metavar="NAME",
        help=f"conventional codecs to run (default: all; quick: {' '.join(QUICK_CODECS)}); "
        f"known: {' '.join(CODECS)}",
    )
    parser.add_argument(
        "--renderers", nargs="*", default=[], metavar="NAME",
        help="registered facecodec systems to bench against the codecs",
    )
    parser.add_argument(
        "--reuse", type=path_arg, default=None, metavar="RESULTS_JSON",
        help="take conventional-codec points from an earlier run with the same protocol",
    )
    parser.add_argument(
        "--cache", type=path_arg, default=DEFAULT_CACHE, metavar="DIR",
        help=f"where the clips' tracked BASELINES.md crops are kept for later runs "
        f"(default {DEFAULT_CACHE}; facecodec's own crop is cut each run)",
    )


def bench_main(args: argparse.Namespace) -> int:
    """Run the bench from parsed options; one-line error and exit code 2 on bad input."""
    try:
        clips = resolve_clips(list(args.clips), args.quick)
        check_names(clips)
        for clip in clips:
            refuse_still_picture(clip, "the bench codes and scores clips")
        unknown = [r for r in args.renderers if r not in SYSTEM_FACTORIES]
        if unknown:
            known = ", ".join(SYSTEM_FACTORIES) or "none registered"
            raise FacecodecError(f"unknown renderer(s) {', '.join(unknown)}; known: {known}")
        codecs = chosen_codecs(args.codecs, args.quick)
        if not codecs and not args.renderers:
            raise FacecodecError("nothing to bench: name codecs after --codecs or systems "
                                 "after --renderers")
        refs = {SYSTEM_REFERENCES[r] for r in args.renderers}
        if len(refs) > 1:
            raise FacecodecError("the chosen renderers need different reference crops")
        reference = refs.pop() if refs else baselines_reference
        reuse = None
        if args.reuse is not None:
            try:
                reuse = json.loads(args.reuse.read_text())
            except (OSError, ValueError) as e:
                raise FacecodecError(f"cannot read {args.reuse}: {e}") from None
            # Not a bench's results, or scored another way: refused now, before any note
            # (a refusal is one line).
            _reusable(reuse, reference, args.frames or (40 if args.quick else 150), SAMPLING,
                      args.quick)
        extra = {r: SYSTEM_FACTORIES[r](args.quick) for r in args.renderers}
        make_folder(args.out)  # inputs checked first; an unwritable --out fails before the run
        for name in REPORT_FILES:  # each checked before the run
            check_writable(args.out / name)
        if not args.renderers:  # after the checks: a refusal is one line
            print("note: no --renderers: only the conventional codecs are scored, with no "
                  "headline (add --renderers neural warp to bench facecodec)", file=sys.stderr)
        result = run_bench(
            clips, args.out, codecs, args.quick, extra, reference, max_frames=args.frames,
            cache_dir=args.cache, reuse=reuse,
        )
    except FacecodecError as e:
        print(f"facecodec: error: {e}", file=sys.stderr)
        return 2
    head = result["headline"]
    if head.get("status") == "ok":
        for per_rate in head["metrics"].values():
            if "kbps_all" in per_rate:
                print(f"(all bytes) {per_rate['kbps_all']['text']}")
    for line in anchor_summary(result.get("against_anchors", {})):
        print(line)
    print(f"report: {args.out / 'report.md'} ({result['config']['seconds']} s)")
    return 0
