"""The sans-I/O core shared by :class:`~sam3_client.Client` and :class:`~sam3_client.AsyncClient`.

Every API method is written once, as a generator (an *operation*) that yields effects — send this
HTTP request, sleep, open a websocket, receive a message, hand a value to the caller — and gets
their outcomes back. Retries, error mapping, paging and the websocket protocol live in operations;
a *driver* only performs effects, blocking (:class:`SyncDriver`: httpx.Client, websockets' sync
client) or on an event loop (:class:`AsyncDriver`: httpx.AsyncClient, websockets' asyncio client).
The :class:`operation` and :class:`stream` decorators turn one definition into a blocking method on
sync objects and a coroutine method (or async iterator) on async ones, with the same signature.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Generator, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

import httpx
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from sam3_client.config import ClientConfig, RetryPolicy, parse_retry_after
from sam3_client.errors import APIConnectionError, APIError, APITimeoutError, Sam3Error, api_error

T = TypeVar("T")
P = ParamSpec("P")

WEBSOCKET_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a frame with many objects' masks can exceed websockets' 1 MiB default


# --- effects: what an operation asks a driver to do ---


@dataclass(frozen=True)
class FilePart:
    """A file of a multipart body: bytes, or a path opened (again) for each attempt."""

    name: str
    content: bytes | Path
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # relative to /api/v1/
    params: Mapping[str, str | int | float] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, FilePart] | None = None

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD", "DELETE")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None


@dataclass(frozen=True)
class TransportFailure:
    message: str
    timeout: bool
    connected: bool  # the request may have reached the server


@dataclass(frozen=True)
class Send:
    """Send an HTTP request; the outcome is a :class:`Reply` or a :class:`TransportFailure`."""

    call: Call


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Blocking:
    """CPU or disk work (hashing a video, encoding an image): run off the event loop by the async driver."""

    function: Callable[[], Any]


@dataclass(frozen=True)
class Socket:
    """An open websocket: the driver's connection, entered as websockets wants (``with connect(...)``) on ``exits``."""

    connection: Any
    exits: ExitStack | AsyncExitStack


@dataclass(frozen=True)
class Connect:
    """Open a websocket at ``path`` (from the server root); outcome: :class:`Socket` or :class:`ConnectFailed`."""

    path: str


@dataclass(frozen=True)
class ConnectFailed:
    status: int | None  # the HTTP status of a refused handshake; None when the server was not reached
    message: str


@dataclass(frozen=True)
class Receive:
    """The next text message; outcome: ``str``, :class:`ReceiveTimeout` or :class:`SocketClosed`."""

    socket: Socket
    timeout: float


@dataclass(frozen=True)
class ReceiveTimeout:
    pass


@dataclass(frozen=True)
class SocketClosed:
    code: int
    reason: str


@dataclass(frozen=True)
class SendText:
    """Send a message: text, or bytes as a binary message."""

    socket: Socket
    text: str | bytes


@dataclass(frozen=True)
class CloseSocket:
    socket: Socket


@dataclass(frozen=True)
class Emit(Generic[T]):
    """Hand a value to the caller of a stream; the stream resumes when the caller asks for the next."""

    value: T


Effect = Send | Sleep | Blocking | Connect | Receive | SendText | CloseSocket
Op = Generator[Effect, Any, T]
Stream = Generator[Effect | Emit[T], Any, None]


class StreamClosed(Exception):
    """Thrown into a stream's operation when its caller stops early, so it can tidy up (e.g. cancel)."""


# --- requests: retries and error mapping, shared by every operation ---


def request(policy: RetryPolicy, call: Call, *, accept: Collection[int] = ()) -> Op[Reply]:
    """Send ``call``, retrying as ``policy`` says; an error answer (unless in ``accept``) raises its typed error."""
    attempt = 0
    while True:
        outcome = yield Send(call)
        if isinstance(outcome, TransportFailure):
            delay = policy.delay_for_failure(attempt, connected=outcome.connected, idempotent=call.idempotent)
            if delay is None:
                raise (APITimeoutError if outcome.timeout else APIConnectionError)(outcome.message)
        else:
            reply = cast(Reply, outcome)
            if reply.status < 400 or reply.status in accept:
                return reply
            retry_after = parse_retry_after(reply.headers.get("retry-after"))
            delay = policy.delay_for_status(attempt, reply.status, retry_after)
            if delay is None:
                raise error_from_reply(reply, retry_after)
        yield Sleep(delay)
        attempt += 1


def error_from_reply(reply: Reply, retry_after: float | None = None) -> APIError:
    try:
        body = reply.json()
        error = body["error"]
        return api_error(
            reply.status, str(error["code"]), str(error["message"]), detail=error.get("detail"),
            request_id=error.get("request_id") or reply.headers.get("x-request-id"), retry_after=retry_after,
        )
    except (ValueError, KeyError, TypeError):  # not our error body: a proxy's page, say
        snippet = reply.content[:200].decode(errors="replace").strip()
        return api_error(reply.status, f"http_{reply.status}", snippet or f"HTTP {reply.status}", retry_after=retry_after)


# --- the two kinds of objects operations run on ---


class Bound:
    """An object whose operations run through a driver (a client, its namespaces, a session)."""

    _config: ClientConfig

    def _call(self, call: Call, *, accept: Collection[int] = ()) -> Op[Reply]:
        return request(self._config.retry, call, accept=accept)

    def _json(self, method: str, path: str, **options: Any) -> Op[Any]:
        reply = yield from request(self._config.retry, Call(method, path, **options))
        return reply.json()

    def _pages(self, path: str, parse: Callable[[Any], T], *, page_size: int, **params: str | int) -> Stream[T]:
        """Every item of a paginated list, page by page (limit/offset)."""
        offset = 0
        while True:
            page = yield from self._json("GET", path, params={**params, "limit": page_size, "offset": offset})
            for item in page["results"]:
                yield Emit(parse(item))
            if not page["next"] or not page["results"]:
                return
            offset += len(page["results"])


class SyncBound(Bound):
    _driver: SyncDriver


class AsyncBound(Bound):
    _driver: AsyncDriver


class operation(Generic[P, T]):  # noqa: N801 - used as a decorator
    """A method written once as an operation: blocking on sync objects, a coroutine on async ones."""

    def __init__(self, function: Callable[Concatenate[Any, P], Op[T]]) -> None:
        self._function = function

    @overload
    def __get__(self, instance: SyncBound, owner: type | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(self, instance: AsyncBound, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Callable[Concatenate[Any, P], Op[T]]: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        function = self._function
        if isinstance(instance, SyncBound):
            driver = instance._driver

            def call(*args: P.args, **kwargs: P.kwargs) -> T:
                return driver.run(function(instance, *args, **kwargs))

        elif isinstance(instance, AsyncBound):
            async_driver = instance._driver

            async def call(*args: P.args, **kwargs: P.kwargs) -> T:  # type: ignore[misc]  # the async twin
                return await async_driver.run(function(instance, *args, **kwargs))

        else:
            return function  # on the class: the definition, for help() and the docs
        return _described(call, function)


class stream(Generic[P, T]):  # noqa: N801 - used as a decorator
    """A method written once as a stream: an iterator on sync objects, an async iterator on async ones."""

    def __init__(self, function: Callable[Concatenate[Any, P], Stream[T]]) -> None:
        self._function = function

    @overload
    def __get__(self, instance: SyncBound, owner: type | None = None) -> Callable[P, SyncStream[T]]: ...
    @overload
    def __get__(self, instance: AsyncBound, owner: type | None = None) -> Callable[P, AsyncStream[T]]: ...
    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Callable[Concatenate[Any, P], Stream[T]]: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        function = self._function
        if isinstance(instance, SyncBound):
            driver = instance._driver

            def call(*args: P.args, **kwargs: P.kwargs) -> SyncStream[T]:
                return SyncStream(driver.iterate(function(instance, *args, **kwargs)))

        elif isinstance(instance, AsyncBound):
            async_driver = instance._driver

            def call(*args: P.args, **kwargs: P.kwargs) -> AsyncStream[T]:  # type: ignore[misc]  # the async twin
                return AsyncStream(async_driver.iterate(function(instance, *args, **kwargs)))

        else:
            return function
        return _described(call, function)


def _described(call: Callable[..., Any], function: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` (the bound method a descriptor hands out) with the definition's name, docs and parameters, less ``self``
    (what it returns differs between the sync and async sides: the type checker knows it)."""
    signature = inspect.signature(function)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:], return_annotation=inspect.Signature.empty
    )
    call.__doc__, call.__name__, call.__qualname__ = function.__doc__, function.__name__, function.__qualname__
    return call


class SyncStream(Iterator[T]):
    """Values as the server produces them. Stopping early — ``break``, :meth:`close`, leaving a
    ``with`` block — lets the stream tidy up (a propagation is cancelled)."""

    def __init__(self, values: Generator[T, None, None]) -> None:
        self._values = values

    def __next__(self) -> T:
        return next(self._values)

    def close(self) -> None:
        self._values.close()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class AsyncStream(AsyncIterator[T]):
    """Values as the server produces them. Use ``async with`` (or :meth:`aclose`) to tidy up at once
    when stopping early; after a bare ``break`` the event loop does it a moment later."""

    def __init__(self, values: AsyncIterator[T]) -> None:
        self._values = values

    async def __anext__(self) -> T:
        return await anext(self._values)

    async def aclose(self) -> None:
        await cast(Any, self._values).aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        await self.aclose()


# --- drivers ---


def _timeout(config: ClientConfig) -> httpx.Timeout:
    return httpx.Timeout(config.timeout, connect=config.connect_timeout)


def _failure(error: httpx.TransportError) -> TransportFailure:
    not_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return TransportFailure(message, timeout=isinstance(error, httpx.TimeoutException), connected=not not_sent)


def _reply(response: httpx.Response) -> Reply:
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


def _closed(error: ConnectionClosed) -> SocketClosed:
    return SocketClosed(error.rcvd.code, error.rcvd.reason) if error.rcvd else SocketClosed(1006, str(error))


def _handshake_failure(error: Exception) -> ConnectFailed:
    if isinstance(error, InvalidStatus):
        return ConnectFailed(error.response.status_code, f"the server refused the websocket ({error.response.status_code})")
    return ConnectFailed(None, f"{type(error).__name__}: {error}")


_HANDSHAKE_ERRORS = (OSError, TimeoutError, InvalidHandshake, InvalidURI)


class SyncDriver:
    """Performs effects with blocking I/O."""

    def __init__(self, config: ClientConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http or httpx.Client(base_url=config.api_url, headers=config.headers(), timeout=_timeout(config))

    def close(self) -> None:
        self.http.close()

    def run(self, op: Op[T]) -> T:
        outcome: Any = None
        while True:
            try:
                effect = op.send(outcome)
            except StopIteration as stop:
                return cast(T, stop.value)
            outcome = self.perform(effect)

    def iterate(self, op: Stream[T]) -> Generator[T, None, None]:
        outcome: Any = None
        finished = False
        try:
            while True:
                try:
                    effect = op.send(outcome)
                except StopIteration:
                    finished = True
                    return
                except BaseException:
                    finished = True
                    raise
                if isinstance(effect, Emit):
                    outcome = None
                    yield effect.value
                else:
                    outcome = self.perform(effect)
        finally:
            if not finished:
                self._wind_down(op)

    def _wind_down(self, op: Stream[Any]) -> None:
        try:
            effect = op.throw(StreamClosed())
            while True:
                effect = op.send(None if isinstance(effect, Emit) else self.perform(effect))
        except (StopIteration, StreamClosed, Sam3Error):
            pass

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return self._send(effect.call)
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Blocking):
            return effect.function()
        if isinstance(effect, Connect):
            exits = ExitStack()
            try:
                return Socket(exits.enter_context(sync_connect(
                    self.config.websocket_url + effect.path, additional_headers=self.config.headers(),
                    open_timeout=self.config.connect_timeout, max_size=WEBSOCKET_MAX_MESSAGE_BYTES, user_agent_header=None,
                )), exits)
            except _HANDSHAKE_ERRORS as error:
                return _handshake_failure(error)
        connection = cast(SyncConnection, effect.socket.connection)
        if isinstance(effect, Receive):
            try:
                message = connection.recv(timeout=effect.timeout)
            except TimeoutError:
                return ReceiveTimeout()
            except ConnectionClosed as error:
                return _closed(error)
            return message if isinstance(message, str) else message.decode(errors="replace")
        if isinstance(effect, SendText):
            with suppress(ConnectionClosed):  # the next Receive reports the close
                connection.send(effect.text)
            return None
        cast(ExitStack, effect.socket.exits).close()
        return None

    def _send(self, call: Call) -> Reply | TransportFailure:
        with ExitStack() as files:
            parts = {
                field: (part.name, files.enter_context(part.content.open("rb")) if isinstance(part.content, Path) else part.content,
                        part.content_type)
                for field, part in (call.files or {}).items()
            }
            try:
                response = self.http.request(
                    call.method, call.path, params=call.params, json=call.json, data=call.data, files=parts or None
                )
            except httpx.TransportError as error:
                return _failure(error)
        return _reply(response)


class AsyncDriver:
    """Performs effects on the running event loop."""

    def __init__(self, config: ClientConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.http = http or httpx.AsyncClient(base_url=config.api_url, headers=config.headers(), timeout=_timeout(config))

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self, op: Op[T]) -> T:
        outcome: Any = None
        while True:
            try:
                effect = op.send(outcome)
            except StopIteration as stop:
                return cast(T, stop.value)
            outcome = await self.perform(effect)

    async def iterate(self, op: Stream[T]) -> AsyncIterator[T]:
        outcome: Any = None
        finished = False
        try:
            while True:
                try:
                    effect = op.send(outcome)
                except StopIteration:
                    finished = True
                    return
                except BaseException:
                    finished = True
                    raise
                if isinstance(effect, Emit):
                    outcome = None
                    yield effect.value
                else:
                    outcome = await self.perform(effect)
        finally:
            if not finished:
                await self._wind_down(op)

    async def _wind_down(self, op: Stream[Any]) -> None:
        try:
            effect = op.throw(StreamClosed())
            while True:
                effect = op.send(None if isinstance(effect, Emit) else await self.perform(effect))
        except (StopIteration, StreamClosed, Sam3Error):
            pass

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return await self._send(effect.call)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Blocking):
            return await asyncio.to_thread(effect.function)
        if isinstance(effect, Connect):
            exits = AsyncExitStack()
            try:
                return Socket(await exits.enter_async_context(async_connect(
                    self.config.websocket_url + effect.path, additional_headers=self.config.headers(),
                    open_timeout=self.config.connect_timeout, max_size=WEBSOCKET_MAX_MESSAGE_BYTES, user_agent_header=None,
                )), exits)
            except _HANDSHAKE_ERRORS as error:
                return _handshake_failure(error)
        connection = cast(AsyncConnection, effect.socket.connection)
        if isinstance(effect, Receive):
            try:
                message = await asyncio.wait_for(connection.recv(), effect.timeout)  # recv is safe to cancel
            except TimeoutError:
                return ReceiveTimeout()
            except ConnectionClosed as error:
                return _closed(error)
            return message if isinstance(message, str) else message.decode(errors="replace")
        if isinstance(effect, SendText):
            with suppress(ConnectionClosed):
                await connection.send(effect.text)
            return None
        await cast(AsyncExitStack, effect.socket.exits).aclose()
        return None

    async def _send(self, call: Call) -> Reply | TransportFailure:
        async with AsyncExitStack() as files:
            parts = {
                field: (part.name, files.enter_context(part.content.open("rb")) if isinstance(part.content, Path) else part.content,
                        part.content_type)
                for field, part in (call.files or {}).items()
            }
            try:
                response = await self.http.request(
                    call.method, call.path, params=call.params, json=call.json, data=call.data, files=parts or None
                )
            except httpx.TransportError as error:
                return _failure(error)
        return _reply(response)
