"""Stream a video file to a live session as if it were a camera, and print each frame's objects.

    python examples/stream_video.py --server http://localhost:8000 --key $KEY --video clip.mp4 --text person
    python examples/stream_video.py ... --click 320,240          # an object clicked on the first frame
    python examples/stream_video.py ... --fps 30 --store          # faster than the model: frames get skipped

Uses the Python client (``pip install './clients/python[live]'``): ``client.live()`` opens a live
session (``POST /api/v1/sessions/ {"live": true}``), sends the video's frames as JPEG over
``/ws/sessions/<id>/live/`` (binary messages: a 4-byte big-endian header length, a JSON header
``{"seq": n, "ts": unix time}``, the JPEG) at the video's frame rate (or ``--fps``), acknowledges the
results and yields them. Frames the server dropped because newer
ones arrived while the model was busy (latest-wins) are counted in ``live.skipped``. At the end it
prints frames delivered, skipped, and the latency from sending a frame to receiving its objects.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import av
from sam3_client import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("SAM3_SERVER_URL", "http://localhost:8000"))
    parser.add_argument("--key", default=os.environ.get("SAM3_API_KEY"), help="API key (default: $SAM3_API_KEY)")
    parser.add_argument("--video", required=True)
    parser.add_argument("--text", help="a concept to track, e.g. person")
    parser.add_argument("--click", help="x,y of one object on the first frame")
    parser.add_argument("--fps", type=float, help="send rate (default: the video's)")
    parser.add_argument("--store", action="store_true", help="keep the results (GET .../frames/ afterwards; the session stays open)")
    args = parser.parse_args()

    with av.open(args.video) as container:
        fps = args.fps or float(container.streams.video[0].average_rate or 25)
    print(f"sending at {fps:.1f} frames/s")
    latencies: list[float] = []
    with Client(args.server, args.key) as client, client.live(args.video, text=args.text, fps=fps, store=args.store) as live:
        for result in live:
            if result.ts is not None:
                latencies.append(time.time() - result.ts)
            if result.seq == 0 and args.click:
                x, y = (float(v) for v in args.click.split(","))
                live.prompt(seq=0, points=[[x, y]])
            objects = ", ".join(f"#{o.id} {o.label or ''} {o.score:.2f}" for o in result.objects)
            print(f"seq {result.seq:5d} ({latencies[-1] * 1000 if latencies else 0:4.0f} ms): {objects or '-'}")
        for seq, error in live.errors.items():
            print(f"seq {seq}: {error}")
    if latencies:
        latencies.sort()
        print(f"sent {live.sent}, delivered {len(latencies)}, skipped {len(live.skipped)}; latency p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms")
    if args.store:
        print(f"results: {args.server}/api/v1/sessions/{live.session_id}/frames/ (close the session when done)")


if __name__ == "__main__":
    main()
