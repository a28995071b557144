"""gpt-realtime-2, the realtime clients' default model (the Realtime seed's), is in the catalog and is the site's
default for a mint that names no model; gpt-realtime stays."""

import json

import pytest
from django.apps import apps
from django.db.migrations.loader import MigrationLoader
from django.test import AsyncClient

from accounts.models import RealtimeSecret
from accounts.services import api_key_create
from conversations.models import ChatModel

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/realtime/client_secrets"


@pytest.fixture
def secret(alice, catalog):
    return api_key_create(user=alice, name="voice app")[1]


def mint(body: dict, secret: str):
    return AsyncClient().post(
        URL, json.dumps(body), content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )


@pytest.mark.parametrize("body", [{}, {"session": {"type": "realtime"}}], ids=["empty", "no-model"])
async def test_a_mint_that_names_no_model_gets_gpt_realtime_2(secret, upstream, body):
    response = await mint(body, secret)

    assert response.status_code == 200
    assert response.json()["session"] == {"type": "realtime", "model": "gpt-realtime-2"}
    assert upstream.requests[0].json["session"]["model"] == "gpt-realtime-2"
    assert await RealtimeSecret.objects.filter(model__model_id="gpt-realtime-2").aexists()


@pytest.mark.parametrize("model", ["gpt-realtime-2", "gpt-realtime"])
async def test_the_realtime_clients_models_are_both_served(secret, upstream, model):
    """The Flutter realtime client sends gpt-realtime-2 by default; older apps send gpt-realtime."""
    response = await mint({"session": {"type": "realtime", "model": model}}, secret)

    assert response.status_code == 200
    assert response.json()["session"]["model"] == model


async def test_the_default_is_a_setting(secret, upstream, settings):
    settings.REALTIME_DEFAULT_MODEL = "gpt-realtime"

    response = await mint({}, secret)

    assert response.json()["session"]["model"] == "gpt-realtime"


def test_gpt_realtime_2_is_seeded_for_voice_never_for_the_chat(catalog):
    seeded = ChatModel.objects.get(model_id="gpt-realtime-2")

    assert (seeded.realtime, seeded.enabled, seeded.context_window) == (True, True, 128_000)
    assert not ChatModel.objects.for_chat().filter(model_id__startswith="gpt-realtime").exists()


def add_gpt_realtime_2():
    """Run the catalog's data migration again, as on a site seeded before it."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    (migration,) = [
        m for (app, name), m in loader.disk_migrations.items() if app == "conversations" and "gpt_realtime_2" in name
    ]
    migration.operations[0].code(apps, None)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_migration_adds_it_to_a_seeded_catalog_enabled_as_gpt_realtime_is(catalog, enabled):
    ChatModel.objects.filter(model_id="gpt-realtime-2").delete()  # a catalog seeded before it existed
    ChatModel.objects.filter(model_id="gpt-realtime").update(enabled=enabled, input_price=5)

    add_gpt_realtime_2()
    add_gpt_realtime_2()  # and only once

    added = ChatModel.objects.get(model_id="gpt-realtime-2")
    assert (added.realtime, added.enabled, added.input_price, added.output_price) == (True, enabled, 4, 16)
    assert ChatModel.objects.get(model_id="gpt-realtime").input_price == 5  # the admin's edit is kept


def test_the_migration_leaves_an_empty_catalog_to_seedcatalog(db):
    add_gpt_realtime_2()

    assert not ChatModel.objects.exists()
