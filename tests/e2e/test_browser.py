"""Two people chat through the web client in headless Chromium, against the real stack.

Everything is real: nats-server, the auth/chat/notify services and the gateway as processes
(``stack``), the page served by the gateway, its WebSocket and HTTP API. Each user has their own
browser context (own sessionStorage). Covers: register/login/logout through the forms and the
HTTP ``detail`` errors, join, presence, typing, sending with acks, seq order without duplicates,
text-only rendering of hostile input (PROTOCOL.md section 4), mention notifications, the bell,
mark-all-read, restoring a session on reload, paging back through history, broadcast toasts, and
reconnecting (rejoin with ``since``, unacked messages resent with the same ``client_msg_id``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Locator, Page, WebSocketRoute, expect

from tests import support
from tests.support import WsClient, unique_name

pytestmark = pytest.mark.browser

WAIT_MS = 10_000  # every UI wait
PASSWORD = "correct horse 1"
SCREENSHOT = "/tmp/natter-browser.png"


def exact(text: str) -> re.Pattern[str]:
    """A regex matching exactly ``text`` (Playwright's has_text is a substring match)."""
    return re.compile(f"^{re.escape(text)}$")


def message_rows(page: Page, text: str) -> Locator:
    """Rows of the shown room whose text is exactly ``text``."""
    return page.locator("#messages .message").filter(has=page.locator(".message-text", has_text=exact(text)))


async def new_page(browser: Browser, problems: dict[str, list[str]]) -> Page:
    page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
    page.set_default_timeout(WAIT_MS)

    async def on_dialog(dialog: Dialog) -> None:
        problems["dialogs"].append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: problems["page_errors"].append(str(error)))
    return page


async def fill_credentials(page: Page, username: str, password: str) -> None:
    await page.fill("#login-username", username)
    await page.fill("#login-password", password)


async def expect_chat(page: Page, username: str) -> None:
    """The chat view is shown for ``username`` and its socket is authenticated."""
    await expect(page.locator("#chat-view")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#me-name")).to_have_text(username, timeout=WAIT_MS)
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "online", timeout=WAIT_MS)


async def register(page: Page, base_url: str, username: str) -> None:
    await page.goto(f"{base_url}/")
    await fill_credentials(page, username, PASSWORD)
    await page.click("#register-button")
    await expect_chat(page, username)


async def join(page: Page, room: str) -> None:
    await page.fill("#room-input", room)
    await page.click("#join-button")
    await expect(page.locator("#room-title")).to_have_text(f"#{room}", timeout=WAIT_MS)
    joined = page.locator(f'#room-list .room-item[data-room="{room}"] .room-open:not(.not-joined)')
    await expect(joined).to_have_count(1, timeout=WAIT_MS)


async def send(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.press("#message-input", "Enter")
    await expect(page.locator("#message-input")).to_have_value("", timeout=WAIT_MS)


async def expect_delivered(sender: Page, receiver: Page, text: str) -> None:
    """``receiver`` shows ``text`` once, as text; ``sender`` shows it once, acked (not pending)."""
    seen = message_rows(receiver, text)
    await expect(seen).to_have_count(1, timeout=WAIT_MS)
    await expect(seen.locator(".message-text")).to_have_text(exact(text), timeout=WAIT_MS)
    own = message_rows(sender, text)
    await expect(own).to_have_count(1, timeout=WAIT_MS)
    await expect(own).to_have_class(re.compile(r"\bown\b"), timeout=WAIT_MS)
    await expect(own).not_to_have_class(re.compile(r"\bpending\b"), timeout=WAIT_MS)
    await expect(own).to_have_attribute("data-seq", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)


async def shown_seqs(page: Page) -> list[int]:
    values: list[Any] = await page.eval_on_selector_all(
        "#messages .message", "rows => rows.map(row => row.dataset.seq)"
    )
    assert all(isinstance(v, str) for v in values), f"rows without a seq (still pending?): {values}"
    return [int(v) for v in values]


async def bell(page: Page) -> int:
    return int((await page.locator("#bell-count").text_content(timeout=WAIT_MS)) or "")


@pytest.mark.timeout(120)
async def test_two_users_chat_in_the_browser(stack: Any, browser: Browser) -> None:
    base_url = stack.base_url
    room = unique_name("room")
    alice, bob = unique_name("a"), unique_name("b")
    problems: dict[str, list[str]] = {"dialogs": [], "page_errors": []}
    page_a = await new_page(browser, problems)
    page_b = await new_page(browser, problems)

    # Register both through the form (registering logs in), then A logs out and back in.
    await register(page_a, base_url, alice)
    await register(page_b, base_url, bob)
    await page_a.click("#logout-button")
    await expect(page_a.locator("#auth-view")).to_be_visible(timeout=WAIT_MS)
    assert await page_a.evaluate("sessionStorage.getItem('natter.session')") is None

    # The HTTP API's `detail` is shown: a taken username (409) and a wrong password (401).
    await fill_credentials(page_a, alice.upper(), PASSWORD)
    await page_a.click("#register-button")
    await expect(page_a.locator("#auth-error")).to_be_visible(timeout=WAIT_MS)
    assert (await page_a.locator("#auth-error").text_content() or "").strip()
    await fill_credentials(page_a, alice, "wrong password 1")
    await page_a.click("#login-button")
    await expect(page_a.locator("#auth-error")).to_be_visible(timeout=WAIT_MS)
    assert (await page_a.locator("#auth-error").text_content() or "").strip()
    await fill_credentials(page_a, alice, PASSWORD)
    await page_a.click("#login-button")
    await expect_chat(page_a, alice)
    assert await page_a.evaluate("sessionStorage.getItem('natter.session')") is not None

    # Both join the same new public room and see each other online.
    await join(page_a, room)
    await join(page_b, room)
    await expect(page_a.locator("#online-list")).to_contain_text(bob, timeout=WAIT_MS)
    await expect(page_b.locator("#online-list")).to_contain_text(alice, timeout=WAIT_MS)

    # A types: B sees the indicator; it goes away when A's message arrives.
    await page_a.locator("#message-input").press_sequentially("hel", delay=40)
    await expect(page_b.locator("#typing")).to_have_text(f"{alice} is typing…", timeout=WAIT_MS)
    await send(page_a, "hello from alice")
    await expect_delivered(page_a, page_b, "hello from alice")
    await expect(page_b.locator("#typing")).to_have_text("", timeout=WAIT_MS)

    await send(page_b, "hi alice, bob here")
    await expect_delivered(page_b, page_a, "hi alice, bob here")

    # Hostile text is shown as text: no element is created and no script runs.
    payload = "<img src=x onerror=alert(1)>"
    await send(page_a, payload)
    await expect_delivered(page_a, page_b, payload)
    for page in (page_a, page_b):
        assert await page.locator("#messages img").count() == 0
    await asyncio.sleep(0.3)  # an onerror handler would have fired by now
    assert problems["dialogs"] == []

    # A mention of B notifies B: the bell goes up by one and the panel lists it.
    await expect(page_b.locator("#bell-count")).not_to_have_text("0", timeout=WAIT_MS)  # welcome
    before = await bell(page_b)
    mention = f"@{bob} hello"
    await send(page_a, mention)
    await expect_delivered(page_a, page_b, mention)
    await expect(message_rows(page_b, mention)).to_have_class(re.compile(r"\bmention\b"))
    await expect(page_b.locator("#bell-count")).to_have_text(str(before + 1), timeout=WAIT_MS)
    await page_b.click("#bell")
    panel = page_b.locator("#notifications-panel")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    mentioned = panel.locator(f'.notification[data-room="{room}"]')
    await expect(mentioned).to_have_count(1, timeout=WAIT_MS)
    await expect(mentioned).to_have_class(re.compile(r"\bunread\b"))
    await page_b.click("#mark-all-read")
    await expect(page_b.locator("#bell-count")).to_have_text("0", timeout=WAIT_MS)
    await expect(panel.locator(".notification.unread")).to_have_count(0, timeout=WAIT_MS)

    # Both pages show the room's messages once each, in seq order.
    for page in (page_a, page_b):
        seqs = await shown_seqs(page)
        assert len(seqs) == 4, seqs
        assert seqs == sorted(set(seqs)), seqs

    # B reloads: the session and the room come back from sessionStorage, the server remembers
    # that everything was read, and the history shows the messages without duplicates.
    await page_b.reload()
    await expect_chat(page_b, bob)
    await expect(message_rows(page_b, mention)).to_have_count(1, timeout=WAIT_MS)
    await expect(message_rows(page_b, payload)).to_have_count(1, timeout=WAIT_MS)
    await expect(page_b.locator("#bell-count")).to_have_text("0", timeout=WAIT_MS)
    seqs = await shown_seqs(page_b)
    assert len(seqs) == 4 and seqs == sorted(set(seqs)), seqs
    await expect(page_b.locator("#online-list")).to_contain_text(alice, timeout=WAIT_MS)

    await page_b.click("#bell")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    await expect(mentioned).to_have_count(1, timeout=WAIT_MS)  # recent read ones are listed
    await expect(mentioned).not_to_have_class(re.compile(r"\bunread\b"))
    await page_b.screenshot(path=SCREENSHOT)
    assert problems["page_errors"] == []
    assert problems["dialogs"] == []


async def read_until(ws: WsClient, frames: list[dict[str, Any]], done: Any, timeout: float = 10.0) -> None:
    """Append every frame ``ws`` receives to ``frames`` until ``done(frame)`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError("expected frame did not arrive")
        frame = await ws.recv(remaining)
        frames.append(frame)
        if done(frame):
            return


def texts_of(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["message"] for f in frames if f.get("type") == "message"]


@pytest.mark.timeout(120)
async def test_history_paging_broadcast_toast_and_a_bot_post(stack: Any, browser: Browser) -> None:
    room = unique_name("room")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        seeder = await support.register(http)
        ws = await support.connect(stack.ws_url, seeder.access_token)
        try:
            await support.join(ws, room)
            for number in range(1, 56):
                frame = {"type": "chat_message", "room": room, "message": f"m{number:02d}"}
                ack = await ws.request({**frame, "client_msg_id": f"seed-{number}"})
                assert ack["type"] == "ack", ack
                await asyncio.sleep(0.03)  # stay under 20 frames/s
        finally:
            await ws.close()

    problems: dict[str, list[str]] = {"dialogs": [], "page_errors": []}
    page = await new_page(browser, problems)
    await register(page, stack.base_url, unique_name("h"))
    await join(page, room)
    # The join shows the latest 50; scrolling to the top loads the 5 before them.
    await expect(page.locator("#messages .message")).to_have_count(50, timeout=WAIT_MS)
    await expect(page.locator("#messages .message-text").first).to_have_text("m06")
    await expect(page.locator("#load-older")).to_be_visible(timeout=WAIT_MS)
    await page.locator("#messages-scroll").evaluate("node => { node.scrollTop = 0; }")
    await expect(page.locator("#messages .message")).to_have_count(55, timeout=WAIT_MS)
    await expect(page.locator("#messages .message-text").first).to_have_text("m01")
    assert await shown_seqs(page) == list(range(1, 56))
    await expect(page.locator("#load-older")).to_be_hidden(timeout=WAIT_MS)
    await expect(page.locator("#history-start")).to_be_visible(timeout=WAIT_MS)

    # A broadcast shows as a toast, its text as text.
    token = await support.service_token(stack.nats.url)
    title, body = "Maintenance <b>tonight</b>", f"back soon {unique_name('b')}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        response = await http.post(
            "/api/notifications/broadcast",
            json={"title": title, "message": body, "notification_type": "warning"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202, response.text
    toast = page.locator("#toasts .toast").filter(has_text=body)
    await expect(toast).to_have_count(1, timeout=WAIT_MS)
    await expect(toast.locator(".toast-title")).to_have_text(exact(title))
    assert await page.locator("#toasts b").count() == 0

    # A service posts into the room (PROTOCOL.md section 12): shown live, marked as a bot.
    posted = f"<i>build</i> {unique_name('ok')} passed"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        response = await http.post(
            f"/api/rooms/{room}/messages",
            json={"message": posted, "client_msg_id": "ci-1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
    row = message_rows(page, posted)
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await expect(row.locator('[data-testid="message-bot"]')).to_have_text("bot")
    await expect(row.locator(".message-user")).to_have_text("tests")
    assert await page.locator("#messages .message-text i").count() == 0
    assert problems == {"dialogs": [], "page_errors": []}


@pytest.mark.timeout(120)
async def test_reconnect_rejoins_since_and_resends_unacked(stack: Any, browser: Browser) -> None:
    """B's socket runs through a Playwright WebSocket route (a real connection to the gateway
    with Playwright in the middle). While "muted", the route drops what the gateway sends B and
    B's message "never arrived"; then it cuts the line (1012) and lets B reconnect."""
    room = unique_name("room")
    dropped_text, lost_ack_text = "never arrived", "ack was lost"
    sent: list[list[dict[str, Any]]] = []  # frames B sent, per socket
    links: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    muted = {"on": False}

    def route(page_side: WebSocketRoute) -> None:
        generation = len(links)
        server_side = page_side.connect_to_server()
        frames: list[dict[str, Any]] = []
        sent.append(frames)
        links.append((page_side, server_side))

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            frames.append(frame)
            if generation == 0 and muted["on"] and frame.get("message") == dropped_text:
                return
            server_side.send(message)

        def from_server(message: str | bytes) -> None:
            if not (generation == 0 and muted["on"]):
                page_side.send(message)

        page_side.on_message(from_page)
        server_side.on_message(from_server)

    problems: dict[str, list[str]] = {"dialogs": [], "page_errors": []}
    page = await new_page(browser, problems)
    await page.route_web_socket(re.compile(r"/ws$"), route)

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        alice = await support.register(http)
    ws = await support.connect(stack.ws_url, alice.access_token)
    a_frames: list[dict[str, Any]] = []
    try:
        await support.join(ws, room)
        bob = unique_name("b")
        await register(page, stack.base_url, bob)
        await join(page, room)

        first = await ws.request({"type": "chat_message", "room": room, "message": "before"})
        await expect(message_rows(page, "before")).to_have_count(1, timeout=WAIT_MS)

        muted["on"] = True
        missed = await ws.request({"type": "chat_message", "room": room, "message": "missed"})
        assert missed["seq"] == first["seq"] + 1, missed
        await send(page, lost_ack_text)  # stored, but its ack never reaches B
        await read_until(
            ws, a_frames, lambda f: f.get("type") == "message" and f["data"]["message"] == lost_ack_text
        )
        await send(page, dropped_text)  # never reaches the gateway
        await expect(page.locator("#messages .message.pending")).to_have_count(2, timeout=WAIT_MS)
        await expect(message_rows(page, "missed")).to_have_count(0)

        page_side, server_side = links[0]
        await page_side.close(code=1012, reason="test: gateway restart")
        await server_side.close(code=1000)
        await expect(page.locator("#conn-status")).not_to_have_attribute(
            "data-state", "online", timeout=WAIT_MS
        )
        await expect(page.locator("#conn-status")).to_have_attribute("data-state", "online", timeout=WAIT_MS)

        for text in ("missed", lost_ack_text, dropped_text):
            await expect(message_rows(page, text)).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#messages .message.pending")).to_have_count(0, timeout=WAIT_MS)
        seqs = await shown_seqs(page)
        assert seqs == list(range(first["seq"], first["seq"] + 4)), seqs

        # The gateway got B's resend once; A saw each message exactly once.
        await read_until(
            ws, a_frames, lambda f: f.get("type") == "message" and f["data"]["message"] == dropped_text
        )
        await asyncio.sleep(0.5)
        while True:
            try:
                a_frames.append(await ws.recv(0.2))
            except TimeoutError:
                break
        texts = texts_of(a_frames)
        assert texts.count(lost_ack_text) == 1 and texts.count(dropped_text) == 1, texts
    finally:
        await ws.close()

    # What B sent: a rejoin with `since` = the last seq it saw, and the dropped message again
    # with its original client_msg_id.
    assert len(sent) >= 2, sent
    rejoins = [f for f in sent[-1] if f.get("type") == "join"]
    assert rejoins and rejoins[0]["room"] == room and rejoins[0]["since"] == first["seq"], sent[-1]
    everything = [f for frames in sent for f in frames if f.get("type") == "chat_message"]
    dropped_ids = {f["client_msg_id"] for f in everything if f["message"] == dropped_text}
    assert len(dropped_ids) == 1, everything
    assert sum(1 for f in sent[-1] if f.get("message") == dropped_text) == 1, sent[-1]
    assert problems == {"dialogs": [], "page_errors": []}


async def two_in_room(
    browser: Browser, base_url: str, room: str, alice: str, bob: str
) -> tuple[dict[str, list[str]], Page, Page]:
    """Two freshly registered users, each in their own browser context, both joined to ``room``:
    (problems seen by either page, alice's page, bob's page)."""
    problems: dict[str, list[str]] = {"dialogs": [], "page_errors": []}
    page_a = await new_page(browser, problems)
    page_b = await new_page(browser, problems)
    await register(page_a, base_url, alice)
    await register(page_b, base_url, bob)
    await join(page_a, room)
    await join(page_b, room)
    return problems, page_a, page_b


@pytest.mark.timeout(120)
async def test_v2_edit_delete_react_reply_dm_unread_and_ban_in_the_browser(
    stack: Any, browser: Browser
) -> None:
    """Issue 11 item 7: two users through edit, delete, react, reply and a thread, a DM with an
    unread badge, and a ban that takes the room out of the banned user's view; user strings stay
    text throughout."""
    room = unique_name("v2")
    alice, bob = unique_name("a"), unique_name("b")
    problems, page_a, page_b = await two_in_room(browser, stack.base_url, room, alice, bob)

    hostile = '<img src=x onerror="alert(1)"> original'
    await send(page_a, hostile)
    await expect_delivered(page_a, page_b, hostile)

    # edit (author only): the other side shows the new text, marked edited
    await message_rows(page_a, hostile).locator('[data-testid="edit"]').click()
    await expect(page_a.locator("#compose-bar")).to_be_visible()
    await page_a.fill("#message-input", "<b>edited</b> text")
    await page_a.press("#message-input", "Enter")
    edited = message_rows(page_b, "<b>edited</b> text")
    await expect(edited).to_have_count(1, timeout=WAIT_MS)
    await expect(edited.locator(".message-edited")).to_have_text("(edited)")
    await expect(message_rows(page_b, hostile)).to_have_count(0)
    assert await page_b.locator("#messages .message-text b").count() == 0  # text, never HTML
    assert await message_rows(page_b, "<b>edited</b> text").locator('[data-testid="edit"]').count() == 0

    # react: counts on both sides, "mine" on the reactor's
    await edited.locator('[data-testid="react"]').first.click()
    chip_a = message_rows(page_a, "<b>edited</b> text").locator('[data-testid="reaction"]')
    await expect(chip_a).to_have_text("👍 1", timeout=WAIT_MS)
    chip_b = edited.locator('[data-testid="reaction"]')
    await expect(chip_b).to_have_class(re.compile(r"\bmine\b"), timeout=WAIT_MS)

    # reply with the quoted original, then open the thread
    await edited.locator('[data-testid="reply"]').click()
    await expect(page_b.locator("#compose-what")).to_have_text(f"Replying to {alice}")
    await send(page_b, "a reply")
    reply_row = message_rows(page_a, "a reply")
    await expect(reply_row).to_have_count(1, timeout=WAIT_MS)
    await expect(reply_row.locator('[data-testid="message-quote"]')).to_have_text(
        f"↪ {alice}: <b>edited</b> text", timeout=WAIT_MS
    )
    thread_button = message_rows(page_a, "<b>edited</b> text").locator('[data-testid="thread-open"]')
    await expect(thread_button).to_have_text("1 reply", timeout=WAIT_MS)
    await thread_button.click()
    await expect(page_a.locator("#thread-messages .message-text")).to_have_text(["a reply"], timeout=WAIT_MS)
    await page_a.click("#thread-close")

    # delete (author): gone on both sides, the text nowhere in the page
    await message_rows(page_a, "<b>edited</b> text").locator('[data-testid="delete"]').click()
    await expect(message_rows(page_b, "message deleted")).to_have_count(1, timeout=WAIT_MS)
    await expect(page_b.locator("#messages")).not_to_contain_text("<b>edited</b> text", timeout=WAIT_MS)

    # a DM: "message @user", an unread badge for the other side
    await page_a.fill("#dm-input", bob)
    await page_a.click("#dm-button")
    await expect(page_a.locator("#room-title")).to_have_text(f"@{bob}", timeout=WAIT_MS)
    await expect(page_a.locator("#room-list .room-open:not(.not-joined)")).not_to_have_count(0)
    await send(page_a, "psst, just us")
    await page_b.reload()  # the badge comes from GET /api/me/rooms
    await expect_chat(page_b, bob)
    dm_item = page_b.locator("#dm-list .room-item")
    await expect(dm_item).to_have_count(1, timeout=WAIT_MS)
    await expect(dm_item.locator(".room-name")).to_have_text(f"@{alice}", timeout=WAIT_MS)
    await expect(dm_item.locator('[data-testid="room-unread"]')).to_have_text("1", timeout=WAIT_MS)
    await dm_item.locator(".room-open").click()
    await expect(message_rows(page_b, "psst, just us")).to_have_count(1, timeout=WAIT_MS)
    await expect(dm_item.locator('[data-testid="room-unread"]')).to_have_count(0, timeout=WAIT_MS)

    # a ban: alice owns a private room, bans bob from the online list; bob loses the room
    private = unique_name("p")
    await page_a.locator("summary", has_text="New private room").click()
    await page_a.fill("#private-room-input", private)
    await page_a.click("#create-room-button")
    await expect(page_a.locator("#room-title")).to_have_text(f"#{private}", timeout=WAIT_MS)
    await page_a.fill("#member-input", bob)
    await page_a.click("#add-member-button")
    await expect(page_a.locator("#side-info")).to_contain_text(bob, timeout=WAIT_MS)
    await join(page_b, private)
    ban = page_a.locator(f'#online-list .online-user:has-text("{bob}") [data-testid="ban-user"]')
    await ban.click(timeout=WAIT_MS)
    await expect(page_b.locator(f'#room-list .room-item[data-room="{private}"]')).to_have_count(
        0, timeout=WAIT_MS
    )
    await expect(page_b.locator("#error-bar")).to_contain_text("banned", timeout=WAIT_MS)

    assert problems["dialogs"] == [] and problems["page_errors"] == [], problems


def png_bytes(width: int, height: int) -> bytes:
    """A real PNG image of ``width`` x ``height`` pixels (Pillow), for upload tests."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.timeout(120)
async def test_attachments_upload_send_and_show_in_the_browser(stack: Any, browser: Browser) -> None:
    """Issue 13 item 1: a user attaches an image and a text file from the file picker, sends them
    with a message, and the other member sees the image as a thumbnail (fetched with the token,
    never as a bare URL) and the text file as a download link; the queued chips clear on send."""
    room = unique_name("files")
    alice, bob = unique_name("a"), unique_name("b")
    problems, page_a, page_b = await two_in_room(browser, stack.base_url, room, alice, bob)

    await page_a.set_input_files(
        "#file-input",
        files=[
            {"name": "sunset.png", "mimeType": "image/png", "buffer": png_bytes(640, 480)},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"line one\nline two\n"},
        ],
    )
    chips = page_a.locator('[data-testid="queued-attachment"]')
    await expect(chips).to_have_count(2, timeout=WAIT_MS)
    await expect(chips.first).to_contain_text("sunset.png")
    await send(page_a, "the holiday files")
    await expect(chips).to_have_count(0, timeout=WAIT_MS)

    await expect_delivered(page_a, page_b, "the holiday files")
    row_b = message_rows(page_b, "the holiday files")
    image = row_b.locator('[data-testid="message-image"]')
    await expect(image).to_have_count(1, timeout=WAIT_MS)
    await expect(image).to_have_attribute("src", re.compile(r"^blob:"), timeout=WAIT_MS)
    await page_b.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle(), timeout=WAIT_MS
    )
    width = await image.evaluate("img => img.naturalWidth")
    assert 0 < width <= 640, width  # the thumbnail, not a broken image
    link = row_b.locator('[data-testid="message-file"]')
    await expect(link).to_have_count(1, timeout=WAIT_MS)
    await expect(link).to_contain_text("notes.txt")

    # a file sent with no text goes out under its name (a message's text is 1..4000 characters)
    await page_a.set_input_files(
        "#file-input", files=[{"name": "alone.txt", "mimeType": "text/plain", "buffer": b"hi\n"}]
    )
    await expect(chips).to_have_count(1, timeout=WAIT_MS)
    await page_a.click("#send-button")
    alone = message_rows(page_b, "alone.txt")
    await expect(alone).to_have_count(1, timeout=WAIT_MS)
    await expect(alone.locator('[data-testid="message-file"]')).to_contain_text("alone.txt")

    assert problems["dialogs"] == [] and problems["page_errors"] == [], problems
