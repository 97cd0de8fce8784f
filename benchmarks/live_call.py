"""A loopback live call from a clip: one process per peer, so CPU use is measured per peer.

    python benchmarks/live_call.py --source ../shared/data/clips/liveportrait_d19.mp4 \
        --seconds 10 --json out/live_call.json [--loss 0.05] [--jitter-ms 20]

The sender paces the clip in real time (looping it if shorter than --seconds); the receiver
decodes and renders without a viewer. Latency is capture (the frame's slot on the sender's
clock) to rendered frame, both peers on one machine and one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from facecodec.errors import FacecodecError
from facecodec.stream.call import CallOptions, run_call
from facecodec.stream.impair import Impairment
from facecodec.stream.signaling import SignalingServer


def _peer(
    role: str, url: str, source: str | None, seconds: float, loss: float, jitter_ms: float
) -> dict[str, Any]:
    """One side of the call, run in its own process."""
    impairment = Impairment(loss=loss, jitter_ms=jitter_ms, seed=0) if loss or jitter_ms else None
    options = CallOptions(
        seconds=seconds + (5.0 if role == "receiver" else 0.0),  # outlive the sender
        loop_source=True,
        loopback=True,
        impairment=impairment if role == "receiver" else None,
        wait_peer_s=30.0,
    )
    stats = asyncio.run(run_call("bench", url, source, "none", options))
    summary = stats.summary()
    summary["role"] = role
    return summary


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    server = SignalingServer()
    url = await server.start()
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            receiver = loop.run_in_executor(
                pool, _peer, "receiver", url, None, args.seconds, args.loss, args.jitter_ms
            )
            sender = loop.run_in_executor(
                pool, _peer, "sender", url, args.source, args.seconds, 0.0, 0.0
            )
            sent, received = await asyncio.gather(sender, receiver)
    finally:
        await server.stop()
    return {
        "source": str(args.source),
        "seconds": args.seconds,
        "loss": args.loss,
        "jitter_ms": args.jitter_ms,
        "frames_sent": sent["frames_sent"],
        "frames_skipped": sent["frames_skipped"],
        "frames_rendered": received["frames_rendered"],
        "frames_concealed": received["frames_concealed"],
        "keyframe_requests": received["keyframe_requests_sent"],
        "fps": received["fps"],
        "motion_kbps": sent["motion_kbps"],
        "keyframe_kbps": sent["keyframe_kbps"],
        "audio_kbps": sent["audio_kbps"],
        "latency_p50_ms": received["latency_p50_ms"],
        "latency_p95_ms": received["latency_p95_ms"],
        "cpu_percent": {"sender": sent["cpu_percent"], "receiver": received["cpu_percent"]},
        "peers": {"sender": sent, "receiver": received},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="video clip to send")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--loss", type=float, default=0.0, help="motion packet loss probability")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"error: {args.source}: no such file", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_bench(args))
    except FacecodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.json.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.json.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.json)
    print(json.dumps({k: v for k, v in result.items() if k != "peers"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
