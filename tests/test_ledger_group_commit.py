"""The SQLite ledger's group commit (pipeline.ledger.sqlite_sync.GroupSync): no commit is
reported durable before an fsync of the WAL that began after it was written has finished, and
commits made while one fsync runs share the next one instead of queueing one each."""

from __future__ import annotations

import threading

from pipeline.ledger.sqlite_sync import GroupSync


class SlowSync(GroupSync):
    """GroupSync whose fsync is held until the test lets it go (the logic under test only)."""

    def __init__(self, path):
        super().__init__(path)
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.syncs = 0

    def _fsync(self) -> None:
        self.syncs += 1
        self.started.release()
        self.release.acquire()


def test_commits_made_during_an_fsync_share_the_next_and_none_returns_early(tmp_path):
    """Commit 1 starts an fsync; commits 2-4 arrive while it runs: none of them returns with it
    (it began before they were written), and all three are covered by ONE second fsync."""
    group = SlowSync(tmp_path / "ledger.db")
    returned: list[int] = []

    def commit_and_wait() -> None:
        number = group.committed()
        group.wait_durable(number)
        returned.append(number)

    first = threading.Thread(target=commit_and_wait)
    first.start()
    group.started.acquire()  # the first fsync is running
    others = [threading.Thread(target=commit_and_wait) for _ in range(3)]
    for thread in others:
        thread.start()
    while group._commits < 4:  # (all three have written their commit)
        threading.Event().wait(0.01)
    assert returned == []  # nothing is durable before its fsync ends
    group.release.release()
    first.join()
    assert returned == [1]  # the first fsync covered commit 1 only
    group.started.acquire()  # a second fsync, for the three waiting
    threading.Event().wait(0.1)
    assert returned == [1]
    group.release.release()
    for thread in others:
        thread.join()
    assert sorted(returned) == [1, 2, 3, 4] and group.syncs == 2
