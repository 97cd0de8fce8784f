"""Shared fixtures: the shared data directory, one real clip encoded once per session, and
runners for the `facecodec` command: in a subprocess (the real stderr, native libraries'
output included, and exit code) and in-process (`facecodec.cli.main`, much faster: Python's
stderr only).

Tests that need the shared data skip cleanly when the directory is missing; tests that do not
ask for these fixtures are unaffected.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from facecodec import cli
from facecodec.codec.encoder import EncodeResult, EncoderSettings, encode_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = DATA / "clips"
PORTRAITS = DATA / "portraits"
GRID_CLIP = CLIPS / "grid_swiz3n.mpg"  # 75 frames, 360x288, 25 fps, one face
GRID_FRAMES = 75


@dataclass(frozen=True)
class EncodedClip:
    """A real clip encoded at the default settings: source, .fcv path and encoder result."""

    source: Path
    fcv: Path
    result: EncodeResult


@dataclass(frozen=True)
class CliRun:
    """Outcome of one `facecodec` subprocess."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def require(path: Path) -> Path:
    """`path`, or skip the test if the shared data it lives in is not there."""
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data directory missing: {DATA}")
    return DATA


@pytest.fixture(scope="session")
def encoded_grid(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncodedClip]:
    """grid_swiz3n encoded once at the default (medium) preset into a session tmp dir."""
    src = require(GRID_CLIP)
    fcv = tmp_path_factory.mktemp("encoded_grid") / "grid_swiz3n.fcv"
    result = encode_file(src, fcv, EncoderSettings())
    yield EncodedClip(src, fcv, result)


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., CliRun]:
    """Run `python -m facecodec.cli ARGS...` and capture exit code, stdout and stderr."""
    env = dict(os.environ)
    env.pop("FACECODEC_DEBUG", None)  # the debug switch turns internal errors into tracebacks

    def run(*args: str | Path, timeout: float = 300) -> CliRun:
        proc = subprocess.run(
            [sys.executable, "-m", "facecodec.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        return CliRun(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def run_on_terminal() -> Callable[..., CliRun]:
    """Run `python -m facecodec.cli ARGS...` with its stderr on a terminal (a pseudo-terminal
    100 columns wide, as a user's), where it draws progress bars: the terminal's output is
    the result's `stderr`, carriage returns and all."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    env = dict(os.environ)
    env.pop("FACECODEC_DEBUG", None)

    def run(*args: str | Path, timeout: float = 300) -> CliRun:
        main, tty = pty.openpty()
        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        seen = bytearray()

        def read() -> None:  # drained as it comes: a full terminal would stop the command
            while True:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the other end closed
                    return
                if not data:
                    return
                seen.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc = subprocess.run([sys.executable, "-m", "facecodec.cli", *map(str, args)],
                                  stdout=subprocess.PIPE, stderr=tty, env=env,
                                  timeout=timeout, check=False)
        finally:
            os.close(tty)
            reader.join(10)
            os.close(main)
        return CliRun(proc.returncode, proc.stdout.decode(), seen.decode(errors="replace"))

    return run


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Call `facecodec.cli.main(ARGS)` in this process; stdout and Python's stderr captured.
    Output that native libraries write to file descriptor 2 is not seen (nor silenced)."""

    def run(*args: str | Path) -> CliRun:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out = capsys.readouterr()
        return CliRun(code, out.out, out.err)

    return run


def self_signed(root: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for the address `name` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(name))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = root / f"{name}.crt", root / f"{name}.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


def break_video_packets(clip: Path, out: Path, first: int, count: int = 1) -> float:
    """`clip` (an mp4 of H.264) with `count` of its video packets in decoding order, from
    `first`, made undecodable (each one's first 4 bytes, its first NAL unit's length, set
    beyond the packet): the time of the first."""
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        packets = [p for p in c.demux(s) if p.size]
        start = s.start_time or 0
    data = bytearray(clip.read_bytes())
    for p in packets[first:first + count]:
        assert p.pos is not None
        data[p.pos:p.pos + 4] = b"\xff\xff\xff\xff"
    out.write_bytes(bytes(data))
    pts, tb = packets[first].pts, packets[first].time_base
    assert pts is not None and tb is not None
    return float((pts - start) * tb)
