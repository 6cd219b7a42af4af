"""Stream a video file to a live session as if it were a camera, and print each frame's objects.

    python examples/stream_video.py --server http://localhost:8000 --key $KEY --video clip.mp4 --text person
    python examples/stream_video.py ... --click 320,240          # an object clicked on the first frame
    python examples/stream_video.py ... --fps 30 --store          # faster than the model: frames get skipped

Opens a live session (``POST /api/v1/sessions/ {"live": true}``), connects to
``/ws/sessions/<id>/live/`` and sends the video's frames as JPEG at the video's frame rate (or
``--fps``), each as one binary message: a 4-byte big-endian header length, a JSON header
``{"seq": n, "ts": unix time}`` and the JPEG. A second thread reads the answers: ``frame`` events
(acknowledged, so masks keep coming), ``skipped`` (frames the server dropped because newer ones
arrived while the model was busy: latest-wins) and ``error``. At the end it prints frames delivered,
skipped, and the latency from sending a frame to receiving its objects. Needs ``requests``,
``websockets`` and ``opencv-python``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import threading
import time

import cv2
import requests
from websockets.sync.client import connect


def frame_message(seq: int, jpeg: bytes) -> bytes:
    header = json.dumps({"seq": seq, "ts": time.time()}).encode()
    return struct.pack(">I", len(header)) + header + jpeg


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
    headers = {"X-API-Key": args.key} if args.key else {}

    created = requests.post(f"{args.server}/api/v1/sessions/", json={"live": True, "store": args.store}, headers=headers, timeout=60)
    created.raise_for_status()
    session_id = created.json()["id"]
    capture = cv2.VideoCapture(args.video)
    fps = args.fps or capture.get(cv2.CAP_PROP_FPS) or 25.0
    print(f"live session {session_id}, sending at {fps:.1f} frames/s")

    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    skipped: list[int] = []
    first_frame = threading.Event()
    url = f"{args.server.replace('http', 'ws', 1)}/ws/sessions/{session_id}/live/"
    with connect(url, additional_headers=headers, max_size=None) as socket:

        def read() -> None:
            for raw in socket:
                message = json.loads(raw)
                if message["type"] == "frame":
                    latencies.append(time.monotonic() - sent_at[message["seq"]])
                    socket.send(json.dumps({"type": "ack"}))
                    objects = ", ".join(f"#{o['id']} {o.get('label', '')} {o['score']:.2f}" for o in message["objects"])
                    print(f"seq {message['seq']:5d} ({latencies[-1] * 1000:4.0f} ms): {objects or '-'}")
                    first_frame.set()
                elif message["type"] == "skipped":
                    skipped.extend(message["seqs"])
                elif message["type"] in ("error", "prompt_result"):
                    print(message)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if args.text:
            socket.send(json.dumps({"type": "prompt", "text": args.text}))
        seq, started = 0, time.monotonic()
        while True:
            ok, image = capture.read()
            if not ok:
                break
            time.sleep(max(0.0, started + seq / fps - time.monotonic()))  # a camera's pace
            sent_at[seq] = time.monotonic()
            socket.send(frame_message(seq, cv2.imencode(".jpg", image)[1].tobytes()))
            if seq == 0 and args.click:
                first_frame.wait(60)
                x, y = (float(v) for v in args.click.split(","))
                socket.send(json.dumps({"type": "prompt", "seq": 0, "points": [[x, y]], "point_labels": [1]}))
            seq += 1
        time.sleep(2)  # the last frame's answer
    if latencies:
        latencies.sort()
        print(f"sent {seq}, delivered {len(latencies)}, skipped {len(skipped)}; latency p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms")
    if args.store:
        print(f"results: {args.server}/api/v1/sessions/{session_id}/frames/")
    else:
        requests.delete(f"{args.server}/api/v1/sessions/{session_id}/", headers=headers, timeout=60)


if __name__ == "__main__":
    main()
