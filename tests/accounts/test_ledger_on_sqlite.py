"""The embedded default (SQLite, no DATABASE_URL) keeps the same books: the ledger's written-out statements
(accounts/billing/ledger_sql.py) run there too.

The rest of the suite runs on PostgreSQL; this runs `manage.py` in a fresh process on a new SQLite database,
as `make run` does on a laptop.
"""

import json
from pathlib import Path

from tests.test_deploy_check import manage

SCRIPT = """
import json, uuid
from accounts.billing.budget import QuotaExceeded, budget_reserve, budget_settle, usage_summary
from accounts.models import DailyUsage, Reservation, User
from conversations.models import ChatModel

user = User.objects.create(username="ada", tokens_per_day=2_000, usd_per_month=1)
mini = ChatModel.objects.get(model_id="gpt-4o-mini")
first = budget_reserve(user_id=user.pk, model=mini, prompt_tokens=100, max_tokens=900)
second = budget_reserve(user_id=user.pk, model=mini, prompt_tokens=100, max_tokens=900)
try:
    budget_reserve(user_id=user.pk, model=mini, prompt_tokens=100, max_tokens=900)
    refused = ""
except QuotaExceeded as exceeded:
    refused = exceeded.code
call = uuid.uuid4()
settle = dict(user_id=user.pk, model=mini, kind="api", prompt_tokens=90, completion_tokens=310, call_id=call)
billed = budget_settle(reservation_id=first.reservation_id, **settle)
again = budget_settle(reservation_id=None, **settle)
budget_settle(reservation_id=second.reservation_id, **settle | {"call_id": None, "cached_tokens": 50})
summary = usage_summary(user=user)
third = budget_reserve(user_id=user.pk, model=mini, prompt_tokens=100, max_tokens=900)
rollup = DailyUsage.objects.get(user=user)
print(json.dumps({
    "granted": [first.max_tokens, second.max_tokens, third.max_tokens],
    "refused": refused,
    "billed": str(billed.cost),
    "billed_again": again is not None,
    "held": Reservation.objects.filter(user=user).count(),
    "tokens_today": summary.tokens_today,
    "usd_this_month": str(summary.usd_this_month),
    "expected_usd": str(
        mini.prices().cost(prompt_tokens=90, completion_tokens=310)
        + mini.prices().cost(prompt_tokens=90, completion_tokens=310, cached_tokens=50)
    ),
    "rollup": [rollup.calls, rollup.tokens, str(rollup.cost)],
}))
"""


def manage_ok(tmp_path: Path, *args: str) -> str:
    """`manage.py ARGS` with no DATABASE_URL (so on SQLite under tmp_path), its output; it must succeed."""
    result = manage(tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_reserving_settling_and_refusing_keep_the_books_on_sqlite(tmp_path):
    manage_ok(tmp_path, "migrate", "--verbosity", "0")
    manage_ok(tmp_path, "seedcatalog")

    books = json.loads(manage_ok(tmp_path, "shell", "--no-imports", "--command", SCRIPT).splitlines()[-1])

    # 2,000 tokens a day: two calls of 1,000 each fit, a third does not until they settle to 400 each.
    assert books["refused"] == "tokens_per_day"
    assert books["granted"] == [900, 900, 900]
    assert not books["billed_again"], "the same call id was billed twice"
    assert books["held"] == 1  # the third call's
    assert books["tokens_today"] == 800
    assert books["usd_this_month"] == books["expected_usd"]
    assert books["rollup"] == [2, 800, books["expected_usd"]]
