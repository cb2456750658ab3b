"""Operator commands: ``python -m tools.cli <command>`` (run ``--help`` for the list)."""

from __future__ import annotations

import argparse
import sys
import warnings
import zipfile
from pathlib import Path

from sqlalchemy import select

from shared import event_roles
from shared.config import load_settings
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models.events import EVENT_ROLES, EventRole, User

# eventlet (imported lazily via nameko by some commands) announces its deprecation; operators need not see it.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def _session():  # noqa: ANN202
    return make_session_factory(make_engine(load_settings().database_url))()


_email = event_roles.normal_email


def _user(session, email: str) -> User | None:  # noqa: ANN001
    return session.scalar(select(User).where(User.email == email))


def _known_user(session, email: str) -> User:  # noqa: ANN001
    """The user with ``email``; if there is none, says so on stderr and exits with status 1."""
    user = _user(session, email)
    if user is None:
        print(f"no user {email}", file=sys.stderr)
        raise SystemExit(1)
    return user


def cmd_migrate(_args: argparse.Namespace) -> int:
    upgrade_to_head(load_settings().database_url)
    print("database at the latest migration")
    return 0


def cmd_wait_migrated(args: argparse.Namespace) -> int:
    """Until the database is at this code's migration head (a Deployment's init container: the migration Job of the
    same release runs meanwhile); exits 1 after ``--timeout`` seconds, so the pod retries and says why."""
    import time

    from shared.db import migration_status

    engine = make_engine(load_settings().database_url, pool_size=1)
    deadline = time.monotonic() + args.timeout
    state = "not checked yet"
    while True:
        try:
            current, head = migration_status(engine)
            if current == head:
                print(f"database at the migration head {head}")
                return 0
            state = f"at {current}, head is {head}"
        except Exception as exc:  # database not reachable yet: the same as not migrated, for a while
            state = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            print(f"database not migrated after {args.timeout:g} s ({state}): has the migration Job run?",
                  file=sys.stderr)
            return 1
        time.sleep(args.interval)


def cmd_create_user(args: argparse.Namespace) -> int:
    from shared.passwords import hash_password

    email = args.email
    with _session() as session:
        user = _user(session, email)
        if user is not None and not args.update:
            print(f"user {email} already exists (use --update to change the password or admin flag)", file=sys.stderr)
            return 1
        if user is None:
            user = User(email=email, password_hash="")
            session.add(user)
        user.password_hash = hash_password(args.password)
        user.is_admin = args.admin
        session.commit()
        print(f"user {user.id} {email}{' (admin)' if user.is_admin else ''}")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    """A new password: the hash gets a new salt, so every token issued before stops working."""
    from shared.passwords import hash_password

    with _session() as session:
        _known_user(session, args.email).password_hash = hash_password(args.password)
        session.commit()
    print(f"password of {args.email} changed; tokens issued before no longer work")
    return 0


def cmd_delete_user(args: argparse.Namespace) -> int:
    with _session() as session:
        user = _known_user(session, args.email)
        session.query(EventRole).filter(EventRole.user_id == user.id).delete()
        session.delete(user)
        session.commit()
    # Ids are never reused (users.id AUTOINCREMENT): the deleted user's tokens never match anyone again.
    print(f"user {user.id} {args.email} deleted")
    return 0


def cmd_reseal_secrets(_args: argparse.Namespace) -> int:
    import os

    from shared.config import SECRET_FILE_NAME
    from shared.models import webhooks
    from shared.models.storage import reseal_secrets

    if not os.environ.get("SECRETS_ENCRYPTION_KEYS") and not os.environ.get("SECRET_KEY"):
        # The key must be the storage service's: with `make run` that is the SECRET_KEY kept in var/.
        path = load_settings().var_dir / SECRET_FILE_NAME
        if not path.exists():
            print("set SECRETS_ENCRYPTION_KEYS or SECRET_KEY to the storage service's values", file=sys.stderr)
            return 1
        os.environ["SECRET_KEY"] = path.read_text().strip()
    with _session() as session:
        count = reseal_secrets(session)
        hooks = webhooks.reseal_secrets(session)
    print(f"{count} storage backend record(s) encrypted with the first key of SECRETS_ENCRYPTION_KEYS")
    print(f"{hooks} webhook secret(s) encrypted with the first key of SECRETS_ENCRYPTION_KEYS")
    return 0


def _user_id(session, email: str | None) -> int | None:  # noqa: ANN001
    if email is None:
        return None
    user_id = session.scalar(select(User.id).where(User.email == _email(email)))
    if user_id is None:
        raise SystemExit(f"no user {email}: create it first with 'python -m tools.cli create-user'")
    return user_id


def cmd_grant(args: argparse.Namespace) -> int:
    """The same change as ``POST /v1/events/{id}/roles`` (``shared/event_roles.py``), without the HTTP rules."""
    with _session() as session:
        try:
            _, created = event_roles.grant(session, args.event_id, args.email, args.role)
        except event_roles.RoleError as exc:
            print(exc, file=sys.stderr)
            return 1
        session.commit()
    print(f"{args.email} is {'now' if created else 'already'} {args.role} of event {args.event_id}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """``DELETE /v1/events/{id}/roles/{user}``: refused for the event's last organizer, as over HTTP."""
    with _session() as session:
        try:
            removed = event_roles.revoke(session, args.event_id, _user_id(session, args.email), args.role)
        except event_roles.RoleError as exc:
            print(exc, file=sys.stderr)
            return 1
        session.commit()
    print(f"{args.email}: {removed} role(s) of event {args.event_id} removed")
    return 0


MEDIA_FOLDERS = ("images", "slides", "audios", "videos")  # the legacy layout's media members


def media_files(path: Path) -> int:
    """How many files an archive folder or zip holds in its media folders (also under one top-level folder)."""
    if path.is_dir():
        roots = [path, *(p for p in path.iterdir() if p.is_dir() and p.name not in MEDIA_FOLDERS)]
        return sum(1 for root in roots for folder in MEDIA_FOLDERS for f in (root / folder).rglob("*") if f.is_file())
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename.split("/") for info in archive.infolist() if not info.is_dir()]
    except (OSError, zipfile.BadZipFile):
        return 0
    return sum(1 for parts in names if parts[0] in MEDIA_FOLDERS or (len(parts) > 2 and parts[1] in MEDIA_FOLDERS))


def cmd_load_event(args: argparse.Namespace) -> int:
    from shared.archive.loader import LoadError, load_archive

    path = Path(args.path)
    try:
        with _session() as session:
            # The hardened reader, as an import uses: limits, variants, validation before anything is written.
            result = load_archive(session, path, keep_ids=args.keep_ids, owner_user_id=_user_id(session, args.owner))
            session.commit()
    except LoadError as exc:
        print(f"cannot load {path}: {exc}", file=sys.stderr)
        return 1
    print(f"event {result.event_id} loaded: " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())))
    skipped = media_files(path)
    if skipped:
        # The loader writes the database only; re-hosting media needs the running storage service (the import API).
        print(f"note: the {skipped} media files of the archive ({', '.join(f + '/' for f in MEDIA_FOLDERS)}) were not "
              "loaded: media fields keep their archive paths, so exports cannot include them. To load an archive "
              "with its media, import it: POST /v1/events/import/json (README, 'Try it').", file=sys.stderr)
    return 0


def cmd_demo_event(args: argparse.Namespace) -> int:
    from tools.synthetic import create_synthetic_event

    with _session() as session:
        event_id = create_synthetic_event(session, sessions=args.sessions, owner_user_id=_user_id(session, args.owner))
        session.commit()
    print(f"event {event_id} created with {args.sessions} sessions")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="upgrade the platform database to the latest migration").set_defaults(
        func=cmd_migrate)

    p = sub.add_parser("wait-migrated", help="wait until the database is at the latest migration (init containers)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait before exiting 1")
    p.add_argument("--interval", type=float, default=2, help="seconds between checks")
    p.set_defaults(func=cmd_wait_migrated)
    p = sub.add_parser("create-user", help="create a user (or update one with --update)")
    p.add_argument("--email", type=_email, required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--admin", action="store_true", help="global admin: may see and export every event")
    p.add_argument("--update", action="store_true")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("set-password", help="change a user's password (its existing tokens stop working)")
    p.add_argument("--email", type=_email, required=True)
    p.add_argument("--password", required=True)
    p.set_defaults(func=cmd_set_password)

    p = sub.add_parser("delete-user", help="delete a user and its event roles (its tokens stop working)")
    p.add_argument("--email", type=_email, required=True)
    p.set_defaults(func=cmd_delete_user)

    sub.add_parser("reseal-secrets", help="re-encrypt storage backend secrets with the newest key (after adding "
                   "one to SECRETS_ENCRYPTION_KEYS, or for rows stored in plain text)").set_defaults(
        func=cmd_reseal_secrets)

    p = sub.add_parser("grant", help="make a user organizer or co-organizer of an event")
    p.add_argument("--email", required=True)
    p.add_argument("--event-id", type=int, required=True)
    p.add_argument("--role", choices=EVENT_ROLES, default="organizer")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("revoke", help="remove a user's role (or all roles) in an event; never its last organizer")
    p.add_argument("--email", required=True)
    p.add_argument("--event-id", type=int, required=True)
    p.add_argument("--role", choices=EVENT_ROLES, default=None, help="default: every role of the user")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("load-event", help="load an Open Event archive (folder or zip) into the database, without its "
                                          "media (the import API re-hosts media)")
    p.add_argument("path")
    p.add_argument("--owner", help="email of the user who becomes the event's organizer")
    p.add_argument("--keep-ids", action="store_true",
                   help="keep the archive's ids (fails if they are taken); default: new ids")
    p.set_defaults(func=cmd_load_event)

    p = sub.add_parser("demo-event", help="create a synthetic event (for trying the system and for benchmarks)")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--owner", help="email of the user who becomes the event's organizer")
    p.set_defaults(func=cmd_demo_event)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
