"""``sam3``: the server from a shell.

    sam3 segment photo.jpg --text dog --out overlay.png
    sam3 track clip.mp4 --text person --out results.jsonl
    sam3 live clip.mp4 --text person --fps 25
    sam3 uploads ls
    sam3 me
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from tqdm import tqdm

from sam3_client import __version__
from sam3_client.client import Client
from sam3_client.errors import APIConnectionError, APIError, AuthenticationError, PermissionDenied, Sam3Error
from sam3_client.models import Frame, SegmentResult, plan_legs

EXIT_API_ERROR, EXIT_USAGE, EXIT_CONNECTION, EXIT_AUTH, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PROMPT_KEYS = ("text", "boxes", "points", "point_labels", "box")  # what describes a prompt the server echoes

EPILOG = """\
environment: SAM3_SERVER_URL (default http://localhost:8000) and SAM3_API_KEY stand in for --server and --key.
exit codes: 0 done, 1 the server refused (its code and message are printed), 2 bad usage or input,
3 the server could not be reached, 4 the key was refused, 130 interrupted."""


class UsageError(Exception):
    pass


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _point(text: str) -> list[float]:
    return _numbers(text, 2, "a point (x,y)")


def _box(text: str) -> list[float]:
    return _numbers(text, 4, "a box (x1,y1,x2,y2)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam3", description="Talk to a SAM3 inference server.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sam3-client {__version__}")
    _connection_options(parser, defaults=True)
    # The same options after the command (`sam3 me --key ...`), without overriding ones given before it.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, within: Any = commands) -> argparse.ArgumentParser:
        return cast(argparse.ArgumentParser, within.add_parser(
            name, help=summary, parents=[common], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
        ))

    segment = command("segment", "segment an image")
    segment.add_argument("image", help="an image file, or the id of an uploaded image")
    segment.add_argument("--text", action="append", default=[], help="a concept, e.g. 'yellow bus' (repeatable)")
    segment.add_argument("--exemplar", type=_box, action="append", metavar="X1,Y1,X2,Y2", help="an example box of the concept")
    segment.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y", help="a click on the object")
    segment.add_argument("--negative", type=_point, action="append", default=[], metavar="X,Y", help="a click on the background")
    segment.add_argument("--box", type=_box, metavar="X1,Y1,X2,Y2", help="a box around one object")
    segment.add_argument("--threshold", type=float, help="minimum score (the server's default otherwise)")
    segment.add_argument("--out", type=Path, help="overlay.png|.jpg|.webp (masks drawn on the image) or masks.json (the answer)")

    track = command("track", "track objects through a video")
    track.add_argument("video", help="a video file, or the id of an uploaded video")
    track.add_argument("--text", action="append", default=[], help="a concept to track (repeatable)")
    track.add_argument("--click", type=_point, action="append", default=[], metavar="X,Y", help="a click on one object to track")
    track.add_argument("--frame", type=int, default=0, help="the frame the prompts are given on (default 0)")
    track.add_argument("--direction", choices=["forward", "backward", "both"], default="forward")
    track.add_argument("--max-frames", type=int, help="frames to propagate after the start frame (default: to the end)")
    track.add_argument("--out", type=Path, help="write one JSON line per frame (its objects, masks as COCO RLE)")
    track.add_argument("--keep", action="store_true", help="keep the session open (its id is printed)")
    track.add_argument("--no-progress", action="store_true", help="no progress bar")

    live = command("live", "stream a video file to a live session, as a camera would")
    live.add_argument("video", type=Path, help="a video file (its frames are sent as JPEG)")
    live.add_argument("--text", action="append", default=[], help="a concept to track (repeatable)")
    live.add_argument("--fps", type=float, help="send rate (default: each frame once the previous one is answered)")
    live.add_argument("--out", type=Path, help="write one JSON line per computed frame (seq, frame, objects, masks as COCO RLE)")

    uploads = command("uploads", "your uploads").add_subparsers(dest="action", required=True, metavar="ACTION")
    command("ls", "list your uploads", uploads).add_argument("--json", action="store_true", help="one JSON object per line")
    command("rm", "delete uploads", uploads).add_argument("ids", nargs="+", metavar="ID")
    adding = command("add", "upload files (skipped when the server already has them; their ids are printed)", uploads)
    adding.add_argument("files", nargs="+", type=Path, metavar="FILE")

    command("me", "who the key belongs to, its quota and usage").add_argument("--json", action="store_true")
    return parser


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--server", default=default(None), help="the server's URL (default: $SAM3_SERVER_URL or http://localhost:8000)")
    parser.add_argument("--key", default=default(None), help="API key (default: $SAM3_API_KEY)")
    parser.add_argument("--timeout", type=float, default=default(300.0), help="seconds per request (default 300)")
    parser.add_argument("--retries", type=int, default=default(3), help="retries of 429/503 answers (default 3)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with Client(args.server, args.key, timeout=args.timeout, max_retries=args.retries) as client:
            _run(client, args)
            return 0
    except (UsageError, FileNotFoundError, ValueError) as problem:
        _fail(f"{problem}", EXIT_USAGE)
    except (AuthenticationError, PermissionDenied) as refused:
        _fail(f"{refused} — check the key (--key or SAM3_API_KEY)", EXIT_AUTH)
    except APIError as error:
        _fail(str(error), EXIT_API_ERROR)
    except APIConnectionError as error:
        server = args.server or os.environ.get("SAM3_SERVER_URL") or "http://localhost:8000"
        _fail(f"cannot reach the server at {server}: {error}", EXIT_CONNECTION)
    except Sam3Error as error:
        _fail(str(error), EXIT_API_ERROR)
    except KeyboardInterrupt:
        print("sam3: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(message: str, code: int) -> NoReturn:
    print(f"sam3: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _run(client: Client, args: argparse.Namespace) -> None:
    handlers = {"segment": _segment, "track": _track, "live": _live, "me": _me, "uploads": _uploads}
    handlers[args.command](client, args)


def _segment(client: Client, args: argparse.Namespace) -> None:
    out: Path | None = args.out
    if out is not None and out.suffix.lower() not in (*IMAGE_SUFFIXES, ".json"):
        raise UsageError(f"--out must end in {', '.join(IMAGE_SUFFIXES)} or .json, got {out.name!r}")
    clicks = [*args.point, *args.negative]
    if not (args.text or args.exemplar or clicks or args.box):
        raise UsageError("give --text, --exemplar, --point/--negative or --box")
    if out is not None and out.suffix.lower() in IMAGE_SUFFIXES and not Path(args.image).is_file():
        raise UsageError("an overlay needs the image as a local file")
    result = client.segment(
        args.image, text=args.text or None, boxes=args.exemplar, points=clicks or None,
        point_labels=[1] * len(args.point) + [0] * len(args.negative) if clicks else None, box=args.box, threshold=args.threshold,
    )
    _print_segments(result)
    if out is not None:
        if out.suffix.lower() == ".json":
            out.write_text(json.dumps(result.raw))
        else:
            from sam3_client.overlay import draw_overlay

            draw_overlay(args.image, result).save(out)
        print(f"wrote {out}", file=sys.stderr)


def _print_segments(result: SegmentResult) -> None:
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    for number, prompt in enumerate(result.results, 1):
        described = ", ".join(f"{key} {json.dumps(prompt.prompt[key])}" for key in PROMPT_KEYS if prompt.prompt.get(key))
        print(f"prompt {number} ({described}): {len(prompt.instances)} instance(s)")
        for instance in prompt.instances:
            box = ", ".join(f"{v:.1f}" for v in instance.box)
            print(f"  score {instance.score:.3f}  box [{box}]  area {instance.mask.area} px")
    cached = "cached features" if result.cache_hit else "computed"
    print(f"{result.width}x{result.height}, {result.timings.total:.0f} ms ({cached}, {result.worker})", file=sys.stderr)


def _track(client: Client, args: argparse.Namespace) -> None:
    if not (args.text or args.click):
        raise UsageError("give --text or --click")
    session = client.sessions.create(args.video)
    print(f"session {session.id}: {session.info.frame_count} frames", file=sys.stderr)
    try:
        for text in args.text:
            session.add_text(text, frame=args.frame)
        for click in args.click:
            added = session.add_points([click], frame=args.frame)
            print(f"object {added.object_id} at {click[0]:g},{click[1]:g}", file=sys.stderr)
        legs = plan_legs(args.direction, args.frame, args.max_frames)
        total = sum(len(leg.frames(session.info.frame_count)) for leg in legs)
        out = args.out.open("w") if args.out else None
        try:
            with tqdm(total=total, unit="frame", disable=True if args.no_progress else None, file=sys.stderr) as bar:
                for frame in session.propagate(args.direction, start_frame=args.frame, max_frames=args.max_frames):
                    if out is not None:
                        out.write(json.dumps({"frame": frame.frame, "objects": frame.raw.get("objects", [])}) + "\n")
                    else:
                        tqdm.write(_describe(frame))
                    bar.update(1)
        finally:
            if out is not None:
                out.close()
        if out is not None:
            print(f"wrote {args.out}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"session {session.id} kept open", file=sys.stderr)
        else:
            session.close()


def _live(client: Client, args: argparse.Namespace) -> None:
    texts: list[str] = args.text
    out = args.out.open("w") if args.out else None
    try:
        with client.live(args.video, text=texts[0] if texts else None, fps=args.fps) as live:
            for text in texts[1:]:
                live.prompt(text)
            for result in live:
                if out is not None:
                    out.write(json.dumps({"seq": result.seq, "frame": result.frame, "objects": result.raw["objects"]}) + "\n")
                else:
                    objects = ", ".join(f"#{o.id}{' ' + o.label if o.label else ''} {o.score:.2f}" for o in result.objects)
                    print(f"seq {result.seq:5d} (frame {result.frame}): {objects or '-'}")
    finally:
        if out is not None:
            out.close()
    for seq, error in live.errors.items():
        print(f"seq {seq}: {error}", file=sys.stderr)
    print(f"sent {live.sent}, computed {live.sent - len(live.skipped) - len(live.errors)}, skipped {len(live.skipped)}", file=sys.stderr)


def _describe(frame: Frame) -> str:
    objects = ", ".join(f"#{o.id}{' ' + o.label if o.label else ''} {o.score:.2f}" for o in frame.objects)
    return f"frame {frame.frame:5d}: {objects or '-'}"


def _me(client: Client, args: argparse.Namespace) -> None:
    me = client.me()
    if args.json:
        print(json.dumps({
            "username": me.username, "api_key": me.api_key, "is_staff": me.is_staff, "requests_today": me.requests_today,
            "quota": me.quota.__dict__,
        }))
        return
    quota = me.quota
    daily = "unlimited" if quota.daily_requests is None else str(quota.daily_requests)
    print(f"{me.username}{' (staff)' if me.is_staff else ''}, key {me.api_key or '-'}")
    print(f"requests today: {me.requests_today} of {daily}; {quota.requests_per_minute}/minute")
    print(f"sessions at once: {quota.max_concurrent_sessions}; uploads up to {quota.max_upload_bytes // (1024 * 1024)} MiB")


def _uploads(client: Client, args: argparse.Namespace) -> None:
    if args.action == "ls":
        for upload in client.uploads.list():
            if args.json:
                print(json.dumps({**upload.__dict__, "created_at": upload.created_at.isoformat()}))
            else:
                frames = f" {upload.frame_count} frames" if upload.frame_count else ""
                print(f"{upload.id}  {upload.kind:5}  {upload.width}x{upload.height}{frames}  {_size(upload.size_bytes)}  "
                      f"{upload.created_at:%Y-%m-%d %H:%M}  {upload.original_name}")
    elif args.action == "rm":
        for upload_id in args.ids:
            client.uploads.delete(upload_id)
            print(f"deleted {upload_id}", file=sys.stderr)
    else:
        for path in args.files:
            upload = client.uploads.create(path)
            print(upload.id)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def entry_point() -> NoReturn:
    sys.exit(main())
