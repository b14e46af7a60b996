"""CLI commands for kiosks: `kiosk` (run one, headless, in the foreground) and, as a person,
`pair`, `kiosks`, `kiosk-invoke`, `kiosk-revoke`, the owner's `kiosk-guests`,
`kiosk-remove-guest`, `kiosk-reset`, and `kiosk-approvals` / `kiosk-approve`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pid.cli import EXIT_ERROR, EXIT_OK, Output, UsageError, call
from p2pid.home import Home

DEFAULT_CODE_TTL_S = 600


def add_kiosk_commands(commands: Any) -> None:
    kiosk = commands.add_parser(
        "kiosk", help="run this home as a headless kiosk/TV: pairing QR, short code, routines"
    )
    kiosk.add_argument(
        "--name", required=True, help='shown to people pairing, e.g. "Living room TV"'
    )
    kiosk.add_argument("--routines", type=Path, metavar="FILE", help="routines file (TOML)")
    kiosk.add_argument("--qr-png", type=Path, metavar="FILE", help="keep the QR code in this PNG")
    kiosk.add_argument("--listen", action="append", default=[], metavar="MADDR")
    kiosk.add_argument("--mdns-interface", action="append", default=[], metavar="IF")
    kiosk.add_argument("--no-mdns", action="store_true")
    kiosk.add_argument(
        "--code-ttl", type=int, default=DEFAULT_CODE_TTL_S, help=argparse.SUPPRESS
    )  # seconds a QR/short code is shown before it rotates (tests shorten it)

    pair = commands.add_parser("pair", help="pair with a kiosk by its QR code or short code")
    source = pair.add_mutually_exclusive_group(required=True)
    source.add_argument("code", nargs="?", metavar="CODE", help="the kiosk's code (P2PID:...)")
    source.add_argument("--image", type=Path, metavar="FILE", help="a photo/screenshot of the QR")
    source.add_argument("--short-code", metavar="DIGITS", help="the 6 digits the kiosk shows")
    pair.add_argument("--kiosk", help="with --short-code: which kiosk, when several are nearby")
    pair.add_argument("--days", type=int, default=30, help="how long the grant lasts (30 days)")

    commands.add_parser("kiosks", help="kiosks I paired with: online, last seen, health")
    invoke = commands.add_parser("kiosk-invoke", help="run a routine on a kiosk")
    invoke.add_argument("kiosk", metavar="KIOSK", help="name, PeerId or prefix")
    invoke.add_argument("routine", metavar="ROUTINE")
    invoke.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG")
    revoke = commands.add_parser(
        "kiosk-revoke", help="log out of a kiosk: it drops my grant for good"
    )
    revoke.add_argument("kiosk", metavar="KIOSK")
    revoke.add_argument(
        "--forget",
        action="store_true",
        help="if the kiosk cannot be reached (gone for good), forget it here anyway",
    )
    for name, text in (
        ("kiosk-guests", "(owner) who is paired with the kiosk"),
        ("kiosk-reset", "(owner) forget the owner and every guest; new codes"),
    ):
        commands.add_parser(name, help=text).add_argument("kiosk", metavar="KIOSK")
    remove = commands.add_parser("kiosk-remove-guest", help="(owner) remove a guest")
    remove.add_argument("kiosk", metavar="KIOSK")
    remove.add_argument("guest", metavar="GUEST", help="identity id (or prefix) or name")
    commands.add_parser("kiosk-approvals", help="(owner) guests waiting for my approval")
    approve = commands.add_parser("kiosk-approve", help="(owner) let a new guest pair, or not")
    approve.add_argument("request", metavar="REQUEST")
    answer = approve.add_mutually_exclusive_group(required=True)
    answer.add_argument("--yes", dest="accept", action="store_const", const=True)
    answer.add_argument("--no", dest="accept", action="store_const", const=False)


def cmd_kiosk(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.code_ttl < 5:
        raise UsageError("p2pid kiosk: --code-ttl is at least 5 seconds")
    from p2pid.kiosk.console import run_kiosk
    from p2pid.kiosk.routines import RoutineError

    try:
        run_kiosk(
            home,
            name=args.name,
            routines=args.routines,
            qr_png=args.qr_png,
            listen=args.listen,
            interfaces=args.mdns_interface,
            no_mdns=args.no_mdns,
            as_json=output.as_json,
            code_ttl_s=args.code_ttl,
        )
    except RoutineError as error:
        raise UsageError(f"p2pid kiosk: {error}") from None
    return EXIT_OK


def cmd_pair(home: Home, args: argparse.Namespace, output: Output) -> int:
    if not 1 <= args.days <= 366:
        raise UsageError("p2pid pair: --days is 1..366")
    code = args.code
    if args.image is not None:
        from p2pid.qr import decode_image

        code = decode_image(args.image)
    params: dict[str, Any] = {"grant_ttl_ms": args.days * 86_400_000}
    if args.short_code is not None:
        params |= {"short_code": args.short_code, "kiosk": args.kiosk}
    else:
        params["code"] = code
    paired = call(home, "pair", **params)
    output.emit(paired, format_paired)
    return EXIT_OK


def cmd_kiosks(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "kiosks"), format_kiosks)
    return EXIT_OK


def cmd_kiosk_invoke(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "kiosk.invoke", kiosk=args.kiosk, routine=args.routine, args=args.args)
    output.emit(result, lambda r: r["output"].rstrip("\n") or ("ok" if r["ok"] else "failed"))
    return EXIT_OK if result["ok"] else EXIT_ERROR


def _simple(method: str, human: Callable[[Any], str]) -> Callable[..., int]:
    def command(home: Home, args: argparse.Namespace, output: Output) -> int:
        output.emit(call(home, method, kiosk=args.kiosk), human)
        return EXIT_OK

    return command


def cmd_kiosk_revoke(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "kiosk.revoke", kiosk=args.kiosk, forget=args.forget)
    output.emit(
        result,
        lambda r: (
            "logged out of the kiosk (grant revoked)"
            if r["revoked"]
            else "the kiosk could not be reached: forgotten here; its grant lives until it expires"
        ),
    )
    return EXIT_OK


def cmd_kiosk_remove_guest(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "kiosk.remove_guest", kiosk=args.kiosk, guest=args.guest)
    output.emit(result, lambda _: f"removed {args.guest} from {args.kiosk}")
    return EXIT_OK


def cmd_kiosk_approvals(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "kiosk.approvals"), format_approvals)
    return EXIT_OK


def cmd_kiosk_approve(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "kiosk.approve", request_id=args.request, accept=args.accept)
    output.emit(result, lambda r: "approved" if r["accepted"] else "refused")
    return EXIT_OK


def format_paired(paired: dict[str, Any]) -> str:
    names = ", ".join(r["name"] for r in paired["routines"]) or "none"
    return f"paired with {paired['kiosk_name']} as {paired['role']}; routines: {names}"


def format_kiosks(kiosks: list[dict[str, Any]]) -> str:
    if not kiosks:
        return "no kiosks paired (p2pid pair CODE | --image FILE | --short-code DIGITS)"
    lines = []
    for kiosk in kiosks:
        state = "online" if kiosk["online"] else "offline"
        health = (kiosk["health"] or "").replace("\n", " ")[:60]
        lines.append(
            f"{kiosk['peer_id'][:16]}  {kiosk['name']:<20}  {kiosk['role']:<5}  {state:<7}"
            f"  {health}"
        )
    return "\n".join(lines)


def format_guests(guests: list[dict[str, Any]]) -> str:
    return "\n".join(f"{g['identity_id'][:12]}  {g['name']:<20}  {g['role']}" for g in guests)


def format_approvals(pending: list[dict[str, Any]]) -> str:
    if not pending:
        return "no kiosk approvals waiting"
    return "\n".join(
        f"{p['request_id']}  {p['person_name']} wants to pair with {p['kiosk_name']}"
        f"  (p2pid kiosk-approve {p['request_id']} --yes|--no)"
        for p in pending
    )


KIOSK_COMMANDS: dict[str, Callable[[Home, argparse.Namespace, Output], int]] = {
    "kiosk": cmd_kiosk,
    "pair": cmd_pair,
    "kiosks": cmd_kiosks,
    "kiosk-invoke": cmd_kiosk_invoke,
    "kiosk-revoke": cmd_kiosk_revoke,
    "kiosk-guests": _simple("kiosk.guests", format_guests),
    "kiosk-reset": _simple("kiosk.reset", lambda _: "kiosk reset: no owner, no guests"),
    "kiosk-remove-guest": cmd_kiosk_remove_guest,
    "kiosk-approvals": cmd_kiosk_approvals,
    "kiosk-approve": cmd_kiosk_approve,
}
