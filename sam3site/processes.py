"""How the supervisors (``serve``, ``run_workers``) tell their child processes what they are, and
how a child tells its supervisor to give up. Plain constants: any module may import them."""

SERVING_ENV = "SAM3_SERVING"  # set in serve's daphne children: only they start the in-process model, flushers...
WORKER_DEVICE_ENV = "SAM3_WORKER_DEVICE"  # set in run_workers' Celery children: the device their model runs on
WORKER_QUEUE_ENV = "SAM3_WORKER_QUEUE"  # ... and the queue they consume
EXIT_MODEL_REQUIRED = 78  # EX_CONFIG: VIDEO_MODEL_REQUIRED and the model did not load; supervisors give up
