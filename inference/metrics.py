"""Prometheus metrics of inference. In served processes they land in the supervisor's multiprocess
directory (serve: METRICS_PORT; run_workers: WORKER_METRICS_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("sam3_inference_requests_total", "Inference requests by endpoint and outcome", ["endpoint", "outcome"])
QUEUE_SECONDS = Histogram("sam3_inference_queue_seconds", "Time a job waited before its compute began", buckets=_LATENCY_BUCKETS)
COMPUTE_SECONDS = Histogram("sam3_inference_compute_seconds", "Model time per job (backbone share + prompts)", buckets=_LATENCY_BUCKETS)
POSTPROCESS_SECONDS = Histogram("sam3_inference_postprocess_seconds", "Mask encoding time per job", buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("sam3_inference_batch_size", "Images per backbone forward pass", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
CACHE_LOOKUPS = Counter("sam3_feature_cache_lookups_total", "Image feature cache lookups", ["result"])
EXPIRED_JOBS = Counter("sam3_inference_expired_total", "Jobs dropped because their deadline passed before compute")
WORKERS_UP = Gauge("sam3_model_workers_up", "Model workers with a ready model", multiprocess_mode="livesum")
