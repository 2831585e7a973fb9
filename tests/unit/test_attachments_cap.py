"""The attachments' default cap when the disk under the NATS store is known (docs/security.md:
uploads must not take the storage the room logs need)."""

from __future__ import annotations

from shared.provisioning import ATTACHMENTS_MIN_CAP, attachments_cap

GIB = 2**30


def test_a_quarter_of_the_free_disk() -> None:
    assert attachments_cap(100 * GIB, 0) == 25 * GIB


def test_what_the_store_holds_counts_so_a_restart_keeps_the_cap() -> None:
    # 20 GiB uploaded since: the disk has 20 GiB less free, the cap stays where it was
    assert attachments_cap(80 * GIB, 20 * GIB) == attachments_cap(100 * GIB, 0)


def test_nodes_on_one_disk_share_it() -> None:
    # natter up --nats-cluster 3: three copies of every file on the same disk
    assert attachments_cap(90 * GIB, 30 * GIB, nodes=3) == 10 * GIB


def test_a_nearly_full_disk_still_takes_small_files() -> None:
    assert attachments_cap(10 * 2**20, 0) == ATTACHMENTS_MIN_CAP
