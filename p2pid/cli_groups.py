"""CLI commands for groups: `groups` and `group ACTION ...` (create, show, add, remove, leave,
promote, demote, rename, send, messages, read, receipts, sync, invite, join, requests, approve).
Clients of the daemon's `groups` / `group.*` RPC methods."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pid.cli import (
    EXIT_ERROR,
    EXIT_OK,
    STATE_MARKS,
    Output,
    Parser,
    UsageError,
    call,
    format_clock,
    format_fields,
    format_time,
    terminal_qr,
)
from p2pid.home import Home
from p2pid.wire.groups import MAX_AVATAR_CHARS, MAX_NAME_CHARS

MAX_LIMIT = 500
_MESSAGE_ID = re.compile(r"[0-9a-fA-F]{32}")

Command = Callable[[Home, argparse.Namespace, Output], int]


def add_group_commands(commands: Any) -> None:
    commands.add_parser("groups", help="my groups: name, my role, members, unread, last message")
    group = commands.add_parser("group", help="create, change, read and write to a group")
    actions = group.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    reference = "group id (4+ leading hex characters) or name"
    member_reference = "identity id (or 6+ leading characters) or name of a member"

    create = actions.add_parser("create", help="a new group with me as its admin")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--avatar", default="", help=f"an emoji or up to {MAX_AVATAR_CHARS} chars")
    create.add_argument(
        "--member", action="append", default=[], metavar="CONTACT", help="add this contact"
    )
    actions.add_parser("show", help="members, roles, devices").add_argument(
        "group", metavar="GROUP", help=reference
    )
    add = actions.add_parser("add", help="(admin) add a contact to the group")
    add.add_argument("group", metavar="GROUP", help=reference)
    add.add_argument("contact", metavar="CONTACT", help="identity id or name of a contact")
    remove = actions.add_parser("remove", help="(admin) remove a member")
    remove.add_argument("group", metavar="GROUP", help=reference)
    remove.add_argument("member", metavar="MEMBER", help=member_reference)
    remove.add_argument("--yes", action="store_true", help="do not ask to confirm")
    leave = actions.add_parser("leave", help="leave the group")
    leave.add_argument("group", metavar="GROUP", help=reference)
    leave.add_argument("--yes", action="store_true", help="do not ask to confirm")
    for action, text in (
        ("promote", "(admin) make a member an admin"),
        ("demote", "(admin) make an admin a plain member"),
    ):
        change = actions.add_parser(action, help=text)
        change.add_argument("group", metavar="GROUP", help=reference)
        change.add_argument("member", metavar="MEMBER", help=member_reference)
    rename = actions.add_parser("rename", help="(admin) rename the group (and its avatar)")
    rename.add_argument("group", metavar="GROUP", help=reference)
    rename.add_argument("name", metavar="NAME")
    rename.add_argument("--avatar", default=None, help="a new avatar ('' removes it)")

    send = actions.add_parser("send", help="send a message to the group")
    send.add_argument("group", metavar="GROUP", help=reference)
    send.add_argument("text", metavar="TEXT", help="the message ('-' reads it from stdin)")
    messages = actions.add_parser("messages", help="the group's latest messages (marks them read)")
    messages.add_argument("group", metavar="GROUP", help=reference)
    messages.add_argument("--limit", type=int, default=20, help="how many (20; at most 500)")
    messages.add_argument("--before", metavar="CURSOR", help="the page before this cursor")
    messages.add_argument("--no-read", action="store_true", help="do not mark them read")
    actions.add_parser("read", help="mark the group's messages read").add_argument(
        "group", metavar="GROUP", help=reference
    )
    receipts = actions.add_parser("receipts", help="who got and who read a message of mine")
    receipts.add_argument("group", metavar="GROUP", help=reference)
    receipts.add_argument("message_id", metavar="MESSAGE_ID", help="32 hex characters")
    actions.add_parser("sync", help="catch up now from any member online").add_argument(
        "group", metavar="GROUP", help=reference
    )

    invite = actions.add_parser("invite", help="a QR code that lets people join the group")
    invite.add_argument("group", metavar="GROUP", help=reference)
    invite.add_argument("--uses", type=int, default=1, help="how many people may use it (1)")
    invite.add_argument(
        "--ttl", type=int, default=24 * 3600, metavar="SECONDS", help="lifetime (1 day)"
    )
    invite.add_argument(
        "--approval", action="store_true", help="an admin approves each person who joins"
    )
    invite.add_argument("--png", type=Path, metavar="FILE", help="also write the QR as a PNG image")
    invite.add_argument("--no-qr", action="store_true", help="print the code only")
    join = actions.add_parser("join", help="join a group by its invite")
    source = join.add_mutually_exclusive_group(required=True)
    source.add_argument("code", nargs="?", metavar="CODE", help="the invite text (P2PID:...)")
    source.add_argument(
        "--image", type=Path, metavar="FILE", help="a photo or screenshot of the QR"
    )
    actions.add_parser("requests", help="(admin) people waiting to join my groups")
    approve = actions.add_parser("approve", help="(admin) let someone join, or not")
    approve.add_argument("request_id", metavar="REQUEST_ID")
    answer = approve.add_mutually_exclusive_group(required=True)
    answer.add_argument("--yes", dest="accept", action="store_const", const=True)
    answer.add_argument("--no", dest="accept", action="store_const", const=False)


# -- commands -------------------------------------------------------------------------------


def cmd_groups(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "groups"), format_groups)
    return EXIT_OK


def cmd_group(home: Home, args: argparse.Namespace, output: Output) -> int:
    return ACTIONS[args.action](home, args, output)


def _create(home: Home, args: argparse.Namespace, output: Output) -> int:
    name = _checked_name("create", args.name)
    avatar = _checked_avatar("create", args.avatar)
    members = [m.strip() for m in args.member]
    if any(not m for m in members):
        raise UsageError("p2pid group create: --member needs a contact")
    view = call(home, "group.create", name=name, avatar=avatar, members=members)
    output.emit(view, lambda v: f"created {_label(v)}\n" + format_group(v))
    return EXIT_OK


def _show(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "group.show", group=args.group), format_group)
    return EXIT_OK


def _add(home: Home, args: argparse.Namespace, output: Output) -> int:
    view = call(home, "group.add", group=args.group, contact=args.contact)
    output.emit(view, lambda v: f"added {args.contact} to {_label(v)}\n" + format_group(v))
    return EXIT_OK


def _remove(home: Home, args: argparse.Namespace, output: Output) -> int:
    if not _confirmed(args.yes, "remove", f"Remove {args.member} from {args.group}?"):
        return _cancelled(output)
    view = call(home, "group.remove", group=args.group, member=args.member)
    output.emit(view, lambda v: f"removed {args.member} from {_label(v)}")
    return EXIT_OK


def _leave(home: Home, args: argparse.Namespace, output: Output) -> int:
    question = f"Leave {args.group}? Its new messages will no longer reach you."
    if not _confirmed(args.yes, "leave", question):
        return _cancelled(output)
    view = call(home, "group.leave", group=args.group)
    output.emit(view, lambda v: f"you left {_label(v)}")
    return EXIT_OK


def _role_change(method: str, verb: str) -> Command:
    def command(home: Home, args: argparse.Namespace, output: Output) -> int:
        view = call(home, method, group=args.group, member=args.member)
        output.emit(view, lambda v: f"{verb} {args.member} in {_label(v)}\n" + format_group(v))
        return EXIT_OK

    return command


def _rename(home: Home, args: argparse.Namespace, output: Output) -> int:
    name = _checked_name("rename", args.name)
    params: dict[str, Any] = {"group": args.group, "name": name}
    if args.avatar is not None:
        params["avatar"] = _checked_avatar("rename", args.avatar)
    view = call(home, "group.rename", **params)
    output.emit(view, lambda v: f"the group is now {_label(v)}")
    return EXIT_OK


def _send(home: Home, args: argparse.Namespace, output: Output) -> int:
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    if not text.strip():
        raise UsageError("p2pid group send: the message is empty")
    sent = call(home, "group.send", group=args.group, text=text)
    output.emit(sent, lambda m: f"sent ({m['state']}) {m['message_id']}")
    return EXIT_OK


def _messages(home: Home, args: argparse.Namespace, output: Output) -> int:
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"p2pid group messages: --limit must be between 1 and {MAX_LIMIT}")
    page = call(home, "group.messages", group=args.group, limit=args.limit, before=args.before)
    names = {} if output.as_json else member_names(call(home, "group.show", group=args.group))
    if not args.no_read and page["unread"]:
        call(home, "group.read", group=args.group)
    output.emit(page, lambda p: format_group_page(p, names))
    return EXIT_OK


def _read(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "group.read", group=args.group)
    output.emit(result, lambda r: f"{r['read']} messages marked read")
    return EXIT_OK


def _receipts(home: Home, args: argparse.Namespace, output: Output) -> int:
    if not _MESSAGE_ID.fullmatch(args.message_id):
        raise UsageError("p2pid group receipts: MESSAGE_ID is 32 hex characters")
    result = call(home, "group.receipts", group=args.group, message_id=args.message_id.lower())
    output.emit(result, format_receipts)
    return EXIT_OK


def _sync(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "group.sync", group=args.group)
    output.emit(
        result,
        lambda r: f"caught up: {r['ops']} membership changes, {r['messages']} messages",
    )
    return EXIT_OK


def _invite(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.uses < 1 or args.ttl < 1:
        raise UsageError("p2pid group invite: --uses and --ttl must be at least 1")
    created = call(
        home,
        "group.invite",
        group=args.group,
        uses=args.uses,
        ttl=args.ttl,
        approval=args.approval,
    )
    from p2pid import qr

    version, modules = qr.qr_summary(created["code"])
    document = {**created, "qr": {"version": version, "modules": modules}}
    if args.png is not None:
        qr.write_png(created["code"], args.png)
        document["png"] = str(args.png)
    if output.as_json:
        output.emit(document, str)
        return EXIT_OK
    if not args.no_qr:
        print(terminal_qr(created["code"], qr.render_half_blocks, qr.render_half_blocks_plain))
    print(created["code"])
    print(format_invite(created))
    return EXIT_OK


def _join(home: Home, args: argparse.Namespace, output: Output) -> int:
    code = args.code
    if args.image is not None:
        from p2pid.qr import decode_image

        code = decode_image(args.image)
    output.emit(call(home, "group.join", code=code), format_join)
    return EXIT_OK


def _requests(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "group.requests"), format_join_requests)
    return EXIT_OK


def _approve(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "group.approve", request_id=args.request_id, accept=args.accept)
    output.emit(
        result,
        lambda r: "refused" if r.get("refused") else f"approved: {_label(r)} has a new member",
    )
    return EXIT_OK


ACTIONS: dict[str, Command] = {
    "create": _create,
    "show": _show,
    "add": _add,
    "remove": _remove,
    "leave": _leave,
    "promote": _role_change("group.promote", "promoted"),
    "demote": _role_change("group.demote", "demoted"),
    "rename": _rename,
    "send": _send,
    "messages": _messages,
    "read": _read,
    "receipts": _receipts,
    "sync": _sync,
    "invite": _invite,
    "join": _join,
    "requests": _requests,
    "approve": _approve,
}

GROUP_COMMANDS: dict[str, Command] = {"groups": cmd_groups, "group": cmd_group}


# -- argument checks ----------------------------------------------------------------------------


def _checked_name(action: str, name: str) -> str:
    name = name.strip()
    if not name:
        raise UsageError(f"p2pid group {action}: the name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise UsageError(f"p2pid group {action}: a name has at most {MAX_NAME_CHARS} characters")
    return name


def _checked_avatar(action: str, avatar: str) -> str:
    avatar = avatar.strip()
    if len(avatar) > MAX_AVATAR_CHARS:
        raise UsageError(
            f"p2pid group {action}: an avatar has at most {MAX_AVATAR_CHARS} characters"
        )
    return avatar


def _confirmed(yes: bool, action: str, question: str) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"p2pid group {action}: confirm with --yes (no terminal to ask)")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _cancelled(output: Output) -> int:
    output.emit({"cancelled": True}, lambda _: "nothing changed")
    return EXIT_ERROR


# -- human output ----------------------------------------------------------------------------


def _label(view: dict[str, Any]) -> str:
    name = str(view["name"])
    return f"{view['avatar']} {name}" if view.get("avatar") else name


def _preview(message: dict[str, Any] | None, width: int = 50) -> str:
    if message is None:
        return ""
    text: str = ("me: " if message["outgoing"] else "") + message["text"].replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_groups(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return "no groups yet (p2pid group create NAME --member CONTACT)"
    lines = []
    for group in groups:
        unread = f"{group['unread']} unread" if group["unread"] else ""
        members = f"{group['members']} member{'' if group['members'] == 1 else 's'}"
        lines.append(
            f"{_label(group):<24}  {group['my_role']:<7}  {members:<11}  {unread:<10}  "
            f"{_preview(group['last_message'])}".rstrip()
        )
    return "\n".join(lines)


def _member_line(member: dict[str, Any]) -> str:
    if member["is_me"]:
        who = "me"
    elif member["is_contact"]:
        who = "contact"
    else:
        who = "not a contact"
    devices = f"{member['devices']} device{'' if member['devices'] == 1 else 's'}"
    return (
        f"  {member['identity_id'][:12]}  {member['name']:<20}  {member['role']:<6}  "
        f"{devices:<10}  {who}"
    )


def format_group(view: dict[str, Any]) -> str:
    fields = format_fields(
        {
            "name": _label(view),
            "group_id": view["group_id"],
            "my_role": view["my_role"],
            "created": format_clock(view["created_at_ms"]) if view["created_at_ms"] else "-",
            "members": str(len(view["members"])),
        }
    )
    return "\n".join([fields, *(_member_line(m) for m in view["members"])])


def member_names(view: dict[str, Any]) -> dict[str, str]:
    """Identity id -> the name to show, for the group's current members."""
    return {m["identity_id"]: m["name"] for m in view["members"]}


def format_group_message(message: dict[str, Any], names: dict[str, str]) -> str:
    if message["outgoing"]:
        author = "me"
    else:
        author = names.get(message["sender_id"], message["sender_id"][:12])
    mark = STATE_MARKS.get(message["state"], message["state"])
    return f"{format_clock(message['sent_at_ms'])}  {mark:<2} {author}: {message['text']}"


def format_group_page(page: dict[str, Any], names: dict[str, str]) -> str:
    if not page["messages"]:
        return f"no messages in {page['name']} yet (p2pid group send {page['name']!r} TEXT)"
    lines = [format_group_message(message, names) for message in page["messages"]]
    if page["before"]:
        lines.insert(0, f"(older: p2pid group messages {page['name']!r} --before {page['before']})")
    return "\n".join(lines)


def format_receipts(result: dict[str, Any]) -> str:
    receipts = result["receipts"]
    if not receipts:
        return "no other members"
    read = sum(r["state"] == "read" for r in receipts)
    delivered = sum(r["state"] in ("delivered", "read") for r in receipts)
    lines = [f"delivered to {delivered} of {len(receipts)}, read by {read}"]
    for receipt in receipts:
        mark = STATE_MARKS.get(receipt["state"], "")
        when = format_clock(receipt["at_ms"]) if receipt["at_ms"] is not None else ""
        lines.append(f"  {mark:<2} {receipt['name']:<20}  {receipt['state']:<9}  {when}".rstrip())
    return "\n".join(lines)


def format_invite(created: dict[str, Any]) -> str:
    uses = "single use" if created["uses"] == 1 else f"{created['uses']} uses"
    approval = ", an admin approves each joiner" if created["approval"] else ""
    return (
        f"expires {format_time(created['expires_at'])}, {uses}{approval}, "
        f"id {created['invite_id']} (p2pid group join CODE)"
    )


def format_join(result: dict[str, Any]) -> str:
    group = result["group"]
    if result["state"] == "joined" and group is not None:
        return f"joined {_label(group)}\n" + format_group(group)
    return "asked to join: an admin of the group must approve (see `p2pid groups`)"


def format_join_requests(requests: list[dict[str, Any]]) -> str:
    if not requests:
        return "no join requests waiting"
    return "\n".join(
        f"{r['request_id']}  {r['name']} ({r['identity_id'][:12]}) wants to join "
        f"{r['group_name']}, {format_clock(r['requested_at_ms'])}  "
        f"(p2pid group approve {r['request_id']} --yes|--no)"
        for r in requests
    )


def format_group_event(event: dict[str, Any], clock: str) -> str | None:
    """The `watch` line of a group event, or None for one this version does not know."""
    kind = event["type"]
    if kind == "group.message_received":
        return (
            f"{clock}  [{event['group_name']}] {event['sender_name']}: {event['message']['text']}"
        )
    if kind == "group.message_sent":
        return f"{clock}  [{event['group_name']}] me: {event['message']['text']}"
    if kind == "group.message_state_changed":
        ids = ", ".join(message_id[:8] for message_id in event["message_ids"][:5])
        more = len(event["message_ids"]) - 5
        extra = f" and {more} more" if more > 0 else ""
        return f"{clock}  group {event['group_id'][:8]} {event['state']}: {ids}{extra}"
    if kind == "group.changed":
        changes = []
        if event["added"]:
            changes.append(f"added {', '.join(i[:12] for i in event['added'])}")
        if event["removed"]:
            changes.append(f"removed {', '.join(i[:12] for i in event['removed'])}")
        detail = f": {'; '.join(changes)}" if changes else ""
        return f"{clock}  [{event['name']}] changed (my role: {event['my_role']}){detail}"
    if kind == "group.join_requested":
        request = event["request"]
        return (
            f"{clock}  [{request['group_name']}] {request['name']} asks to join "
            f"(p2pid group approve {request['request_id']} --yes|--no)"
        )
    return None
