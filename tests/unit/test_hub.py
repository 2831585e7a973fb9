"""The hub's ordering rule and registry (pure logic, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.hub import Hub


class FakeSocket:
    """A subscriber that records what it was sent (the hub does no I/O, so no mock of I/O here)."""

    def __init__(self, user_id: str, conn_id: str = "c") -> None:
        self.user_id = user_id
        self.conn_id = conn_id
        self.sent: list[str] = []

    def enqueue(self, text: str) -> None:
        self.sent.append(text)


def test_in_order_frames_are_relayed_once() -> None:
    hub = Hub()
    alice = FakeSocket("alice")
    assert hub.join_pending("r", alice) is True
    assert hub.join_complete("r", alice, 0) == []
    for seq in (1, 2, 2, 3, 1):
        hub.deliver_message("r", seq, f"m{seq}")
    assert alice.sent == ["m1", "m2", "m3"]


def test_out_of_order_frames_wait_for_the_gap() -> None:
    hub = Hub()
    bob = FakeSocket("bob")
    hub.join_pending("r", bob)
    hub.join_complete("r", bob, 10)
    hub.deliver_message("r", 13, "m13")
    hub.deliver_message("r", 12, "m12")
    assert bob.sent == []
    assert hub.gap("r") == (10, 1)
    hub.deliver_message("r", 11, "m11")
    assert bob.sent == ["m11", "m12", "m13"]
    assert hub.gap("r") is None


def test_frames_during_join_are_buffered_and_filtered_by_floor() -> None:
    hub = Hub()
    carol = FakeSocket("carol")
    hub.join_pending("r", carol)
    hub.deliver_message("r", 5, "m5")  # room position unknown yet: buffered
    hub.deliver_message("r", 6, "m6")
    flushed = hub.join_complete("r", carol, 5)  # joined answer already had 1..5
    assert flushed == ["m6"]
    assert carol.sent == []


def test_second_socket_floor_hides_older_frames() -> None:
    hub = Hub()
    first, second = FakeSocket("u1", "a"), FakeSocket("u2", "b")
    hub.join_pending("r", first)
    hub.join_complete("r", first, 3)
    hub.join_pending("r", second)
    hub.deliver_message("r", 4, "m4")
    assert first.sent == ["m4"]
    assert hub.join_complete("r", second, 4) == []
    hub.deliver_message("r", 5, "m5")
    assert second.sent == ["m5"]


def test_presence_counts_users_not_sockets() -> None:
    hub = Hub()
    phone, laptop = FakeSocket("dave", "p"), FakeSocket("dave", "l")
    assert hub.join_pending("r", phone) is True
    assert hub.join_pending("r", laptop) is False
    assert hub.leave("r", phone) == (False, False)
    assert hub.leave("r", laptop) == (True, True)
    assert "r" not in hub.rooms


def test_typing_skips_the_sender_and_pending_sockets() -> None:
    hub = Hub()
    alice, bob, pending = FakeSocket("alice", "a"), FakeSocket("bob", "b"), FakeSocket("eve", "e")
    for sock in (alice, bob):
        hub.join_pending("r", sock)
        hub.join_complete("r", sock, 0)
    hub.join_pending("r", pending)
    assert hub.deliver_event("r", "typing", skip_user="alice") == 1
    assert bob.sent == ["typing"] and alice.sent == [] and pending.sent == []


@given(st.permutations(list(range(1, 31))))
def test_any_arrival_order_relays_each_seq_once_in_order(order: list[int]) -> None:
    hub = Hub()
    sock = FakeSocket("u")
    hub.join_pending("r", sock)
    hub.join_complete("r", sock, 0)
    for seq in order:
        hub.deliver_message("r", seq, str(seq))
        hub.deliver_message("r", seq, str(seq))  # duplicates are dropped
    assert sock.sent == [str(seq) for seq in range(1, 31)]


def test_user_registry_first_and_last() -> None:
    hub = Hub()
    one, two = FakeSocket("x", "1"), FakeSocket("x", "2")
    assert hub.add_user_socket(one) is True
    assert hub.add_user_socket(two) is False
    assert hub.deliver_user("x", "n") == 2
    assert hub.remove_user_socket(one) is False
    assert hub.remove_user_socket(two) is True
    assert hub.deliver_all("b") == 0
