"""Track objects through a video and watch per-frame results arrive.

    python examples/track_video.py --server http://localhost:8000 --key $KEY --video clip.mp4 --text person
    python examples/track_video.py ... --click 320,240 --frame 0

Built on the Python client (`pip install ./clients/python`): uploads the video (unless the server
already has it), opens a session, prompts on a frame, propagates, and prints each frame's objects
as they arrive over the session's websocket. The client acknowledges frames, reconnects after a
drop and resumes after a worker's loss; masks are numpy arrays on demand (`obj.mask.array`).
`sam3 track clip.mp4 --text person --out results.jsonl` does the same from the shell.
"""

from __future__ import annotations

import argparse

from sam3_client import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="default: $SAM3_SERVER_URL or http://localhost:8000")
    parser.add_argument("--key", help="API key (default: $SAM3_API_KEY)")
    parser.add_argument("--video", required=True)
    parser.add_argument("--text", help="a concept to track, e.g. person")
    parser.add_argument("--click", help="x,y of one object to track")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="leave the session open (its results stay readable)")
    args = parser.parse_args()
    if not args.text and not args.click:
        parser.error("give --text or --click")

    with Client(args.server, args.key) as client:
        session = client.sessions.create(args.video)
        print(f"session {session.id}: {session.info.frame_count} frames")
        if args.text:
            session.add_text(args.text, frame=args.frame)
        else:
            x, y = (float(v) for v in args.click.split(","))
            print(f"object {session.add_points([[x, y]], frame=args.frame).object_id}")
        try:
            for frame in session.propagate("forward", start_frame=args.frame):
                objects = ", ".join(f"#{o.id} {o.label or ''} {o.score:.2f} ({o.mask.area} px)" for o in frame.objects)
                print(f"frame {frame.frame:5d}: {objects or '-'}")
        finally:
            if args.keep:
                print(f"results stay available at {client.base_url}/api/v1/sessions/{session.id}/frames/")
            else:
                session.close()


if __name__ == "__main__":
    main()
