"""Python client for the SAM3 inference server: images, uploads and video sessions, blocking or asyncio.

    from sam3_client import Client

    client = Client("http://localhost:8000", api_key="...")   # or SAM3_SERVER_URL / SAM3_API_KEY
    result = client.segment("photo.jpg", text="dog")
    print([(i.score, i.box) for i in result.instances], result.masks.shape)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sam3-client")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

from sam3_client._core import AsyncStream, SyncStream
from sam3_client.client import AsyncClient, AsyncSessions, AsyncUploads, Client, Sessions, Uploads
from sam3_client.config import RetryPolicy
from sam3_client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequest,
    Conflict,
    DeadlineExceeded,
    Gone,
    InvalidFile,
    InvalidPrompt,
    ModelUnavailable,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    PropagationFailed,
    PropagationStalled,
    QuotaExceeded,
    RateLimited,
    Sam3Error,
    ServerError,
    ServiceUnavailable,
    SessionBusy,
    SessionEnded,
    SessionRecovering,
    UnsupportedMedia,
)
from sam3_client.live import AsyncLive, Live
from sam3_client.masks import Mask
from sam3_client.models import (
    Frame,
    Instance,
    LiveFrame,
    Me,
    PromptResult,
    Propagation,
    SegmentResult,
    SessionInfo,
    Timings,
    TrackedObject,
    Upload,
)
from sam3_client.overlay import draw_overlay
from sam3_client.sessions import AsyncSession, Session

__all__ = [
    "APIConnectionError", "APIError", "APITimeoutError", "AsyncClient", "AsyncLive", "AsyncSession", "AsyncSessions", "AsyncStream",
    "AsyncUploads", "AuthenticationError", "BadRequest", "Client", "Conflict", "DeadlineExceeded", "Frame", "Gone",
    "Instance", "InvalidFile", "InvalidPrompt", "Live", "LiveFrame", "Mask", "Me", "ModelUnavailable", "NotFound", "Overloaded",
    "PayloadTooLarge", "PermissionDenied", "PromptResult", "Propagation", "PropagationFailed", "PropagationStalled",
    "QuotaExceeded", "RateLimited", "RetryPolicy", "Sam3Error", "SegmentResult", "ServerError", "ServiceUnavailable",
    "Session", "SessionBusy", "SessionEnded", "SessionInfo", "SessionRecovering", "Sessions", "SyncStream", "Timings",
    "TrackedObject", "UnsupportedMedia", "Upload", "Uploads", "__version__", "draw_overlay",
]
