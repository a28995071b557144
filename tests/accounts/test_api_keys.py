import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.models import API_KEY_SHOWN, ApiKey, User, local_today
from accounts.services import api_key_authenticate, api_key_create, api_key_revoke
from conversations.models import ChatModel
from tests.conftest import HTMX, PASSWORD, htmx_csrf_token
from tests.dom import parse_html

URL = "/accounts/keys/"


def revoke_url(key: ApiKey) -> str:
    return f"/accounts/keys/{key.pk}/revoke/"


def model(model_id: str) -> ChatModel:
    return ChatModel.objects.get(model_id=model_id)


def tomorrow() -> str:
    return (local_today() + timedelta(days=1)).isoformat()


def places_holding(secret: str) -> list[str]:
    """Every database column, session and admin log entry that holds the secret's hidden part."""
    hidden = secret[API_KEY_SHOWN:]
    found = []
    for model_class in apps.get_models():
        for row in model_class.objects.values():
            found += [f"{model_class._meta.label}.{column}" for column, value in row.items() if hidden in str(value)]
    for session in Session.objects.all():
        if hidden in json.dumps(session.get_decoded()):
            found.append("a session")
    return found


def shown_secret(response) -> str:
    return parse_html(response.content).labelled("New API key").attrs["value"]


def table_rows(page) -> list[dict[str, str]]:
    """The keys table as the user reads it: each row's cell texts by column heading."""
    table = page.find("table", class_="keys")
    headings = [th.text for th in table.find("thead").find_all("th")]
    return [
        dict(zip(headings, [td.text for td in row.find_all("td")], strict=True))
        for row in table.find("tbody").find_all("tr")
    ]


def is_revoked(key: ApiKey) -> bool:
    key.refresh_from_db()
    return key.revoked_at is not None


# --- The page: what it lists ----------------------------------------------------------------------------------


def test_it_lists_the_users_own_keys_newest_first_with_what_tells_them_apart(alice_client, alice, bob):
    now = timezone.now()
    laptop, laptop_secret = api_key_create(user=alice, name="laptop")
    ApiKey.objects.filter(pk=laptop.pk).update(created_at=now - timedelta(days=3))
    api_key_authenticate(secret=laptop_secret, ip="203.0.113.9")
    phone, _ = api_key_create(
        user=alice,
        name="phone",
        expires_at=now + timedelta(days=30),
        allowed_models=[model("gpt-4o-mini"), model("gpt-realtime")],
    )
    ApiKey.objects.filter(pk=phone.pk).update(created_at=now - timedelta(days=2))
    old, _ = api_key_create(user=alice, name="old script", expires_at=now - timedelta(hours=1))
    ApiKey.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=1))
    gone, _ = api_key_create(user=alice, name="lost laptop")
    api_key_revoke(key=gone)
    api_key_create(user=bob, name="bob's key")

    response = alice_client.get(URL)

    assert response.status_code == 200
    rows = table_rows(parse_html(response.content))
    assert [(row["Name"], row["Status"]) for row in rows] == [
        ("lost laptop", "revoked"),
        ("old script", "expired"),
        ("phone", "active"),
        ("laptop", "active"),
    ]
    by_name = {row["Name"]: row for row in rows}
    assert by_name["laptop"]["Key"] == f"{laptop.prefix}…"
    assert by_name["laptop"]["Models"] == "all your models"
    assert by_name["laptop"]["Expires"] == "never"
    assert by_name["laptop"]["Last used"].endswith(" from 203.0.113.9")
    assert by_name["phone"]["Models"] == "GPT Realtime (voice), GPT-4o mini"
    assert by_name["phone"]["Last used"] == "never"
    assert by_name["phone"]["Expires"] == timezone.localtime(now + timedelta(days=30)).strftime("%-d %b %Y, %H:%M")
    assert "bob's key" not in response.content.decode()


def test_the_page_never_shows_the_secret_of_an_existing_key(alice_client, alice):
    _, secret = api_key_create(user=alice, name="laptop")

    response = alice_client.get(URL)

    assert secret[API_KEY_SHOWN:] not in response.content.decode()
    assert not parse_html(response.content).find_all(id="new-key-secret")


def test_the_form_offers_the_enabled_models_the_user_may_use_with_realtime_ones(alice_client, alice):
    page = parse_html(alice_client.get(URL).content)
    offered = [label.text for label in page.find("fieldset").find_all("label")]
    assert offered == [
        "GPT Realtime (voice)",
        "GPT Realtime 2 (voice)",
        "GPT-4o",
        "GPT-4o mini",
        "Text embedding 3 small",
    ]  # not the disabled local model

    alice.allowed_models.set([model("gpt-4o-mini"), model("gpt-realtime"), model("smollm2-135m")])
    page = parse_html(alice_client.get(URL).content)
    offered = [label.text for label in page.find("fieldset").find_all("label")]
    assert offered == ["GPT Realtime (voice)", "GPT-4o mini"]


def test_the_chat_sidebar_links_to_the_keys_page(alice_client):
    page = parse_html(alice_client.get("/").content)

    assert page.find(id="sidebar").find("a", text="API keys").attrs["href"] == URL


# --- Creating a key ------------------------------------------------------------------------------------------------


def test_it_creates_a_key_and_shows_it_once_as_a_working_secret(alice_client, alice):
    response = alice_client.post(
        URL,
        {"name": "laptop", "expires_on": tomorrow(), "allowed_models": [model("gpt-4o").pk, model("gpt-realtime").pk]},
    )

    assert response.status_code == 200  # the key is in this answer, not behind a redirect
    assert "no-store" in response["Cache-Control"]
    page = parse_html(response.content)
    assert "it will not be shown again" in page.find(class_="new-key").text
    secret = shown_secret(response)
    assert "readonly" in page.find(id="new-key-secret").attrs
    key = ApiKey.objects.get()
    assert (key.user, key.name, key.prefix) == (alice, "laptop", secret[:API_KEY_SHOWN])
    assert timezone.localtime(key.expires_at).date().isoformat() == tomorrow()
    assert sorted(key.allowed_models.values_list("model_id", flat=True)) == ["gpt-4o", "gpt-realtime"]
    assert [row["Name"] for row in table_rows(page)] == ["laptop"]
    assert page.labelled("Name").attrs.get("value", "") == ""  # ready for another

    authenticated = api_key_authenticate(secret=secret, ip="1.2.3.4")

    assert authenticated == key
    key.refresh_from_db()
    assert key.last_used_ip == "1.2.3.4"
    assert timezone.now() - key.last_used_at < timedelta(seconds=5)


def test_only_the_hash_of_a_new_key_is_stored(alice_client, alice):
    secret = shown_secret(alice_client.post(URL, {"name": "laptop"}))

    row = ApiKey.objects.filter(user=alice).values().get()
    assert not [column for column, value in row.items() if secret in str(value)]
    assert places_holding(secret) == []


def test_a_new_keys_secret_is_not_shown_again_on_the_page(alice_client):
    secret = shown_secret(alice_client.post(URL, {"name": "laptop"}))

    response = alice_client.get(URL)

    assert secret[API_KEY_SHOWN:] not in response.content.decode()
    assert [row["Name"] for row in table_rows(parse_html(response.content))] == ["laptop"]


def test_htmx_gets_the_fragment_with_the_new_key(alice_client):
    response = alice_client.post(URL, {"name": "laptop"}, headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [("div", "api-keys")]
    assert api_key_authenticate(secret=shown_secret(response), ip="1.2.3.4") == ApiKey.objects.get()
    assert [row["Name"] for row in table_rows(fragment)] == ["laptop"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"name": "  "}, "A key needs a name."),
        ({"name": "x" * 101}, "Ensure this value has at most 100 characters (it has 101)."),
        ({"name": "laptop", "expires_on": "2020-01-01"}, "The expiry date must be in the future."),
        ({"name": "laptop", "expires_on": "today"}, "Enter a valid date."),
        ({"name": "laptop", "allowed_models": ["smollm2-135m"]}, "Select a valid choice."),
        ({"name": "laptop", "allowed_models": ["gpt-4o"]}, "Select a valid choice."),
    ],
    ids=["blank-name", "long-name", "past-expiry", "bad-date", "disabled-model", "model-not-allowed"],
)
def test_it_refuses_bad_input_with_the_reason_and_creates_nothing(alice_client, alice, data, reason):
    alice.allowed_models.set([model("gpt-4o-mini")])
    data = data | {"allowed_models": [model(model_id).pk for model_id in data.get("allowed_models", [])]}

    response = alice_client.post(URL, data)

    assert response.status_code == 400
    form = parse_html(response.content).find("form", class_="key-create")
    errors = [alert.text for alert in form.find_all(role="alert")]
    assert any(error.startswith(reason) for error in errors), errors
    assert not parse_html(response.content).find_all(id="new-key-secret")
    assert not ApiKey.objects.exists()


def test_an_expiry_of_today_is_refused(alice_client):
    response = alice_client.post(URL, {"name": "laptop", "expires_on": local_today().isoformat()})

    assert response.status_code == 400
    assert not ApiKey.objects.exists()


def test_htmx_gets_the_reason_a_key_was_refused(alice_client):
    response = alice_client.post(URL, {"name": ""}, headers=HTMX)

    assert response.status_code == 400  # the page's htmx config swaps 4xx answers in
    fragment = parse_html(response.content)
    assert b"<html" not in response.content
    assert fragment.find("form", class_="key-create").find(role="alert").text == "A key needs a name."
    assert not ApiKey.objects.exists()


def test_a_refused_key_keeps_what_was_typed(alice_client):
    response = alice_client.post(
        URL, {"name": "laptop", "expires_on": "2020-01-01", "allowed_models": [model("gpt-4o").pk]}
    )

    page = parse_html(response.content)
    assert page.labelled("Name").attrs["value"] == "laptop"
    assert "checked" in page.labelled("GPT-4o").attrs


# --- Revoking a key ------------------------------------------------------------------------------------------------


def test_revoking_a_key_stops_it_working_at_once(alice_client, alice):
    key, secret = api_key_create(user=alice, name="laptop")
    other, other_secret = api_key_create(user=alice, name="phone")

    response = alice_client.post(revoke_url(key), follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") is None
    assert api_key_authenticate(secret=other_secret, ip="1.2.3.4") == other
    page = parse_html(response.content)
    assert {row["Name"]: row["Status"] for row in table_rows(page)} == {"laptop": "revoked", "phone": "active"}
    assert not page.find_all("form", action=revoke_url(key))
    assert page.find("form", action=revoke_url(other))


def test_revoking_asks_for_confirmation_first(alice_client, alice):
    key, _ = api_key_create(user=alice, name="laptop")

    form = parse_html(alice_client.get(URL).content).find("form", action=revoke_url(key))

    assert form.attrs["hx-post"] == revoke_url(key)
    assert "laptop" in form.attrs["hx-confirm"]
    assert form.find("button").text == "Revoke laptop"


def test_htmx_revoke_gets_the_list_only(alice_client, alice):
    key, secret = api_key_create(user=alice, name="laptop")

    response = alice_client.post(revoke_url(key), headers=HTMX)

    assert response.status_code == 200
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [("section", "api-key-list")]
    assert table_rows(fragment)[0]["Status"] == "revoked"
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") is None


def test_it_rejects_other_users_key(alice_client, bob):
    bobs, secret = api_key_create(user=bob, name="bob's key")

    response = alice_client.post(revoke_url(bobs))

    assert response.status_code == 404
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") == bobs


def test_an_unknown_key_is_a_404(alice_client):
    assert alice_client.post("/accounts/keys/999999/revoke/").status_code == 404


# --- Keys that no longer work ----------------------------------------------------------------------------------


def test_revoked_and_expired_keys_do_not_authenticate(alice):
    revoked, revoked_secret = api_key_create(user=alice, name="revoked")
    api_key_revoke(key=revoked)
    _, expired_secret = api_key_create(user=alice, name="expired", expires_at=timezone.now() - timedelta(seconds=1))

    assert api_key_authenticate(secret=revoked_secret, ip="1.2.3.4") is None
    assert api_key_authenticate(secret=expired_secret, ip="1.2.3.4") is None
    assert ApiKey.objects.filter(last_used_at__isnull=False).count() == 0


def test_a_key_expiring_on_a_day_works_until_that_day(alice_client, alice):
    secret = shown_secret(alice_client.post(URL, {"name": "laptop", "expires_on": tomorrow()}))
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") is not None

    key = ApiKey.objects.get()
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))  # tomorrow came

    assert api_key_authenticate(secret=secret, ip="1.2.3.4") is None
    assert table_rows(parse_html(alice_client.get(URL).content))[0]["Status"] == "expired"


# --- The view checklist --------------------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login(alice, catalog):
    key, secret = api_key_create(user=alice, name="laptop")
    client = Client()

    page = client.get(URL)
    create = client.post(URL, {"name": "sneaky"})
    revoke = client.post(revoke_url(key))

    assert (page.status_code, page["Location"]) == (302, f"/accounts/login/?next={URL}")
    assert (create.status_code, create["Location"]) == (302, f"/accounts/login/?next={URL}")
    assert (revoke.status_code, revoke["Location"]) == (302, f"/accounts/login/?next={revoke_url(key)}")
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["laptop"]
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") == key


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_the_page_allows_only_get_and_post(alice_client, method):
    assert getattr(alice_client, method)(URL).status_code == 405


def test_revoke_by_get_is_not_allowed(alice_client, alice):
    key, _ = api_key_create(user=alice, name="laptop")

    assert alice_client.get(revoke_url(key)).status_code == 405
    assert not is_revoked(key)


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_creating_requires_the_csrf_token(alice_csrf_client, headers):
    alice_csrf_client.get(URL)  # the CSRF cookie, without the token

    response = alice_csrf_client.post(URL, {"name": "forged"}, headers=headers)

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_revoking_requires_the_csrf_token(alice_csrf_client, alice, headers):
    key, _ = api_key_create(user=alice, name="laptop")
    alice_csrf_client.get(URL)

    response = alice_csrf_client.post(revoke_url(key), headers=headers)

    assert response.status_code == 403
    assert not is_revoked(key)


def test_htmx_creates_and_revokes_with_the_token_the_page_hands_it(alice_csrf_client):
    token = htmx_csrf_token(alice_csrf_client.get(URL))
    headers = HTMX | {"X-CSRFToken": token}

    created = alice_csrf_client.post(URL, {"name": "laptop"}, headers=headers)
    key = ApiKey.objects.get()
    revoked = alice_csrf_client.post(revoke_url(key), headers=headers)

    assert (created.status_code, revoked.status_code) == (200, 200)
    assert is_revoked(key)


def test_without_javascript_the_forms_work(alice_csrf_client):
    page = parse_html(alice_csrf_client.get(URL).content)
    form = page.find("form", class_="key-create")

    created = alice_csrf_client.post(form.attrs["action"], form.form_data() | {"name": "laptop"})

    assert created.status_code == 200
    key = ApiKey.objects.get()
    revoke_form = parse_html(created.content).find("form", action=revoke_url(key))
    revoked = alice_csrf_client.post(revoke_form.attrs["action"], revoke_form.form_data())
    assert revoked.status_code == 302
    assert is_revoked(key)


# --- Admin ---------------------------------------------------------------------------------------------------------

ADMIN = "/admin/accounts/apikey/"


@pytest.fixture
def staff_client(db, catalog) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))
    return client


def admin_rows(response) -> list[dict[str, str]]:
    table = parse_html(response.content).find("table", id="result_list")
    headings = [(th.find_all(class_="text") or [th])[0].text for th in table.find("thead").find_all("th")]
    return [
        dict(zip(headings, [cell.text for cell in row.iter() if cell.tag in {"th", "td"}], strict=True))
        for row in table.find("tbody").find_all("tr")
    ]


def test_staff_see_every_users_keys_with_status_and_never_the_hash(staff_client, alice, bob):
    laptop, secret = api_key_create(user=alice, name="laptop")
    api_key_authenticate(secret=secret, ip="203.0.113.9")
    gone, _ = api_key_create(user=bob, name="bob's old key")
    api_key_revoke(key=gone)

    response = staff_client.get(ADMIN)

    assert response.status_code == 200
    rows = {row["Name"]: row for row in admin_rows(response)}
    assert rows["laptop"]["User"] == "alice"
    assert rows["laptop"]["Key"] == f"{laptop.prefix}…"
    assert rows["laptop"]["Last used ip"] == "203.0.113.9"
    assert (rows["laptop"]["Status"], rows["bob's old key"]["Status"]) == ("active", "revoked")
    assert laptop.key_hash not in response.content.decode()
    revoked_only = admin_rows(staff_client.get(ADMIN, {"status": "revoked"}))
    assert [row["Name"] for row in revoked_only] == ["bob's old key"]


def test_staff_create_a_key_for_a_user_and_see_it_once(staff_client, alice):
    add_page = parse_html(staff_client.get(f"{ADMIN}add/").content)
    assert {"user", "name", "expires_at_0", "allowed_models"} <= {el.attrs.get("name") for el in add_page.iter()}
    assert not add_page.find_all(name="key_hash") and not add_page.find_all(name="prefix")

    response = staff_client.post(
        f"{ADMIN}add/",
        {"user": alice.pk, "name": "alice's script", "allowed_models": [model("gpt-4o-mini").pk]},
    )

    assert response.status_code == 200
    page = parse_html(response.content)
    assert "will not be shown again" in page.text
    secret = page.find(id="new-key-secret").attrs["value"]
    key = api_key_authenticate(secret=secret, ip="1.2.3.4")
    assert (key.user, key.name) == (alice, "alice's script")
    assert list(key.allowed_models.values_list("model_id", flat=True)) == ["gpt-4o-mini"]
    assert places_holding(secret) == []  # nor the session, nor the admin's log
    assert not [cookie for cookie in response.cookies.values() if secret[API_KEY_SHOWN:] in cookie.value]
    for later in (ADMIN, f"{ADMIN}{key.pk}/change/"):
        assert secret[API_KEY_SHOWN:] not in staff_client.get(later).content.decode()


def test_staff_cannot_give_a_key_a_past_expiry_or_models_the_user_may_not_use(staff_client, alice):
    alice.allowed_models.set([model("gpt-4o-mini")])

    response = staff_client.post(
        f"{ADMIN}add/",
        {
            "user": alice.pk,
            "name": "script",
            "expires_at_0": "2020-01-01",
            "expires_at_1": "00:00:00",
            "allowed_models": [model("gpt-4o").pk],
        },
    )

    assert response.status_code == 200  # the admin's own answer to a refused form
    errors = parse_html(response.content).find_all(class_="errorlist")
    assert "The expiry must be in the future." in [error.text for error in errors]
    assert "alice may not use: GPT-4o." in [error.text for error in errors]
    assert not ApiKey.objects.exists()


def test_staff_revoke_selected_keys_with_the_action(staff_client, alice, bob):
    first, first_secret = api_key_create(user=alice, name="laptop")
    second, second_secret = api_key_create(user=bob, name="phone")
    kept, kept_secret = api_key_create(user=alice, name="kept")

    response = staff_client.post(ADMIN, {"action": "revoke", "_selected_action": [first.pk, second.pk]}, follow=True)

    assert response.status_code == 200
    assert "Revoked 2 keys." in parse_html(response.content).find(class_="messagelist").text
    assert api_key_authenticate(secret=first_secret, ip="1.2.3.4") is None
    assert api_key_authenticate(secret=second_secret, ip="1.2.3.4") is None
    assert api_key_authenticate(secret=kept_secret, ip="1.2.3.4") == kept


def test_the_change_page_does_not_edit_the_hash_or_prefix(staff_client, alice):
    key, secret = api_key_create(user=alice, name="laptop")
    url = f"{ADMIN}{key.pk}/change/"

    page = parse_html(staff_client.get(url).content)
    assert not page.find_all(name="prefix")
    assert key.key_hash not in page.text

    response = staff_client.post(
        url, {"name": "renamed", "prefix": "csk-forged", "key_hash": "0" * 64, "user": 999, "expires_at_0": ""}
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.user, key.prefix) == ("renamed", alice, secret[:API_KEY_SHOWN])
    assert api_key_authenticate(secret=secret, ip="1.2.3.4") == key
