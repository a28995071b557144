"""Images attached to a message: checked, stored under MEDIA_ROOT, shown to their owner only, sent to the model as
image parts of their message, counted in the reply's reservation, and gone with their chat."""

import base64
import html
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from accounts.billing.image_tokens import image_size
from accounts.billing.prompt_bound import prompt_tokens_bound
from accounts.models import User
from conversations import views
from conversations.models import ChatModel, Conversation, Message, MessageImage
from conversations.services import chats
from tests.conftest import HTMX, PASSWORD, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Reply
from tests.images import BMP_IMAGE, png_image

pytestmark = pytest.mark.django_db(transaction=True)

PICTURE = png_image(40, 30)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(name: str = "cat.png", data: bytes = PICTURE, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def stored_files(media_root) -> list:
    return sorted(path for path in media_root.rglob("*") if path.is_file()) if media_root.exists() else []


async def latest_reply() -> Message:
    return await Message.objects.filter(role=Message.Role.ASSISTANT).alast()


async def send(client: AsyncClient, text: str, images=(), chat: int | None = None, **fields) -> Message:
    """Send a message (with images) and read its reply to the end; the reply."""
    path = f"/c/{chat}/messages/" if chat else "/c/new/messages/"
    response = await client.post(path, {"text": text, "images": list(images), **fields})
    assert response.status_code == 302, response.content.decode()[:2000]
    reply = await latest_reply()
    await watch_reply(client, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    await reply.arefresh_from_db()
    return reply


def data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


async def test_the_image_reaches_the_model_as_an_image_part_of_its_message_and_only_of_it(alice_async, upstream):
    upstream.script(Reply(text="Hello."), Reply(text="A red square."), Reply(text="Red."))
    first = await send(alice_async, "Hi")

    await send(alice_async, "What is in this picture?", [upload()], chat=first.conversation_id)
    await send(alice_async, "And its colour?", chat=first.conversation_id)

    picture_turn = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": data_url(PICTURE)}},
        ],
    }
    assert upstream.requests[1].json["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        picture_turn,
    ]
    # Later turns send it again with its message, as history; no other message gets it.
    assert upstream.requests[2].json["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        picture_turn,
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "And its colour?"},
    ]


async def test_the_image_is_stored_under_media_root_per_user_with_what_it_is(alice_async, alice, upstream, media_root):
    upstream.script(Reply(text="A cat."))

    await send(alice_async, "Look", [upload("My Cat.png")])

    image = await MessageImage.objects.select_related("message").aget()
    assert (image.name, image.content_type, image.width, image.height, image.bytes) == (
        "My Cat.png",
        "image/png",
        40,
        30,
        len(PICTURE),
    )
    [path] = stored_files(media_root)
    assert path.parent == media_root / "chat-images" / str(alice.pk)
    assert "Cat" not in path.name and path.suffix == ".png"  # a random name, never the user's
    assert path.read_bytes() == PICTURE
    assert image.message.role == Message.Role.USER


def test_the_type_is_read_from_the_content_not_the_name(alice_client, upstream, media_root):
    upstream.script(Reply(text="A picture."))

    refused = alice_client.post("/c/new/messages/", {"text": "Look", "images": [upload("x.png", BMP_IMAGE)]})
    accepted = alice_client.post(
        "/c/new/messages/", {"text": "Look", "images": [upload("x.bmp", PICTURE, "image/bmp")]}
    )

    assert refused.status_code == 400
    assert "x.png is not a PNG, JPEG, GIF or WebP image." in html.unescape(refused.content.decode())
    assert accepted.status_code == 302
    assert list(MessageImage.objects.values_list("name", "content_type")) == [("x.bmp", "image/png")]
    assert len(stored_files(media_root)) == 1


def test_every_refused_file_is_named_and_nothing_is_stored(alice_client, upstream, media_root):
    files = [
        upload("fine.png"),
        upload("notes.txt", b"just text"),
        upload("cut.png", PICTURE[:20]),
        upload("empty.png", b""),
    ]

    response = alice_client.post("/c/new/messages/", {"text": "Look", "images": files}, headers=HTMX)

    text = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "notes.txt is not a PNG, JPEG, GIF or WebP image." in text
    assert "cut.png is not a PNG, JPEG, GIF or WebP image." in text
    assert "empty.png is not a PNG, JPEG, GIF or WebP image." in text
    assert "fine.png" not in text
    assert not Message.objects.exists() and not stored_files(media_root)
    assert upstream.requests == []


def test_an_image_over_the_size_limit_is_refused(alice_client, upstream, settings, media_root):
    settings.CHAT_IMAGE_MAX_BYTES = len(PICTURE) - 1

    response = alice_client.post("/c/new/messages/", {"text": "Look", "images": [upload("big.png")]}, headers=HTMX)

    assert response.status_code == 400
    shown = html.unescape(response.content.decode()).replace("\xa0", " ")
    assert f"big.png is {len(PICTURE)} bytes; an image can be at most {len(PICTURE) - 1} bytes." in shown
    assert not Message.objects.exists() and not stored_files(media_root)


def test_more_images_than_a_message_may_have_are_refused(alice_client, upstream, settings, media_root):
    settings.CHAT_IMAGES_PER_MESSAGE = 2

    response = alice_client.post(
        "/c/new/messages/", {"text": "Look", "images": [upload(f"{n}.png") for n in range(3)]}, headers=HTMX
    )

    assert response.status_code == 400
    assert "A message can have at most 2 images; this one has 3." in html.unescape(response.content.decode())
    assert not Message.objects.exists() and not stored_files(media_root)


def test_a_model_that_does_not_take_images_refuses_them_and_keeps_the_chat(alice_client, alice, upstream, media_root):
    upstream.script(Reply(text="Hello."))
    assert alice_client.post("/c/new/messages/", {"text": "Hi", "model": "gpt-4o"}).status_code == 302
    ChatModel.objects.filter(model_id="gpt-4o").update(accepts_images=False)
    chat = Conversation.objects.get(user=alice)
    kept = list(chat.messages.values_list("pk", flat=True))

    response = alice_client.post(
        f"/c/{chat.pk}/messages/", {"text": "Look", "model": "gpt-4o", "images": [upload()]}, headers=HTMX
    )

    assert response.status_code == 400
    assert "GPT-4o does not take images. Pick a model that does, or send the text alone." in html.unescape(
        response.content.decode()
    )
    assert list(chat.messages.values_list("pk", flat=True)) == kept
    assert not stored_files(media_root)


async def test_the_reservation_counts_the_image_by_the_models_image_rule(alice_async, alice, upstream):
    """A day budget with room for the text alone, not for the image: refused, with the meter's numbers."""
    mini = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    image_tokens = mini.image_token_rule().tokens(detail="auto", size=image_size(PICTURE))
    await User.objects.filter(pk=alice.pk).aupdate(tokens_per_day=image_tokens)
    upstream.script(Reply(text="Just text, fine.", prompt_tokens=20, completion_tokens=5))

    response = await alice_async.post(
        "/c/new/messages/", {"text": "Look", "model": "gpt-4o-mini", "images": [upload()]}
    )

    assert response.status_code == 302
    refused = await latest_reply()
    needed = prompt_tokens_bound(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": data_url(PICTURE)}},
                ],
            }
        ],
        images=mini.image_token_rule(),
    )
    assert needed > image_tokens
    assert (refused.status, refused.error_code) == (Message.Status.ERROR, "tokens_per_day")
    assert refused.error_text.startswith(
        f"{image_tokens:,} of your {image_tokens:,} tokens for today are left; "
        f"the chat so far may need up to {needed:,} of them and a reply up to "
    )
    page = (await alice_async.get(f"/c/{refused.conversation_id}/")).content.decode()
    assert html.escape(refused.error_text) in page
    assert upstream.requests == []

    answered = await send(alice_async, "Look", model="gpt-4o-mini")  # the same text without the image fits

    assert (answered.status, answered.content) == (Message.Status.COMPLETE, "Just text, fine.")


async def test_a_chat_whose_image_file_is_gone_goes_on_without_it(alice_async, upstream, media_root):
    upstream.script(Reply(text="A cat."), Reply(text="Still here."))
    first = await send(alice_async, "Look", [upload()])
    image = await MessageImage.objects.aget()
    (media_root / image.file.name).unlink()

    second = await send(alice_async, "And now?", chat=first.conversation_id)

    assert (second.status, second.content) == (Message.Status.COMPLETE, "Still here.")
    assert upstream.requests[1].json["messages"][0] == {"role": "user", "content": "Look"}
    assert (await alice_async.get(f"/c/{first.conversation_id}/images/{image.pk}/")).status_code == 404


async def test_the_owner_alone_gets_the_image(alice_async, upstream, bob):
    upstream.script(Reply(text="A cat."))
    reply = await send(alice_async, "Look", [upload()])
    image = await MessageImage.objects.aget()
    url = f"/c/{reply.conversation_id}/images/{image.pk}/"

    response = await alice_async.get(url)
    bob_client = AsyncClient()
    await bob_client.alogin(username="bob", password=PASSWORD)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "public" not in response["Cache-Control"]
    assert b"".join(response.streaming_content) == PICTURE
    assert (await bob_client.get(url)).status_code == 404
    assert (await alice_async.get(f"/c/{reply.conversation_id + 1}/images/{image.pk}/")).status_code == 404
    anonymous = await AsyncClient().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/accounts/login/?next={url}"
    assert (await alice_async.post(url)).status_code == 405


def test_the_chat_shows_the_image_as_a_thumbnail_that_opens_it(alice_client, alice, upstream):
    upstream.script(Reply(text="A cat."))
    alice_client.post("/c/new/messages/", {"text": "Look", "images": [upload("cat.png")]})
    chat = Conversation.objects.get(user=alice)
    image = MessageImage.objects.get()

    page = parse_html(alice_client.get(f"/c/{chat.pk}/").content)

    url = f"/c/{chat.pk}/images/{image.pk}/"
    [message] = page.find_all("article", class_="user")
    thumbnail = message.find("img")
    assert thumbnail.attrs["src"] == url and thumbnail.attrs["alt"] == "cat.png"
    assert thumbnail.parent.attrs["href"] == url


def test_a_sent_turn_shows_its_images_as_stored_without_reading_them_back(alice_client, alice, upstream, monkeypatch):
    upstream.script(Reply(text="Hello."), Reply(text="Yes."), Reply(text="A cat."))
    alice_client.post("/c/new/messages/", {"text": "Hi"})
    chat = Conversation.objects.get(user=alice)
    path = f"/c/{chat.pk}/messages/"
    sent_queries = []
    step = views._message_create_step

    def step_counted(request, pk):
        with CaptureQueriesContext(connection) as queries:  # the connection of the thread the step runs on
            answer = step(request, pk)
        sent_queries.extend(query["sql"] for query in queries.captured_queries)
        return answer

    monkeypatch.setattr(views, "_message_create_step", step_counted)

    without = alice_client.post(path, {"text": "And now?"}, headers=HTMX)
    reads_without = list(sent_queries)
    with_image = alice_client.post(path, {"text": "Look", "images": [upload("cat.png")]}, headers=HTMX)

    assert with_image.status_code == without.status_code == 200
    image = MessageImage.objects.get()
    [message] = parse_html(with_image.content).find_all("article", class_="user")
    assert message.find("img").attrs["src"] == f"/c/{chat.pk}/images/{image.pk}/"
    [message] = parse_html(without.content).find_all("article", class_="user")
    assert message.find_all("img") == []
    # Image rows read, in a chat with none: the prompt's walk asks whether a message has any in its own statement.
    image_reads = rf'^\s*SELECT\s+"?{MessageImage._meta.db_table}"?\.'
    assert reads_without and not [sql for sql in reads_without if re.search(image_reads, sql)]


def test_attach_is_offered_only_for_a_model_that_takes_images(alice_client, alice, upstream):
    ChatModel.objects.filter(model_id="gpt-4o").update(accepts_images=False)
    upstream.script(Reply(text="Hello."))
    alice_client.post("/c/new/messages/", {"text": "Hi", "model": "gpt-4o"})
    chat = Conversation.objects.get(user=alice)

    new_chat = parse_html(alice_client.get("/").content)  # gpt-4o-mini, the default, takes images
    without = parse_html(alice_client.get(f"/c/{chat.pk}/").content)

    assert "hidden" not in new_chat.find("input", name="images").parent.attrs
    assert "hidden" in without.find("input", name="images").parent.attrs
    options = {option.attrs["value"]: "data-images" in option.attrs for option in without.find_all("option")}
    assert options["gpt-4o-mini"] and not options["gpt-4o"]


async def test_an_edited_message_keeps_its_images(alice_async, upstream):
    upstream.script(Reply(text="A cat."), Reply(text="A red square."))
    first = await send(alice_async, "What is this?", [upload("cat.png")])
    question = await Message.objects.aget(pk=first.parent_id)

    response = await alice_async.post(
        f"/c/{first.conversation_id}/messages/{question.pk}/edit/", {"text": "What colour is this?"}, headers=HTMX
    )
    assert response.status_code == 200
    edited = await latest_reply()
    [shown] = parse_html(response.content).find_all("article", class_="user")
    assert shown.find("img").attrs["alt"] == "cat.png"  # the new version shows the image it kept
    await watch_reply(alice_async, f"/c/{edited.conversation_id}/messages/{edited.pk}/stream/")

    assert upstream.requests[1].json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What colour is this?"},
                {"type": "image_url", "image_url": {"url": data_url(PICTURE)}},
            ],
        }
    ]
    # The first version keeps its image too.
    assert [image.message_id async for image in MessageImage.objects.order_by("pk")] == [question.pk, edited.parent_id]


def test_deleting_the_chat_deletes_its_image_files(alice_client, alice, upstream, media_root):
    upstream.script(Reply(text="A cat."), Reply(text="Another."))
    alice_client.post("/c/new/messages/", {"text": "Look", "images": [upload(), upload("b.png", png_image(2, 2))]})
    alice_client.post("/c/new/messages/", {"text": "Keep this one", "images": [upload()]})
    doomed, kept = Conversation.objects.filter(user=alice).order_by("pk")
    assert len(stored_files(media_root)) == 3

    assert alice_client.post(f"/c/{doomed.pk}/delete/").status_code == 302

    assert not MessageImage.objects.filter(message__conversation=doomed.pk).exists()
    [left] = stored_files(media_root)
    assert left.name == MessageImage.objects.get(message__conversation=kept).file.name.rsplit("/", 1)[1]


def test_a_send_that_fails_after_its_images_were_written_leaves_no_file_behind(
    alice, catalog, upstream, media_root, monkeypatch
):
    def reservation_fails(**_):
        raise DatabaseError("the connection broke while reserving")

    monkeypatch.setattr(chats, "reply_reserve", reservation_fails)
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    response = client.post("/c/new/messages/", {"text": "Look", "images": [upload(), upload("b.png", png_image(2, 2))]})

    assert response.status_code >= 500
    assert not Message.objects.exists() and not MessageImage.objects.exists()
    assert stored_files(media_root) == []


def test_a_staff_reset_deletes_the_image_files(alice, catalog, upstream, media_root):
    User.objects.filter(pk=alice.pk).update(is_staff=True)
    client = Client()
    client.force_login(alice)
    upstream.script(Reply(text="A cat."))
    client.post("/c/new/messages/", {"text": "Look", "images": [upload()]})
    chat = Conversation.objects.get(user=alice)

    client.post(f"/c/{chat.pk}/reset/")

    assert not MessageImage.objects.exists() and not stored_files(media_root)


def test_the_export_lists_attachments_by_name(alice_client, alice, upstream):
    upstream.script(Reply(text="A cat."))
    alice_client.post("/c/new/messages/", {"text": "Look", "images": [upload("cat.png"), upload("dog.png")]})
    chat = Conversation.objects.get(user=alice)

    markdown = alice_client.get(f"/c/{chat.pk}/export/markdown/").content.decode()
    exported = json.loads(alice_client.get(f"/c/{chat.pk}/export/json/").content)

    assert "*Attached: cat.png, dog.png*" in markdown
    assert exported["messages"][0]["attachments"] == [
        {"name": "cat.png", "content_type": "image/png", "width": 40, "height": 30},
        {"name": "dog.png", "content_type": "image/png", "width": 40, "height": 30},
    ]
    assert "attachments" not in exported["messages"][1]
    assert not re.search(r"chat-images", markdown + json.dumps(exported))  # no path on the server
