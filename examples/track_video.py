"""Track objects through a video and watch per-frame masks arrive over the websocket.

    python examples/track_video.py --server http://localhost:8000 --key $KEY --video clip.mp4 --text person
    python examples/track_video.py ... --click 320,240 --frame 0

Uploads the video, opens a session, prompts on a frame, propagates, and prints each frame's
objects as they arrive (a COCO RLE mask per object). Needs `requests` and `websockets`.
"""

from __future__ import annotations

import argparse
import json

import requests
from websockets.sync.client import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="http://localhost:8000")
    parser.add_argument("--key", required=True, help="API key (X-API-Key)")
    parser.add_argument("--video", required=True)
    parser.add_argument("--text", help="a concept to track, e.g. person")
    parser.add_argument("--click", help="x,y of one object to track")
    parser.add_argument("--frame", type=int, default=0)
    args = parser.parse_args()
    if not args.text and not args.click:
        parser.error("give --text or --click")

    api = requests.Session()
    api.headers["X-API-Key"] = args.key
    with open(args.video, "rb") as video:
        upload = api.post(f"{args.server}/api/v1/uploads/", files={"file": video}, timeout=600)
    upload.raise_for_status()
    session = api.post(f"{args.server}/api/v1/sessions/", json={"video": upload.json()["id"]}, timeout=600)
    session.raise_for_status()
    session_id = session.json()["id"]
    print(f"session {session_id}: {session.json()['frame_count']} frames")

    prompt = {"frame": args.frame}
    if args.text:
        prompt["text"] = args.text
    else:
        x, y = (float(v) for v in args.click.split(","))
        prompt["points"] = [[x, y]]

    websocket_url = args.server.replace("http", "ws", 1) + f"/ws/sessions/{session_id}/"
    with connect(websocket_url, additional_headers={"X-API-Key": args.key}) as socket:
        socket.send(json.dumps({"type": "prompt", **prompt}))
        socket.send(json.dumps({"type": "propagate", "direction": "forward", "start_frame": args.frame}))
        while True:
            message = json.loads(socket.recv())
            if message["type"] == "frame":
                socket.send(json.dumps({"type": "ack"}))  # keeps the masks coming inline (see docs/video-sessions.md)
                objects = ", ".join(f"#{o['id']} {o.get('label', '')} {o['score']:.2f}" for o in message["objects"])
                print(f"frame {message['frame']:5d}: {objects or '-'}")
            elif message["type"] in ("done", "cancelled"):
                print(f"{message['type']}: {message['frames_done']} frames")
                break
            elif message["type"] == "error":
                raise SystemExit(f"error: {message['code']}: {message['message']}")
            else:
                print(message)
    print(f"results stay available at {args.server}/api/v1/sessions/{session_id}/frames/")


if __name__ == "__main__":
    main()
