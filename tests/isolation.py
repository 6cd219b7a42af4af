"""Loaded with ``-p tests.isolation`` before Django reads its settings: gives this test run its own
Redis key prefix (cache, worker registry, admission, channel layer, Celery), inherited by every
server and worker process the tests start, so runs sharing a Redis database never meet."""

import os
import uuid

os.environ.setdefault("REDIS_KEY_PREFIX", f"sam3test-{uuid.uuid4().hex[:10]}")
