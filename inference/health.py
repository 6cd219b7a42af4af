"""Readiness of the model workers as web processes see them: their heartbeats in Redis."""

from __future__ import annotations

import redis
from django.conf import settings

from inference import registry
from sam3site import redis_clients


def check_workers() -> tuple[bool, dict]:
    if not (settings.CONFIG.image_model_enabled or settings.CONFIG.video_model_enabled):
        return True, {"state": "disabled"}
    try:
        workers = registry.read_workers(redis_clients.client(timeout=1))
    except redis.RedisError as error:
        return False, {"error": f"cannot read model workers: {error}"}
    alive = [w for w in workers if w.alive]
    listed = [
        {"name": w.name, "device": w.device, "state": w.state, "reason": w.reason, "pending": w.pending,
         "heartbeat_age_s": round(w.age, 1), "tiny_random": w.model.get("tiny_random", False)}
        for w in alive
    ]
    ready = any(w.ready for w in alive)
    info: dict = {"workers": listed, "ready_workers": sum(w.ready for w in alive)}
    if not ready:
        states = "; ".join(f"{w.name}: {w.state} {w.reason or ''}".strip() for w in alive)
        info["reason"] = states if alive else "no model worker is running"
    return ready, info
