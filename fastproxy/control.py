"""Runtime control of the backends through the shared table: fastproxy backends | drain | enable | disable |
weight.

The table of a running server is the named file its master created for its config file (see
fastproxy._shm.path_for), so every command here takes the same -c FILE as `fastproxy serve`. Changes are
written straight into the table: every worker sees them at its next pick, and they survive a reload of an
unchanged config (the master keeps the slot of every server that remains; a changed configured weight
resets the runtime one).
"""

import json
import sys

from fastproxy._shm import ShmTable, path_for_file


class ControlError(Exception):
    pass


def open_table(config_file):
    path = path_for_file(config_file)
    try:
        return ShmTable(path)
    except FileNotFoundError:
        raise ControlError(f"no running fastproxy for {config_file} (no table {path})") from None
    except ValueError as e:
        raise ControlError(str(e)) from None


COLUMNS = (("upstream", "UPSTREAM"), ("address", "ADDRESS"), ("state", "STATE"), ("weight", "WEIGHT"),
           ("active", "ACTIVE"), ("requests", "REQUESTS"), ("errors", "ERRORS"), ("fails", "FAILS"),
           ("ewma_ms", "RT_MS"), ("flags", "FLAGS"))


def rows_for_print(snapshot):
    rows = []
    for b in sorted(snapshot, key=lambda b: (b["upstream"], b["slot"])):
        flags = [f for f, on in (("backup", b["backup"]), ("passive-down", b["passive_down"]),
                                 ("health-down", b["health"] == "down")) if on]
        if b["max_conns"]:
            flags.append(f"max_conns={b['max_conns']}")
        rows.append({**b, "ewma_ms": f"{b['ewma_ms']:.1f}", "flags": ",".join(flags) or "-"})
    return rows


def format_table(snapshot):
    rows = rows_for_print(snapshot)
    cells = [[title for _, title in COLUMNS]] + [[str(r[key]) for key, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def main_backends(args):
    """fastproxy backends -c FILE [--json]: every server with its state and counters."""
    try:
        table = open_table(args.config)
    except ControlError as e:
        print(f"fastproxy backends: {e}", file=sys.stderr)
        return 1
    snapshot = table.snapshot()
    table.close()
    if args.json:
        print(json.dumps(snapshot, indent=1))
    else:
        print(format_table(snapshot))
    return 0


ADMIN = {"drain": "draining", "enable": "enabled", "disable": "disabled"}


def main_change(args):
    """fastproxy drain|enable|disable -c FILE UPSTREAM ADDRESS, fastproxy weight -c FILE UPSTREAM ADDRESS N."""
    try:
        table = open_table(args.config)
        try:
            if args.command == "weight":
                table.set_weight(args.upstream, args.address, args.weight)
                what = f"weight {args.weight}"
            else:
                table.set_admin(args.upstream, args.address, ADMIN[args.command])
                what = ADMIN[args.command]
        except KeyError as e:
            raise ControlError(e.args[0]) from None
        except ValueError as e:
            raise ControlError(str(e)) from None
        finally:
            table.close()
    except ControlError as e:
        print(f"fastproxy {args.command}: {e}", file=sys.stderr)
        return 1
    print(f"{args.upstream} {args.address}: {what}")
    return 0


def add_commands(sub):
    """Register the subcommands on the CLI's argparse subparsers."""
    s = sub.add_parser("backends", help="list every backend server with its state and counters")
    s.add_argument("-c", "--config", required=True, metavar="FILE", help="the running server's config file")
    s.add_argument("--json", action="store_true", help="print the table snapshot as JSON")
    s.set_defaults(func=main_backends)
    for name, what in (("drain", "no new sessions for a server (sticky clients stay until drain_timeout)"),
                       ("enable", "put a drained or disabled server back into rotation"),
                       ("disable", "take a server out of rotation at once"),
                       ("weight", "change a server's weight at runtime")):
        s = sub.add_parser(name, help=what)
        s.add_argument("-c", "--config", required=True, metavar="FILE", help="the running server's config file")
        s.add_argument("upstream", metavar="UPSTREAM")
        s.add_argument("address", metavar="ADDRESS", help="as written in the config, e.g. 127.0.0.1:9001")
        if name == "weight":
            s.add_argument("weight", metavar="N", type=int, help="1..1000")
        s.set_defaults(func=main_change)
