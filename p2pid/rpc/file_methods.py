"""RPC methods for file sharing: `files` and `file.*` (send, show, accept, cancel, settings)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec

from p2pid.files.errors import FilesError
from p2pid.node import Node
from p2pid.rpc.params import NoParams, parse_params, translating
from p2pid.rpc.server import Handler
from p2pid.wire.files import MAX_FILE_SIZE

MAX_PATH_CHARS = 4096

PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PATH_CHARS)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_FILE_SIZE)]
AutoAccept = Literal["none", "verified", "contacts"]


class SendParams(msgspec.Struct, forbid_unknown_fields=True):
    target: Reference
    path: PathText


class TransferParams(msgspec.Struct, forbid_unknown_fields=True):
    transfer: Reference


class AcceptParams(msgspec.Struct, forbid_unknown_fields=True):
    transfer: Reference
    folder: PathText | None = None  # None: the settings' folder


class SettingsParams(msgspec.Struct, forbid_unknown_fields=True):
    folder: PathText | None = None  # None (or absent): unchanged, as for the other two
    auto_accept: AutoAccept | None = None
    auto_accept_max_bytes: ByteCount | None = None


def file_methods(node: Node) -> dict[str, Handler]:
    async def files(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.files.list_transfers()

    async def send(params: dict[str, Any]) -> Any:
        request = parse_params(params, SendParams)
        return await node.files.send(request.target, request.path)

    async def show(params: dict[str, Any]) -> Any:
        return await node.files.show(parse_params(params, TransferParams).transfer)

    async def accept(params: dict[str, Any]) -> Any:
        request = parse_params(params, AcceptParams)
        return await node.files.accept(request.transfer, request.folder)

    async def cancel(params: dict[str, Any]) -> Any:
        return await node.files.cancel(parse_params(params, TransferParams).transfer)

    async def settings(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.files.settings()

    async def set_settings(params: dict[str, Any]) -> Any:
        request = parse_params(params, SettingsParams)
        return await node.files.set_settings(
            request.folder, request.auto_accept, request.auto_accept_max_bytes
        )

    methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "files": files,
        "file.send": send,
        "file.show": show,
        "file.accept": accept,
        "file.cancel": cancel,
        "file.settings": settings,
        "file.settings.set": set_settings,
    }
    return {
        name: translating(handler, FilesError, "the other side did not answer in time")
        for name, handler in methods.items()
    }
