"""The `facecodec` command: parses arguments and calls the library. Errors are one line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from facecodec import __version__
from facecodec.errors import FacecodecError, OneLineParser, Terminated
from facecodec.files import (
    STDOUT_TERMINAL,
    output_arg,
    path_arg,
    same_file,
    settle_made_folders,
    to_stdout,
)
from facecodec.motion.presets import DEFAULT_PRESET, PRESETS
from facecodec.render.pose import add_pose_arguments, pose_of
from facecodec.render.registry import DEFAULT_RENDERER, RENDERERS
from facecodec.words import count


def _refuse_beside_target(a: argparse.Namespace, names: tuple[str, ...]) -> None:
    """--target-kbps picks the preset and the layer itself: a choice of them given beside it
    would be ignored without a word."""
    if a.target_kbps is None:
        return
    given = ["--" + name.replace("_", "-") for name in names if getattr(a, name)]
    if given:
        raise FacecodecError(f"--target-kbps picks the quality and the layer itself: drop "
                             f"{' and '.join(given)}")


def _refuse_still_picture(path: Path) -> None:
    """A picture would be coded as a one-frame video, its rate counted over 1/25 s."""
    from facecodec.capture.video import refuse_still_picture

    refuse_still_picture(path, "encode codes a video (to appear as a portrait, give it to "
                               "--avatar)")


def _encode(a: argparse.Namespace) -> int:
    from facecodec.capture.sound import has_sound
    from facecodec.codec.encoder import EncoderSettings, encode_file
    from facecodec.codec.encoder_watch import stalls

    _refuse_beside_target(a, ("quality", "layer_kbps", "layer_crf"))
    _refuse_still_picture(a.input)
    try:  # asked before the stream is written: nothing may fail after it
        sound = a.input.is_file() and has_sound(a.input)
    except FacecodecError:
        sound = False  # encode says what is wrong with the file in its own words
    settings = EncoderSettings(
        size=a.size,
        preset=a.quality or DEFAULT_PRESET,
        target_kbps=a.target_kbps,
        keyframe_quality=a.keyframe_quality,
        refresh_s=a.refresh,
        allow_several=a.face == "largest",
        layer_kbps=a.layer_kbps,
        layer_crf=a.layer_crf,
        surround=not a.no_surround,
        reference=a.reference,
        avatar=a.avatar,
    )
    stalled = stalls()
    r = encode_file(a.input, a.output, settings, progress=sys.stderr.isatty())
    stalled = stalls() - stalled
    rep = r.report
    if rep.frames_without_face:
        print(_no_face_warning(rep.frames_without_face, rep.frames, r.keyframes[0].index,
                               r.header.layer is not None), file=sys.stderr)
    if rep.several_faces and a.face == "largest":
        print("note: several faces seen; the largest/tracked one was coded", file=sys.stderr)
    elif rep.face_joined is not None:
        print(f"note: another face appeared in frame {rep.face_joined}; the face followed "
              "from the start was coded", file=sys.stderr)
    for line in _moot_motion_options(a, r.header.layer is not None):
        print(line, file=sys.stderr)
    if r.choice is not None:
        print(f"note: {r.choice}", file=sys.stderr)
    if stalled:
        print(f"note: an encoder stopped answering ({count(stalled, 'time')}); a fresh one "
              "coded its pictures again", file=sys.stderr)
    total_kbps = r.total_kbps
    layer = ""
    if r.header.layer is not None:
        lay = r.header.layer
        layer = (f", layer {r.layer_kbps:.2f} kbps ({lay.size} px, 1 picture in "
                 f"{lay.divisor} frames)")
    if sound:  # a call sends sound beside the motion; a file has no room for it
        print("note: the sound is not coded: an .fcv stream carries the picture alone",
              file=sys.stderr)
    avatar = f"; the face drives {a.avatar.name}, an avatar" if a.avatar is not None else ""
    print(
        f"{a.output}: {count(rep.frames, 'frame')}, {count(len(r.keyframes), 'keyframe')}, "
        f"motion {r.motion_kbps:.2f} kbps{layer}, total {total_kbps:.2f} kbps{avatar}"
    )
    return 0


def _moot_motion_options(a: argparse.Namespace, layered: bool) -> list[str]:
    """Notes on the options for motion alone where they could not act: the stream is what
    they ask for anyway (beside a layer the surround is never sent and the references are
    the segments' first frames; an avatar sends neither surround nor references)."""
    if layered:
        why = {"--no-surround": "beside a layer: the surround is sent with motion alone",
               "--reference first": "beside a layer: its references are the segments' first "
                                    "frames already"}
    elif a.avatar:
        why = {"--no-surround": "with --avatar: an avatar stream sends no surround",
               "--reference first": "with --avatar: the portrait is the reference"}
    else:
        return []
    given = [flag for flag, on in (("--no-surround", a.no_surround),
                                   ("--reference first", a.reference == "first")) if on]
    return [f"note: {flag} changes nothing {why[flag]}" for flag in given]


def _no_face_warning(missing: list[int], frames: int, first_face: int, layer: bool) -> str:
    """What became of the frames without a face: before it appeared, the first picture is
    shown; after, the last pose is held, until it came back (a new keyframe) or to the end,
    and a low-resolution layer goes on showing them as they are."""
    what = []
    if missing[0] < first_face:
        what.append(f"the first {first_face} show the face's first picture")
    later = [i for i in missing if i > first_face]
    if later and layer:
        what.append("after it, the low-resolution layer shows them as they are")
    elif later:
        back = ("to the end" if later[-1] == frames - 1
                else "until the face came back (a new keyframe)")
        what.append(f"after it, the last pose is held {back}")
    return (f"warning: no face in {len(missing)} of {frames} frames (first {missing[0]}, "
            f"last {missing[-1]}); " + "; ".join(what))


def _decode(a: argparse.Namespace) -> int:
    pose = pose_of(a)  # angles out of range are refused before the decoder loads

    from facecodec.bitstream.container import AVATAR_WORDS, StreamHeader
    from facecodec.codec.decoder import decode_file
    from facecodec.render.edits import EyeContact

    eyes = EyeContact(a.eye_contact) if a.eye_contact is not None else None

    def whom(header: StreamHeader) -> None:
        # Frames on standard output are watched as they come: the summary line is too late.
        if header.avatar and to_stdout(a.output):
            print(f"note: the sender {AVATAR_WORDS}", file=sys.stderr, flush=True)

    r = decode_file(a.input, a.output, renderer=a.renderer, pose=pose, avatar=a.avatar,
                    layer=a.layer, upscale=a.upscale, eye_contact=eyes, on_header=whom,
                    progress=_progress(a.output))
    written = "standard output" if to_stdout(a.output) else a.output
    if r.error:
        print(
            f"facecodec: error: {a.input}: {r.error}; {count(r.frames_written, 'frame', 'the ')} "
            f"before it {'was' if r.frames_written == 1 else 'were'} written to {written}",
            file=sys.stderr,
        )
        return 3
    st = r.stats
    layer = ""
    if r.header.layer is not None and (pose.active or a.avatar is not None or eyes):
        # The motion beside a layer is coded coarsely (the layer carries the detail): drawn
        # from it alone, the mouth barely moves.
        layer = ("; the low-resolution layer is not used with --pose/--yaw/--pitch/--roll/"
                 "--avatar/--eye-contact, and the motion beside it is coarse (lips and "
                 "expression barely move)")
    elif r.header.layer is not None and a.layer == "off":
        layer = "; the low-resolution layer left out (--layer off)"
    elif r.header.layer is not None:
        layer = (f", {st.frames_fused} with the layer ({st.layer_pictures} layer pictures"
                 + (f", {st.layer_lost} lost" if st.layer_lost else "")
                 + (f", {st.layer_bad} bad" if st.layer_bad else "") + ")")
    if r.header.layer is None and a.layer != "net":
        print(f"note: --layer {a.layer} changes nothing: {a.input} has no low-resolution layer",
              file=sys.stderr)
    bad = f"; {st.restore_bad} bad RESTORE packets ignored" if st.restore_bad else ""
    avatar = ""
    if r.header.avatar:  # whom the picture shows is the viewer's to know
        avatar = f"; the sender {AVATAR_WORDS}" + (
            ", which drives your --avatar portrait here" if a.avatar is not None else "")
    cut = "" if r.ended else "; no END packet: the stream was cut short or is still being written"
    print(f"{written}: {count(r.frames_written, 'frame')} ({st.frames_rendered} rendered{layer})"
          f"{bad}{cut}{avatar}", file=_report_to(a.output))
    return 0


def _upscale(a: argparse.Namespace) -> int:
    from facecodec.render.upscale import upscale_file

    n = upscale_file(a.input, a.output, progress=_progress(a.output))
    written = "standard output" if to_stdout(a.output) else a.output
    print(f"{written}: {count(n, 'frame')}, two times the input's size",
          file=_report_to(a.output))
    return 0


def _progress(output: Path) -> bool:
    """Whether to show a progress bar: on a terminal, unless frames go to standard output
    (a player reading them writes to the terminal too)."""
    return sys.stderr.isatty() and not to_stdout(output)


def _report_to(output: Path) -> TextIO:
    """Where a command says what it wrote: not among the frames it wrote to standard output."""
    return sys.stderr if to_stdout(output) else sys.stdout


def _info(a: argparse.Namespace) -> int:
    from facecodec.bitstream.info import describe, format_info

    d = describe(a.input)
    print(json.dumps(d) if a.json else format_info(d))
    if d.get("damaged"):  # described up to the damage; the damage is also an error
        print(f"facecodec: error: {a.input}: {d['damaged']}", file=sys.stderr)
        return 3
    return 0


def _demo(a: argparse.Namespace) -> int:
    from facecodec.demo import run_demo

    _refuse_beside_target(a, ("quality",))
    return run_demo(a.input or _demo_clip(), a.out, a.quality or DEFAULT_PRESET, a.target_kbps,
                    a.renderer)


# The shared data set lives beside the checkout; the demo may be run from anywhere.
DEMO_CLIP = Path("../shared/data/clips/liveportrait_d19.mp4")


def _demo_clip() -> Path:
    """DEMO_CLIP from the current folder, else from the checkout this package is in."""
    here = Path(__file__).resolve().parents[1] / DEMO_CLIP
    return DEMO_CLIP if DEMO_CLIP.exists() or not here.exists() else here


def _bench(a: argparse.Namespace) -> int:
    from facecodec.bench.facecodec_system import register_renderers
    from facecodec.bench.runner import bench_main

    register_renderers()
    return bench_main(a)


OUTPUT_HELP = ("video to write: .mp4, .m4v, .mov or .mkv (H.264, crf 18), or .y4m (the frames "
               "uncompressed, for scoring with other tools); - for y4m on standard output, "
               "for a player reading a pipe (| mpv -)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; `argv` (without the program name) says which command will run."""
    p = OneLineParser(prog="facecodec", description="Talking-head video codec")
    p.add_argument("--version", action="version", version=f"facecodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    # An argument no command takes is found by the top parser: `main` has the command's
    # parser report it, which points to that command's --help.
    p.set_defaults(command_parsers=sub.choices)

    e = sub.add_parser("encode", help="encode a video into an .fcv stream")
    e.add_argument("input", type=path_arg)
    e.add_argument("-o", "--output", type=output_arg, required=True)
    e.add_argument("--quality", choices=PRESETS, default=None,
                   help=f"preset (default {DEFAULT_PRESET}); --target-kbps picks one itself")
    e.add_argument("--target-kbps", type=float, default=None,
                   help="rate to aim for, every byte of the file counted (above 5 kbps "
                        "motion + the low-resolution layer is tried too; the higher VMAF wins)")
    e.add_argument("--layer-kbps", type=float, default=0.0,
                   help="low-resolution layer rate (0: off, motion only)")
    e.add_argument("--layer-crf", type=int, default=None,
                   help="constant-quality layer: this SVT-AV1 crf (20..70) instead of the "
                        "one that meets --layer-kbps, which still picks size and picture rate")
    e.add_argument("--no-surround", action="store_true",
                   help="motion only: do not send how the picture around the face moves "
                        "(the warp then guesses it; about 0.3-1 kbps less)")
    e.add_argument("--reference", choices=("best", "first"), default="best",
                   help="motion only: send as each segment's reference the frame that draws "
                        "the segment best (best) or the frame where it starts (first)")
    e.add_argument("--size", type=int, default=256,
                   help="face crop side in pixels (a multiple of 16 within 128..512)")
    e.add_argument("--keyframe-quality", type=int, default=None,
                   help="reference picture 0..100 (default 60; with a layer 30 up to a 6 kbps "
                        "layer, 10 above, 0 when the layer is as large as the crop)")
    e.add_argument("--refresh", type=float, default=0.0,
                   help="a refresh keyframe every N s (1..3600; 0: only when needed)")
    e.add_argument("--face", choices=("single", "largest"), default="single",
                   help="several faces at the start: error out (single: a face that joins "
                        "later is noted, the first one followed) or code the largest")
    e.add_argument("--avatar", type=path_arg, default=None, metavar="PORTRAIT",
                   help="appear as this portrait, driven by the video's face: the face "
                        "itself is not coded (motion only)")
    e.set_defaults(func=_encode)

    d = sub.add_parser("decode", help="decode an .fcv stream into a video")
    d.add_argument("input", type=path_arg)
    d.add_argument("-o", "--output", type=output_arg, required=True, help=OUTPUT_HELP)
    d.add_argument("--renderer", default=DEFAULT_RENDERER,
                   help=f"{' or '.join(RENDERERS)} (default {DEFAULT_RENDERER})")
    add_pose_arguments(d, "the head")
    d.add_argument("--avatar", type=path_arg, default=None,
                   help="portrait of one person to drive instead")
    d.add_argument("--eye-contact", type=float, nargs="?", const=10.0, default=None,
                   metavar="DEG", help="draw the eyes turned up into the camera, DEG degrees "
                   "above where the sender looks (default 10; 0..30)")
    d.add_argument("--layer", choices=("net", "gate", "bicubic", "off"), default="net",
                   help="use of a low-resolution layer: fusion network, training-free "
                        "fusion, the layer alone, or motion only")
    d.add_argument("--upscale", action="store_true",
                   help="write frames at twice the stream's size (super-resolution network)")
    d.set_defaults(func=_decode)

    u = sub.add_parser("upscale", help="upscale a video two times (super-resolution network)")
    u.add_argument("input", type=path_arg)
    u.add_argument("-o", "--output", type=output_arg, required=True, help=OUTPUT_HELP)
    u.set_defaults(func=_upscale)

    i = sub.add_parser("info", help="describe an .fcv stream")
    i.add_argument("input", type=path_arg)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)

    m = sub.add_parser("demo", help="encode + decode a clip, compare with H.264 and AV1")
    m.add_argument("input", type=path_arg, nargs="?", default=None,
                   help=f"a talking-head clip (default: {DEMO_CLIP}, beside the current "
                        "folder or this checkout)")
    m.add_argument("--out", type=path_arg, default=Path("out/demo"))
    m.add_argument("--target-kbps", type=float,
                   help="rate, every byte counted (above 5 kbps the low-resolution layer "
                        "is tried too)")
    m.add_argument("--quality", choices=PRESETS, default=None,
                   help=f"motion preset (default {DEFAULT_PRESET})")
    m.add_argument("--renderer", default=DEFAULT_RENDERER,
                   help=f"{' or '.join(RENDERERS)} draws the stream (default {DEFAULT_RENDERER})")
    m.set_defaults(func=_demo)

    # The bench and live-call modules pull in torch and aiortc (seconds of imports): declare
    # their options only when their command is the one being run.
    wanted = argv[0] if argv else None
    b = sub.add_parser("bench", help="rate-quality comparison against conventional codecs")
    b.set_defaults(func=_bench)
    t = sub.add_parser("train", help="train the neural renderer (also under torchrun)")
    s = sub.add_parser("signal", help="signaling server pairing call peers")
    c = sub.add_parser("call", help="join a live call")
    if wanted == "bench":
        from facecodec.bench.runner import add_bench_arguments

        add_bench_arguments(b)
    elif wanted == "train":
        from facecodec.train.trainer import add_train_arguments, train_main

        add_train_arguments(t)
        t.set_defaults(func=train_main)
    elif wanted in ("signal", "call"):
        from facecodec.stream.call import (
            add_call_arguments,
            add_signal_arguments,
            call_main,
            signal_main,
        )

        add_signal_arguments(s)
        s.set_defaults(func=signal_main)
        add_call_arguments(c)
        c.set_defaults(func=call_main)
    return p


def _quiet_native_stderr() -> None:
    """Native libraries (MediaPipe, TFLite) log to file descriptor 2 from their own threads.
    Keep Python's sys.stderr on the real terminal and send descriptor 2 to /dev/null, so the
    user sees only facecodec's own messages."""
    if os.environ.get("FACECODEC_DEBUG"):
        return
    sys.stderr.flush()
    real = os.dup(2)
    sys.stderr = os.fdopen(real, "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


# What `encode` writes is a stream, not a video or a picture: such a suffix on its output is
# a mistake that would leave an .fcv named like one (or replace a portrait with it).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".y4m", ".mpg")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _check_output(a: argparse.Namespace) -> None:
    """Refuse an output that is one of the command's inputs (the video or stream, or the
    avatar's portrait: it would be replaced by the result) and, for `encode`, one named like
    a video or a picture."""
    src, dst = getattr(a, "input", None), getattr(a, "output", None)
    if not isinstance(src, Path) or not isinstance(dst, Path):
        return
    if to_stdout(dst):
        if a.command == "encode":
            raise FacecodecError("encode writes an .fcv file: give -o NAME.fcv (-o - is "
                                 "decode's and upscale's, for frames on standard output)")
        if sys.stdout.isatty():
            raise FacecodecError(STDOUT_TERMINAL)
        return
    if same_file(src, dst):
        raise FacecodecError(f"cannot write {dst}: it is the input")
    avatar = getattr(a, "avatar", None)
    if avatar is not None and same_file(Path(avatar), dst):
        raise FacecodecError(f"cannot write {dst}: it is the --avatar portrait")
    suffix = dst.suffix.lower()
    if a.command == "encode" and suffix in VIDEO_SUFFIXES + PICTURE_SUFFIXES:
        kind = "video" if suffix in VIDEO_SUFFIXES else "picture"
        raise FacecodecError(f"cannot write {dst}: encode writes an .fcv stream, not a "
                             f"{dst.suffix} {kind} (use -o NAME.fcv)")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """`facecodec ARGS`; `command`: the subcommand a launcher's own module name stands for
    (`python -m facecodec.train ARGS` is `facecodec train ARGS`)."""
    if argv is None:
        argv = sys.argv[1:]
        quiet = True
    else:
        quiet = False
    if command is not None:
        argv = [command, *argv]
    args, extra = build_parser(argv).parse_known_args(argv)
    if extra:
        args.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if quiet:
        # Under torchrun the native libraries' own messages (NCCL, a collective's timeout)
        # are the ones that explain a failed run: they keep the terminal.
        if not (args.command == "train" and "WORLD_SIZE" in os.environ):
            _quiet_native_stderr()
        signal.signal(signal.SIGTERM, _terminate)

    def work() -> int:
        _check_output(args)
        return int(args.func(args) or 0)

    code = run_guarded(work)
    if quiet:
        # The command has its result. A signal from here on (a second Ctrl-C or SIGTERM, sent
        # while the interpreter's exit runs library cleanup) ends the process as signals do,
        # not with a traceback from whatever cleanup it lands in.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code


def run_guarded(work: Callable[[], int | None]) -> int:
    """Run a command's work as the command line promises: an error is one line and an exit
    code, never a traceback, and a failed command leaves no folder it made empty. Also for
    the trainers run as modules (`python -m facecodec.train.layer`) and the benchmarks."""
    if not os.environ.get("FACECODEC_DEBUG"):
        # MediaPipe's use of a deprecated protobuf call: not the user's concern.
        warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
    try:
        code = int(work() or 0)
        sys.stdout.flush()  # a closed pipe (`| head`) shows here, not at exit
    except BrokenPipeError:
        # The reader went away (`facecodec info x.fcv | head -1`): what it wanted it has.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except FacecodecError as e:
        print(f"facecodec: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("facecodec: interrupted", file=sys.stderr)
        code = 130
    except Terminated:
        print("facecodec: terminated", file=sys.stderr)
        code = 143
    except Exception as e:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("FACECODEC_DEBUG"):
            raise
        saved = _save_traceback()
        where = f"its traceback is in {saved}; " if saved is not None else ""
        print(f"facecodec: internal error: {e.__class__.__name__}: {e} "
              f"({where}FACECODEC_DEBUG=1 prints it)", file=sys.stderr)
        code = 1
    settle_made_folders(failed=code != 0)
    return code


def _save_traceback() -> Path | None:
    """The traceback of the exception being handled, in a file of its own in the temporary
    folder: a bug met hours into a run (a training) is located without running it again."""
    try:
        fd, name = tempfile.mkstemp(prefix="facecodec-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"facecodec {__version__}: {' '.join(sys.argv)}\n")
            traceback.print_exc(file=f)
    except OSError:
        return None
    return Path(name)


if __name__ == "__main__":
    sys.exit(main())
