"""Admin pages against 1,000,000 messages in PostgreSQL: the spending console, the user list, the message list.

    .venv/bin/python bench/admin_bench.py             # 1,000,000 messages, 1,000 users, 5 timed runs a page
    .venv/bin/python bench/admin_bench.py --quick     # 20,000 messages: a smoke run of the bench itself
    .venv/bin/python bench/admin_bench.py --keep      # leave PostgreSQL running: it prints how to time again

The budget (DESIGN.md, "Performance budget"): admin spending pages under 1 s
with 1,000,000 messages. A throwaway PostgreSQL is started as scripts/test.sh
starts one, unless DATABASE_URL names an empty database to fill (it is
migrated and loaded; do not point it at data you keep) or one this bench
filled before (then it only times the pages again).

Messages and the ledger are written with SQL (INSERT ... SELECT over
generate_series), users and chats with bulk_create; never the ORM row by row.
Chats spread over a year in time order (a few users have most of them),
10 messages a chat, every assistant reply with a UsageRecord, a summary
call for every fourth chat, and DailyUsage summed from those records as
budget_settle keeps it. Then VACUUM ANALYZE.

Each page is fetched in-process with Django's test Client, logged in as a
superuser, DEBUG off: one warm-up, then --runs timed fetches; the median is the
figure. One more fetch counts the queries and keeps the slowest one, and its
EXPLAIN ANALYZE is printed for a page over budget. A table is printed and the
figures written to bench/results/admin-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
BUDGET_MS = 1000.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine_busy(seconds: float = 1.0) -> float:
    """The share of all CPUs busy over `seconds`, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(total2 - total, 1)


def quiet_machine(wait_limit: float, threshold: float = 0.25) -> float:
    """Wait up to wait_limit seconds for other work on the machine to calm down; returns the last busy share."""
    deadline = time.monotonic() + wait_limit
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        log(f"  the machine is {busy:.0%} busy with other work; waiting")
        time.sleep(10)
        busy = machine_busy()
    return busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A throwaway cluster, as scripts/test.sh starts one: run as the postgres user when we are root, fsync off."""

    def __init__(self, scratch: Path):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        self.bin = bins[-1] if bins else Path(shutil.which("initdb") or "initdb").parent
        self.dir = scratch / "postgres"
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.started = False

    def _run(self, *args: str, **kwargs) -> None:
        subprocess.run([*self.as_pg, *args], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> str:
        if self.as_pg and subprocess.run(["id", "postgres"], capture_output=True).returncode:
            home = ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
            subprocess.run(["useradd", "--system", "--user-group", *home, "postgres"], check=True)
        self.dir.mkdir(parents=True)
        if self.as_pg:
            for path in (self.dir.parent, self.dir):
                shutil.chown(path, "postgres", "postgres")
        self._run("mkdir", "-m", "700", str(self.dir / "socket"))
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        config = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir / 'socket'}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
        self._run("tee", "-a", str(self.data / "postgresql.conf"), input=config)
        self.started = True
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start"
        )
        password = secrets.token_hex(16)
        self._run(
            str(self.bin / "psql"), "-q", "-h", str(self.dir / "socket"), "-p", str(self.port), "-U", "postgres",
            "-d", "postgres", "-v", "ON_ERROR_STOP=1",
            "-c", f"CREATE ROLE chatsite LOGIN CREATEDB PASSWORD '{password}'",
            "-c", "CREATE DATABASE chatsite OWNER chatsite",
        )  # fmt: skip
        return f"postgres://chatsite:{password}@127.0.0.1:{self.port}/chatsite"

    def stop(self) -> None:
        if self.started:
            stop = [*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            subprocess.run(stop, capture_output=True)
            self.started = False


def django_setup(database_url: str) -> None:
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "testserver",
            "SECRET_KEY": secrets.token_urlsafe(50),
            # Limits for everyone, so the user list's "over 80%" filter has users to find.
            "QUOTA_TOKENS_PER_DAY": "20000",
            "QUOTA_USD_PER_MONTH": "5",
        }
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()


# -- Loading the data -----------------------------------------------------------------------------


def insert_sql(model, written: list[str], select: str) -> tuple[str, list]:
    """INSERT INTO the model's table from `select`, whose /*extra*/ stands for the columns it does not write.

    Those get the model's defaults (as parameters), so the bench keeps up with fields added later.
    """
    from django.db import connection

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key or field.column in written:
            continue
        columns.append(field.column)
        values.append(field.get_db_prep_save(field.get_default(), connection))
    names = ", ".join([*written, *columns])
    return f"INSERT INTO {model._meta.db_table} ({names}) {select.replace('/*extra*/', ', %s' * len(values))}", values


def data_load(users_count: int, messages: int, days: int, chat_length: int) -> dict:
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from django.db.models import Max, Min
    from django.utils import timezone

    from accounts.models import DailyUsage, UsageRecord, User
    from conversations.models import ChatModel, Conversation, Message
    from conversations.services.catalog import catalog_seed

    timings = {}
    rng = random.Random(7)
    started = time.perf_counter()
    catalog_seed()
    ChatModel.objects.update(enabled=True)
    models = {m.model_id: m.pk for m in ChatModel.objects.all()}
    password = make_password("bench-password")
    now = timezone.now()
    with transaction.atomic():
        User.objects.bulk_create(
            User(
                username=f"user{n:05}",
                email=f"user{n:05}@example.com",
                password=password,
                date_joined=now - timedelta(days=days),
                # A tenth have their own, smaller daily limit.
                tokens_per_day=5000 if n % 10 == 0 else None,
            )
            for n in range(users_count)
        )
    user_ids = list(User.objects.order_by("pk").values_list("pk", flat=True))
    User.objects.create_superuser("bench-admin", password="bench-password")

    # Chats spread evenly over `days` days; a few users have most of them (heavy users exist).
    chats = messages // chat_length
    chat_models = rng.choices(
        [models["gpt-4o-mini"], models["gpt-4o"], models["smollm2-135m"]], weights=[70, 25, 5], k=chats
    )
    # In time order, as a live site writes them: ids and table pages follow the clock, which the planner sees.
    starts = sorted(
        now - timedelta(days=rng.randrange(days), seconds=rng.randrange(86400) + 3600) for _ in range(chats)
    )
    conversations = []
    for n, start in enumerate(starts):
        conversations.append(
            Conversation(
                user_id=user_ids[int(len(user_ids) * rng.random() ** 2)],
                title=f"Chat {n}",
                model_id=chat_models[n],
                created_at=start,
                updated_at=start + timedelta(seconds=40 * chat_length),
            )
        )
    with transaction.atomic():
        Conversation.objects.bulk_create(conversations, batch_size=5000)
    timings["users_and_chats_s"] = time.perf_counter() - started

    # chat_length messages a chat, 40 s apart, user and assistant in turn; a reply's prompt grows with the chat.
    started = time.perf_counter()
    written = [
        "conversation_id", "user_id", "role", "content", "status", "model_id", "prompt_tokens",
        "completion_tokens", "cached_tokens", "cost", "usage_estimated", "created_at", "updated_at", "finish_reason",
    ]  # fmt: skip
    select = f"""
        SELECT c.id, c.user_id,
               CASE WHEN mod(k, 2) = 1 THEN 'user' ELSE 'assistant' END,
               repeat(md5((c.id * 100 + k)::text), (2 + mod(c.id + k, 14))::int),
               'complete',
               CASE WHEN mod(k, 2) = 0 THEN c.model_id END,
               p.prompt, p.completion, 0,
               round((p.prompt * m.input_price + p.completion * m.output_price) / 1000000, 8),
               mod(k, 2) = 0 AND mod(c.id + k, 97) = 0,
               c.created_at + k * interval '40 seconds',
               c.created_at + k * interval '40 seconds',
               CASE WHEN mod(k, 2) = 0 THEN 'stop' ELSE '' END
               /*extra*/
        FROM conversations_conversation c
        JOIN conversations_chatmodel m ON m.id = c.model_id
        CROSS JOIN generate_series(1, {chat_length}) AS k
        CROSS JOIN LATERAL (
            SELECT CASE WHEN mod(k, 2) = 0 THEN 120 + k * 110 ELSE 0 END AS prompt,
                   CASE WHEN mod(k, 2) = 0 THEN 40 + mod(c.id * 7 + k * 13, 700) ELSE 0 END AS completion
        ) p
        WHERE c.id BETWEEN %s AND %s
    """
    ids = Conversation.objects.aggregate(first=Min("pk"), last=Max("pk"))
    first, last = ids["first"], ids["last"]
    step = max((last - first + 1) // 10, 1)
    for low in range(first, last + 1, step):
        high = min(low + step - 1, last)
        sql, extra = insert_sql(Message, written, select)
        with connection.cursor() as cursor:
            cursor.execute(sql, [*extra, low, high])
        log(f"  messages: chats up to {high - first + 1:,} of {chats:,}")
    timings["messages_s"] = time.perf_counter() - started

    # The ledger: a record per assistant reply, a summary call for every fourth chat;
    # then the rollup, summed as budget_settle keeps it.
    started = time.perf_counter()
    tz = timezone.get_current_timezone_name()
    written = [
        "user_id", "kind", "model_id", "message_id", "prompt_tokens", "completion_tokens", "cached_tokens", "cost",
        "estimated", "day", "created_at",
    ]  # fmt: skip
    replies = """
        SELECT user_id, 'reply', model_id, id, prompt_tokens, completion_tokens, cached_tokens, cost,
               usage_estimated, (created_at AT TIME ZONE %s)::date, created_at /*extra*/
        FROM conversations_message WHERE role = 'assistant' ORDER BY created_at
    """
    summaries = """
        SELECT c.user_id, 'summary', c.model_id, NULL, 3000, 300, 0,
               round((3000 * m.input_price + 300 * m.output_price) / 1000000, 8), false,
               ((c.created_at + interval '1000 seconds') AT TIME ZONE %s)::date, c.created_at + interval '1000 seconds'
               /*extra*/
        FROM conversations_conversation c JOIN conversations_chatmodel m ON m.id = c.model_id
        WHERE mod(c.id, 4) = 0
    """
    with connection.cursor() as cursor:
        for select in (replies, summaries):
            sql, extra = insert_sql(UsageRecord, written, select)
            cursor.execute(sql, [tz, *extra])
        rollup = """
            SELECT user_id, model_id, day, count(*), sum(prompt_tokens + completion_tokens), sum(cost) /*extra*/
            FROM accounts_usagerecord GROUP BY user_id, model_id, day ORDER BY day
        """
        sql, extra = insert_sql(DailyUsage, ["user_id", "model_id", "day", "calls", "tokens", "cost"], rollup)
        cursor.execute(sql, extra)
    timings["ledger_s"] = time.perf_counter() - started

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


def row_counts() -> dict[str, int]:
    from django.db import connection

    tables = [
        "accounts_user", "conversations_conversation", "conversations_message", "accounts_usagerecord",
        "accounts_dailyusage",
    ]  # fmt: skip
    counts = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        counts["database_size"] = cursor.fetchone()[0]
    return counts


def rollup_matches_ledger() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM accounts_usagerecord) = (SELECT sum(calls) FROM accounts_dailyusage)
               AND (SELECT sum(cost) FROM accounts_usagerecord) = (SELECT sum(cost) FROM accounts_dailyusage)
            """
        )
        return cursor.fetchone()[0]


# -- Timing the pages ---------------------------------------------------------------------------------


def pages_to_time() -> list[tuple[str, str]]:
    from django.contrib import admin
    from django.db.models import Sum
    from django.test import RequestFactory

    from accounts.models import DailyUsage, User, local_today

    today = local_today()
    year = f"start={today - timedelta(days=364)}&end={today}"
    spenders = DailyUsage.objects.values("user__username").annotate(total=Sum("cost")).order_by("-total")
    top_user = spenders.values_list("user__username", flat=True).first()
    pages = [
        ("spending, default 30 days", "/admin/spending/"),
        ("spending, 365 days", f"/admin/spending/?{year}"),
        ("spending, 365 days, top user", f"/admin/spending/?{year}&user={top_user}"),
        ("spending, 365 days, one model", f"/admin/spending/?{year}&model=gpt-4o"),
        ("spending CSV, 365 days", f"/admin/spending/?{year}&format=csv"),
        ("user list", "/admin/accounts/user/"),
    ]
    user_admin = admin.site._registry[User]
    if any(getattr(spec, "parameter_name", None) == "quota" for spec in user_admin.list_filter):
        pages.append(("user list, over 80% of a limit", "/admin/accounts/user/?quota=over80"))
    # Sorted by a usage column, as an operator clicks its heading: ?o= counts the change list's columns.
    request = RequestFactory().get("/admin/accounts/user/")
    request.user = User.objects.get(username="bench-admin")
    columns = user_admin.get_changelist_instance(request).list_display
    for column in ("usd_this_month_of_limit", "tokens_today_of_limit"):
        if column in columns:
            pages.append((f"user list, sorted by {column}", f"/admin/accounts/user/?o=-{columns.index(column)}"))
    pages += [
        ("message list", "/admin/conversations/message/"),
        ("usage record list", "/admin/accounts/usagerecord/"),
        ("daily usage list", "/admin/accounts/dailyusage/"),
        ("admin index", "/admin/"),
    ]
    return pages


def page_time(client, url: str, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def fetch():
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.streaming:
            b"".join(response.streaming_content)
        return response, elapsed

    response, _ = fetch()  # warm-up
    times = [fetch()[1] for _ in range(runs)]
    with CaptureQueriesContext(connection) as queries:
        fetch()
    slowest = max(queries.captured_queries, key=lambda q: float(q["time"]), default=None)
    return {
        "url": url,
        "status": response.status_code,
        "bytes": len(response.content),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs_ms": times,
        "queries": len(queries.captured_queries),
        "sql_ms": sum(float(q["time"]) for q in queries.captured_queries) * 1000,
        "slowest_query_ms": float(slowest["time"]) * 1000 if slowest else 0.0,
        "slowest_query": slowest["sql"] if slowest else "",
    }


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365, help="the data spans this many days up to today")
    parser.add_argument("--chat-length", type=int, default=10, help="messages a chat, user and assistant in turn")
    parser.add_argument("--runs", type=int, default=5, help="timed fetches a page, after one warm-up")
    parser.add_argument("--quick", action="store_true", help="20,000 messages, 100 users, 3 runs")
    parser.add_argument("--wait-quiet", type=float, default=300, help="seconds to wait for a quiet machine")
    parser.add_argument("--explain", action="store_true", help="print the slowest query's plan for every page")
    parser.add_argument("--keep", action="store_true", help="leave the throwaway PostgreSQL running, to time again")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.users, args.runs = 20_000, 100, 3

    scratch = Path(tempfile.mkdtemp(prefix="admin-bench-"))
    postgres = None
    try:
        database_url = os.environ.get("DATABASE_URL", "").strip()
        if not database_url:
            postgres = Postgres(scratch)
            database_url = postgres.start()
            log(f"PostgreSQL on 127.0.0.1:{postgres.port} (data in {postgres.data})")
        django_setup(database_url)
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.urls import resolve

        from accounts.models import User

        resolve("/admin/spending/")  # the site imports: fail now rather than after loading the data
        call_command("migrate", verbosity=0)
        if User.objects.filter(username="bench-admin").exists():
            log("The database has this bench's data already (kept with --keep): timing it again")
            load = {}
        elif User.objects.exists():
            log("The database has users of its own: not a throwaway one. Stopping.")
            return 2
        else:
            log(f"Loading {args.messages:,} messages, {args.users:,} users over {args.days} days")
            load = data_load(args.users, args.messages, args.days, args.chat_length)
        counts = row_counts()
        log(f"Loaded in {sum(load.values()):.1f} s: {counts}")
        consistent = rollup_matches_ledger()
        log(f"DailyUsage sums equal the UsageRecord ledger: {consistent}")

        busy = quiet_machine(args.wait_quiet)
        log(f"Timing the pages (machine {busy:.0%} busy before, load average {os.getloadavg()[0]:.1f})")
        client = Client()
        client.force_login(User.objects.get(username="bench-admin"))
        results = []
        for name, url in pages_to_time():
            try:
                result = {"page": name, **page_time(client, url, args.runs)}
            except Exception as error:  # one broken page still leaves the others' figures
                log(f"  {name}: {error!r}")
                results.append({"page": name, "url": url, "error": repr(error), "status": 500, "over_budget": True})
                continue
            result["over_budget"] = result["median_ms"] > BUDGET_MS
            if result["over_budget"] or args.explain:
                result["plan"] = explain(result["slowest_query"])
            results.append(result)
            log(f"  {name}: {result['median_ms']:.0f} ms (HTTP {result['status']})")

        print()
        print(
            f"{'page':<44} {'median ms':>9} {'min':>7} {'max':>7} {'queries':>7} {'SQL ms':>7} {'slowest':>7}  status"
        )
        for r in results:
            if "error" in r:
                print(f"{r['page']:<44} {r['error'][:80]}")
                continue
            flag = "  OVER 1 s" if r["over_budget"] else ""
            print(
                f"{r['page']:<44} {r['median_ms']:>9.1f} {r['min_ms']:>7.1f} {r['max_ms']:>7.1f} {r['queries']:>7} "
                f"{r['sql_ms']:>7.1f} {r['slowest_query_ms']:>7.1f}  {r['status']}{flag}"
            )
        for r in results:
            if "plan" in r:
                print(f"\n== {r['page']}: slowest query {r['slowest_query_ms']:.1f} ms\n{r['slowest_query'][:2000]}")
                print(r["plan"])

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            server = cursor.fetchone()[0]
        RESULTS.mkdir(parents=True, exist_ok=True)
        output = RESULTS / f"admin-{time.strftime('%Y%m%d-%H%M%S')}.json"
        report = {
            "budget_ms": BUDGET_MS,
            "config": vars(args),
            "postgres": server,
            "cpus": os.cpu_count(),
            "counts": counts,
            "load_s": load,
            "rollup_matches_ledger": consistent,
            "machine_busy_before": busy,
            "load_average_after": os.getloadavg(),
            "pages": results,
        }
        output.write_text(json.dumps(report, indent=2, default=str))
        log(f"Wrote {output.relative_to(REPO)}")
        return 1 if any(r["over_budget"] or r["status"] != 200 for r in results) else 0
    finally:
        if args.keep and postgres:
            log(f"Kept running. Time again:  DATABASE_URL={database_url} {sys.argv[0]}")
            log(f"Stop it:  {' '.join(postgres.as_pg)} {postgres.bin / 'pg_ctl'} -D {postgres.data} stop")
        else:
            if postgres:
                postgres.stop()
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
