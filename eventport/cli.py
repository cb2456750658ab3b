"""``eventport``: arguments, and one place that turns every failure into a line on stderr and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

import requests
from rich.console import Console

from eventport import __version__, commands
from eventport.api import DEFAULT_URL, MAX_PAGE_SIZE, Api
from eventport.config import Credentials, config_dir
from eventport.errors import EXIT_CODES_HELP, FAILED, INTERRUPTED, UNAVAILABLE, USAGE, CliError
from eventport.output import Output
from eventport.progress import Reporter, parse_rate

DESCRIPTION = """\
Import, export and download events of an event-data portability platform over its HTTP API.

  eventport login orga@example.org
  eventport import FOSSASIA16.zip --wait
  eventport export 1 --media image --wait --out event1.zip"""

EPILOG = f"""\
{EXIT_CODES_HELP}

environment:
  EVENTPORT_URL    the API's base URL when --url is not given (default {DEFAULT_URL})
  EVENTPORT_TOKEN  a token to use instead of the stored login
  XDG_CONFIG_HOME  where the login is kept: $XDG_CONFIG_HOME/eventport/ (default ~/.config/eventport/)

Progress bars show on a terminal only (not with --json or --quiet, or when stdout is piped). Downloads resume
from FILE.part; uploads cannot resume and start again from zero."""


def _media(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(commands.MEDIA)
    unknown = [name for name in names if name not in commands.MEDIA]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown media {', '.join(unknown)}: choose from "
                                         f"{','.join(commands.MEDIA)} or all")
    return names


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _page_size(text: str) -> int:
    size = _positive(text)
    if size > MAX_PAGE_SIZE:  # the server's own bound: refused here as a usage error, not as its 400
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE_SIZE}, not {size}")
    return size


def _url(text: str) -> str:
    if not text.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options, accepted before and after the command (after it, a default must not override them)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--url", default=default, type=_url,
                        help=f"API base URL (default: $EVENTPORT_URL or {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print one JSON document on stdout (no bars, no notes)")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="no progress bars and no notes on stderr; errors still show")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventport", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"eventport {__version__}")
    _globals(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _globals(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        return p

    p = command("login", commands.login, "log in and keep the token (mode 0600) in the config folder")
    p.add_argument("email", nargs="?", help="the account's email (asked when not given)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin, not the terminal")
    command("logout", commands.logout, "forget the stored login for this server")
    command("whoami", commands.whoami, "who the stored login is (GET /v1/me)")
    p = command("events", commands.events, "the events you organize (all of them for admins)")
    p.add_argument("--page-size", type=_page_size, metavar="N", help="items per request (1..200; every page is read)")

    p = command("export", commands.export, "export an event; prints the task id, or waits with --wait")
    p.add_argument("event", type=_positive, metavar="EVENT", help="the event id")
    p.add_argument("--format", default="json", help="export format (default json; eventport formats lists them)")
    p.add_argument("--media", type=_media, default=[], metavar="LIST",
                   help="media to include: image,audio,video,document (comma-separated) or all")
    p.add_argument("--storage", metavar="ID", help="storage backend id (eventport backends lists them)")
    p.add_argument("--wait", action="store_true", help="wait for the export with a progress bar")
    p.add_argument("--out", metavar="FILE", help="then download the archive to FILE (implies --wait)")
    p.add_argument("--limit-rate", type=_rate, metavar="RATE", help="download at most RATE bytes/s (200k, 1M)")

    p = command("exports", commands.exports, "an event's exports, newest first: task, format, state, size")
    p.add_argument("event", type=_positive, metavar="EVENT", help="the event id")
    p.add_argument("--page-size", type=_page_size, metavar="N", help="items per request (1..200; every page is read)")

    p = command("import", commands.import_command, "import an archive (.zip or a folder) or a schedule file")
    p.add_argument("file", metavar="FILE", help="a .zip, a folder of an Open Event archive, or a schedule file")
    p.add_argument("--format", help="import format (default: from the extension; eventport formats lists them)")
    p.add_argument("--strict", action="store_true", help="fail on anything a hand-made archive would get repaired")
    p.add_argument("--wait", action="store_true", help="wait for the import with a progress bar")

    p = command("tasks", commands.tasks, "your exports and imports, newest first (every page)")
    p.add_argument("--kind", choices=("export", "import"))
    p.add_argument("--state", choices=("WAITING", "SUCCESS", "FAILURE"), type=str.upper)
    p.add_argument("--event", type=_positive, metavar="EVENT", help="only tasks of this event id")
    p.add_argument("--page-size", type=_page_size, metavar="N", help="items per request (1..200; every page is read)")

    p = command("task", commands.task, "one task: state, progress and result")
    p.add_argument("task", metavar="TASK", help="task id or task URL")

    p = command("download", commands.download_command, "download a finished export (resumes FILE.part)")
    p.add_argument("task", metavar="TASK", help="task id or task URL of the export")
    p.add_argument("--out", metavar="FILE", help="where to save it (default: the archive's own name)")
    p.add_argument("--wait", action="store_true", help="wait for the export to finish first")
    p.add_argument("--limit-rate", type=_rate, metavar="RATE", help="at most RATE bytes/s (200k, 1M)")

    command("backends", commands.backends, "the storage backends an export may name with --storage")
    command("formats", commands.formats, "the export formats")
    return parser


def _context(args: argparse.Namespace) -> commands.Context:
    url = (args.url or os.environ.get("EVENTPORT_URL") or DEFAULT_URL).rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        raise CliError(f"EVENTPORT_URL is not an http:// or https:// URL: {url!r}", USAGE, "usage")
    credentials = Credentials(config_dir())
    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    report = Reporter(bars=terminal and not (args.json or args.quiet), notes=not (args.json or args.quiet))
    wide = None if sys.stdout.isatty() else 1000  # piped tables are not folded at 80 columns
    out = Output(args.json, Console(highlight=False, soft_wrap=True, width=wide))
    return commands.Context(args=args, api=Api(url, credentials.token(url)), credentials=credentials, out=out,
                            report=report)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    if not hasattr(args, "limit_rate"):
        args.limit_rate = None
    try:
        ctx = _context(args)
        return args.handler(ctx)
    except CliError as exc:
        if args.json:
            Output(True).document(exc.as_json())
        print(exc.line(), file=sys.stderr)
        for line in exc.details:
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"eventport: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return INTERRUPTED
    except requests.RequestException as exc:
        print(f"eventport: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if os.environ.get("EVENTPORT_DEBUG"):
            traceback.print_exc()
        print(f"eventport: internal error: {type(exc).__name__}: {exc} (EVENTPORT_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return FAILED
