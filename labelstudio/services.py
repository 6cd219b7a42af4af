"""Label Studio's /predict, answered with SAM3: what the annotator's clicks, boxes and text ask for,
or with no context every label of the config as a concept; results as Label Studio regions.

Image tasks run as image jobs (the REST API's path: same validation, dispatch, feature cache).
Video tasks run as a server-side video session that is opened, prompted, propagated and closed
within the request.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User

from inference import dispatch
from labelstudio import media, regions
from labelstudio.label_config import MASK_CONTROLS, Control, LabelingInterface, UnsupportedLabelConfig, parse_label_config
from sam3site.api import validated
from sam3site.errors import ApiError, DeadlineExceeded, InvalidInput
from segmentation.serializers import MAX_PROMPTS, PromptSerializer
from segmentation.services import ResolvedImage, image_job_build
from sessions import commands, selectors, services
from sessions.models import VideoSession
from sessions.serializers import VideoPromptSerializer
from uploads.models import Upload

MODEL_VERSION = "sam3"
PROPAGATION_POLL_SECONDS = 0.2
VIDEO_DEADLINE_SECONDS = 90  # Label Studio gives /predict 100 s


@dataclass
class Prompts:
    """What a Label Studio context asks for, in pixels of the task's media."""

    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    frame: int = 0  # video: the frame (from 0) the rectangle was drawn on
    text: str | None = None
    label: str | None = None  # the label the annotator chose with the smart tool

    @property
    def interactive(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass(frozen=True)
class Timing:
    cache_hit: bool | None = None  # image: the image's features came from the model's feature cache
    compute_ms: float | None = None


def _clamp(value: float, limit: int) -> float:
    return min(max(value, 0.0), float(limit))


def prompts_from_context(context: dict[str, Any] | None, width: int, height: int) -> Prompts:
    """The smart tools' regions (percent coordinates, Label Studio's interactive context) in pixels."""
    prompts = Prompts()
    results = context.get("result") if isinstance(context, dict) else None
    if not isinstance(results, list):
        return prompts
    for item in results:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise InvalidInput("Every context result is an object with a `value`.", code="invalid_context")
        value, kind = item["value"], item.get("type")
        try:
            if kind == "keypointlabels":
                prompts.points.append([_clamp(value["x"] * width / 100, width), _clamp(value["y"] * height / 100, height)])
                prompts.point_labels.append(0 if item.get("is_positive") is False else 1)
                prompts.label = prompts.label or next(iter(value.get("keypointlabels") or []), None)
            elif kind in ("rectanglelabels", "videorectangle"):
                shape = value if kind == "rectanglelabels" else next(k for k in value["sequence"] if k.get("enabled", True))
                x, y = shape["x"] * width / 100, shape["y"] * height / 100
                x2, y2 = x + shape["width"] * width / 100, y + shape["height"] * height / 100
                prompts.box = [_clamp(x, width), _clamp(y, height), _clamp(x2, width), _clamp(y2, height)]
                prompts.frame = max(int(shape.get("frame", 1)) - 1, 0)
                labels = value.get("rectanglelabels") or value.get("labels") or []
                prompts.label = prompts.label or next(iter(labels), None)
            elif kind == "textarea":
                prompts.text = " ".join(str(text) for text in value.get("text") or []).strip() or None
        except (KeyError, TypeError, ValueError, StopIteration):
            raise InvalidInput(f"A `{kind}` context result lacks its coordinates.", code="invalid_context") from None
    return prompts


def _asks_nothing(context: Any) -> bool:
    """No smart-tool regions: a batch ("Retrieve predictions", auto-annotation), answered by concept."""
    return not (isinstance(context, dict) and context.get("result"))


def _answer_controls(interface: LabelingInterface) -> list[Control]:
    """The controls predictions are written to: mask controls when the config has any (its
    rectangles and keypoints are then the prompt tools), otherwise its rectangles."""
    return interface.controls_of(*MASK_CONTROLS) or interface.controls_of("RectangleLabels")


def _label_for(control: Control, chosen: str | None, text: str | None = None) -> str:
    values = [label.value for label in control.labels]
    for wanted in (chosen, text):
        if wanted is not None:
            match = next((value for value in values if value.lower() == wanted.lower()), None)
            if match is not None:
                return match
    if values:
        return values[0]
    raise UnsupportedLabelConfig(f"<{control.tag} name=\"{control.name}\"> has no <Label>: add the labels to predict.")


async def _run_image(request_id: str, upload: Upload, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    image = ResolvedImage(upload.path, upload.sha256, upload.width, upload.height)
    data = {
        "prompts": [validated(PromptSerializer, prompt) for prompt in prompts], "mask_format": "rle", "mask_threshold": 0.5,
        "threshold": settings.CONFIG.image_model_confidence_threshold,
    }
    reply = await dispatch.run_image_job(image_job_build(request_id=request_id, image=image, data=data))
    result: dict[str, Any] = orjson.loads(reply.with_total(0))
    return result


def _timing(result: dict[str, Any] | None) -> Timing:
    return Timing() if result is None else Timing(result.get("cache_hit"), result.get("timings_ms", {}).get("compute"))


async def predict_image(request_id: str, upload: Upload, interface: LabelingInterface, context: Any) -> tuple[list[dict[str, Any]], Timing]:
    if upload.kind != Upload.Kind.IMAGE:
        raise InvalidInput("The task's media is a video but the labeling config has an <Image>.", code="task_media_mismatch")
    controls = _answer_controls(interface)
    asked = prompts_from_context(context, upload.width, upload.height)
    out: list[dict[str, Any]] = []
    if asked.interactive:  # one object from the clicks and/or the box
        prompt: dict[str, Any] = {"points": asked.points, "point_labels": asked.point_labels} if asked.points else {}
        if asked.box is not None:
            prompt["box"] = asked.box
        answer = await _run_image(request_id, upload, [prompt])
        for instance in answer["results"][0]["instances"][:1]:
            mask = regions.decode_coco_rle(instance["mask"])
            for control in controls:
                out += regions.mask_regions(control, _label_for(control, asked.label), mask, instance["box"], instance["score"])
        return out, _timing(answer)
    if asked.text:  # the annotator's free-text concept
        wanted = [(control, _label_for(control, asked.label, asked.text), asked.text) for control in controls]
    elif _asks_nothing(context):  # pre-annotation: every label
        wanted = [(control, label.value, phrase) for control in controls for label in control.labels for phrase in label.phrases]
    else:  # a context with nothing we prompt with (e.g. only brush strokes)
        return [], _timing(None)
    phrases = list(dict.fromkeys(phrase for _, _, phrase in wanted))
    found: dict[str, list[dict[str, Any]]] = {}
    result: dict[str, Any] | None = None
    for start in range(0, len(phrases), MAX_PROMPTS):
        chunk = phrases[start : start + MAX_PROMPTS]
        result = await _run_image(request_id, upload, [{"text": phrase} for phrase in chunk])
        found.update({phrase: answer["instances"] for phrase, answer in zip(chunk, result["results"], strict=True)})
    masks = {phrase: [regions.decode_coco_rle(instance["mask"]) for instance in instances] for phrase, instances in found.items()}
    for control, label, phrase in wanted:  # a phrase answered for several controls or labels is decoded once
        for instance, mask in zip(found[phrase], masks[phrase], strict=True):
            out += regions.mask_regions(control, label, mask, instance["box"], instance["score"])
    return out, _timing(result)


async def _propagated(session: VideoSession, deadline: float) -> VideoSession:
    """The session once its propagation has ended (polled: the record is what every worker updates)."""
    while True:
        await sync_to_async(session.refresh_from_db)()
        state = (session.propagation or {}).get("state")
        if session.status != VideoSession.Status.PROPAGATING and state != "running":
            if state != "done":
                raise InvalidInput(f"Tracking through the video ended {state}: {session.error or 'no detail'}.", code="tracking_failed")
            return session
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"Tracking through the video took more than {VIDEO_DEADLINE_SECONDS} s.")
        await asyncio.sleep(PROPAGATION_POLL_SECONDS)


def _tracks(session: VideoSession) -> dict[int, dict[str, Any]]:
    """Object id -> {boxes: frame -> box or None, scores, label}, over every stored frame."""
    tracks: dict[int, dict[str, Any]] = {}
    frames = [services.frame_result_read(row) for row in selectors.frame_results(session=session)]
    for payload in frames:
        for obj in payload["objects"]:
            if obj["id"] is not None:
                tracks.setdefault(obj["id"], {"boxes": {}, "scores": [], "label": obj.get("label")})
    for payload in frames:
        seen = {obj["id"]: obj for obj in payload["objects"]}
        for object_id, track in tracks.items():
            obj = seen.get(object_id)
            box = obj["box"] if obj is not None else None
            present = box is not None and box[2] > box[0] and box[3] > box[1]
            track["boxes"][payload["frame"]] = box if present else None
            if present:
                track["scores"].append(obj["score"])  # type: ignore[index]  # present implies obj
    return tracks


async def predict_video(owner: User, upload: Upload, interface: LabelingInterface, context: Any) -> tuple[list[dict[str, Any]], Timing]:
    """A rectangle drawn on one frame (or, with no context, every label as a concept from frame 1)
    tracked through the video by a session of its own, answered as keyframe sequences."""
    if upload.kind != Upload.Kind.VIDEO:
        raise InvalidInput("The task's media is an image but the labeling config has a <Video>.", code="task_media_mismatch")
    control = interface.controls_of("VideoRectangle")[0]
    labels = [label for labels in interface.controls_of("Labels") for label in labels.labels]
    asked = prompts_from_context(context, upload.width, upload.height)
    prompts: list[tuple[dict[str, Any], str | None]]
    if asked.box is not None:
        prompts = [({"frame": asked.frame, "box": asked.box}, asked.label)]
    elif _asks_nothing(context):
        prompts = [({"frame": 0, "text": phrase}, label.value) for label in labels for phrase in label.phrases]
    else:
        return [], Timing()
    if not prompts:
        raise UnsupportedLabelConfig("Tracking needs a rectangle on a frame, or <Labels> whose values are tracked as concepts.")
    deadline = time.monotonic() + VIDEO_DEADLINE_SECONDS
    started = time.perf_counter()
    session = await commands.session_open(owner=owner, video_id=upload.pk)
    try:
        label_of_object: dict[int, str | None] = {}
        label_of_text: dict[str, str] = {}
        for prompt, label in prompts:
            answer = await commands.session_prompt(session=session, prompt=validated(VideoPromptSerializer, prompt))
            if "object_id" in answer:
                label_of_object[answer["object_id"]] = label
            if "text" in prompt and label is not None:
                label_of_text[prompt["text"]] = label
        start = min(prompt["frame"] for prompt, _ in prompts)
        await sync_to_async(session.refresh_from_db)()
        await commands.session_propagate(
            session=session, direction="both" if start > 0 else "forward", start_frame=start, max_frames=None, resume=False,
        )
        session = await _propagated(session, deadline)
        tracks = await sync_to_async(_tracks)(session)
    finally:
        with suppress(ApiError):  # the worker's sweeper frees what the close could not reach
            await commands.session_close(session=session)
    out = []
    for object_id, track in sorted(tracks.items()):
        if not track["scores"]:
            continue
        label = label_of_object.get(object_id) or label_of_text.get(track["label"] or "")
        out.append(regions.video_rectangle(
            control, label, track["boxes"], width=upload.width, height=upload.height, frame_count=session.frame_count,
            fps=upload.fps or 0.0, score=max(track["scores"]),
        ))
    return out, Timing(compute_ms=round((time.perf_counter() - started) * 1000, 2))


async def predict(
    *, owner: User, request_id: str, tasks: list[dict[str, Any]], label_config: str, context: Any,
) -> list[dict[str, Any]]:
    """One prediction per task, in order: {result, score, model_version}."""
    interface = parse_label_config(label_config)
    predictions = []
    for task in tasks:
        data = task.get("data") if isinstance(task, dict) else None
        upload, media_cached = await media.task_media(owner=owner, url=(data or {}).get(interface.media.value_key))
        if interface.media.tag == "Image":
            result, timing = await predict_image(request_id, upload, interface, context)
        else:
            result, timing = await predict_video(owner, upload, interface, context)
        scores = [region["score"] for region in result if "score" in region]
        predictions.append({
            "result": result, "score": round(sum(scores) / len(scores), 4) if scores else 0.0, "model_version": MODEL_VERSION,
            "info": {"media_cached": media_cached, "cache_hit": timing.cache_hit, "compute_ms": timing.compute_ms},
        })
    return predictions
