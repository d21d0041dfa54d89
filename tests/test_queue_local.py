"""The steal queue driven by simulated ranks in one process (``LocalMemory``), no MPI."""
import random

import pytest

from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.stealq import RANGE, RING, StealQueue, pack, region_size, unpack


def make_queues(nranks, slots=4, inbox=8, ring=16):
    mem = LocalMemory(nranks, region_size(slots, inbox, ring))
    return [StealQueue(mem.view(r), 0, slots, inbox, ring) for r in range(nranks)]


def as_ids(work):
    if isinstance(work, tuple):
        return list(range(*work))
    return [int(x) for x in work]


@pytest.mark.parametrize("kind,nxt,hi", [(RANGE, 0, 0), (RANGE, 5, 10), (RING, 3, 7),
                                         (RING, (1 << 31) - 1, (1 << 32) - 1)])
def test_pack_roundtrip(kind, nxt, hi):
    assert unpack(pack(kind, nxt, hi)) == (kind, nxt, hi)
    assert -(1 << 63) <= pack(kind, nxt, hi) < (1 << 63)


def test_owner_claims_chunks_then_nothing():
    (q,) = make_queues(1)
    q.push_range(10, 30)
    got = []
    while (w := q.claim(7)) is not None:
        got += as_ids(w)
    assert got == list(range(10, 30))
    assert not q.has_work()


def test_claim_sizes_each_chunk_by_its_first_task():
    """``claim(want)`` with a function: the chunk size depends on the first id taken (the
    engine's per-group chunk size) and on how many the run holds, for runs, id lists and
    deferred (pending) work alike."""
    (q,) = make_queues(1, slots=1)
    q.push_range(0, 10)
    q.push_ids([100, 101, 102])
    q.push_range(200, 204)                      # no free slot left: deferred
    size = lambda first, available: 1 if first >= 100 else 4      # noqa: E731
    chunks = []
    while (w := q.claim(size)) is not None:
        chunks.append(as_ids(w))
    assert sorted(i for c in chunks for i in c) == list(range(10)) + [100, 101, 102] + list(range(200, 204))
    assert all(len(c) == 1 for c in chunks if c[0] >= 100)
    assert [len(c) for c in chunks if c[0] < 100] == [4, 4, 2]
    q.push_range(0, 10)
    offered = []
    half = lambda first, available: offered.append(available) or available // 2   # noqa: E731
    while (w := q.claim(half)) is not None:
        pass
    assert offered == [10, 5, 3, 2, 1]


def test_higher_priority_first_newest_first():
    (q,) = make_queues(1, slots=8)
    q.push_range(0, 2, prio=0)
    q.push_ids([100, 101], prio=5)
    q.push_range(50, 52, prio=5)
    q.push_ids([200], prio=-1)
    order = []
    while (w := q.claim(10)) is not None:
        order += as_ids(w)
    assert order == [50, 51, 100, 101, 0, 1, 200]


def test_thief_takes_half_of_the_fullest_highest_priority_slot():
    owner, thief = make_queues(2)
    owner.push_range(0, 100, prio=1)
    owner.push_range(1000, 1010, prio=2)
    prio, work = thief.steal(0)
    assert prio == 2 and work == (1000, 1005)
    prio, work = thief.steal(0)
    assert prio == 2 and work == (1005, 1008)


def test_ring_steal_copies_ids_and_counts_copied():
    owner, thief = make_queues(2)
    owner.push_ids([7, 8, 9, 10], prio=0)
    prio, ids = thief.steal(0)
    assert list(ids) == [7, 8]
    assert owner.local[0] == 2        # COPIED
    assert as_ids(owner.claim(10)) == [9, 10]


def test_ring_restarts_when_drained_and_overflows_privately_otherwise():
    owner, thief = make_queues(2, ring=4)
    owner.push_ids([1, 2, 3], prio=0)
    thief.steal(0)
    owner.claim(10)
    owner.push_ids([4, 5, 6], prio=0)   # does not fit at the tail; ring drained -> restart
    assert owner.ring_tail == 3
    owner.push_ids([7, 8], prio=0)      # ring holds unclaimed ids -> private overflow
    assert owner.pending
    got = []
    while (w := owner.claim(10)) is not None:
        got += as_ids(w)
    assert sorted(got) == [4, 5, 6, 7, 8]


def test_slots_overflow_into_pending_and_come_back():
    (q,) = make_queues(1, slots=2)
    for k in range(5):
        q.push_range(10 * k, 10 * k + 3, prio=k)
    assert len(q.pending) == 3
    got = []
    while (w := q.claim(2)) is not None:
        got += as_ids(w)
    assert sorted(got) == sorted(i for k in range(5) for i in range(10 * k, 10 * k + 3))
    assert got[:3] == [40, 41, 42]      # priority 4 first


def test_inbox_push_take_and_steal():
    a, b, c = make_queues(3, inbox=4)
    assert b.push_remote(0, 41, 42) == 42 and c.push_remote(0, 100, 110) == 110
    assert c.steal(0) is None            # a is idle: its inbox waits for it
    a.set_busy(True)
    prio, runs = c.steal(0)              # a is busy: c takes from its inbox (late binding)
    assert prio is None and len(runs) == 1
    rest = a.take_inbox()
    assert sorted(runs + rest) == [(41, 42), (100, 110)]
    assert a.take_inbox() == []


def test_inbox_full_refuses():
    """Runs fill the inbox words; a single task goes to the MAIL word while that is free."""
    a, b = make_queues(2, inbox=2)
    assert b.push_remote(0, 1, 3) == 3 and b.push_remote(0, 3, 5) == 5
    assert b.push_remote(0, 7, 9) == 7
    assert b.push_remote(0, 20, 21) == 21            # MAIL
    assert b.push_remote(0, 21, 22) == 21            # MAIL taken, inbox full
    assert sorted(a.take_inbox()) == [(1, 3), (3, 5), (20, 21)]


@pytest.mark.parametrize("seed", range(20))
def test_random_interleaving_every_task_exactly_once(seed):
    """Owners claim, thieves steal and re-queue, in random order: no task lost or doubled."""
    rng = random.Random(seed)
    nranks = rng.choice([2, 3, 5])
    qs = make_queues(nranks, slots=rng.choice([2, 4, 8]), inbox=8, ring=rng.choice([8, 32]))
    expected = []
    next_id = 0
    for r in range(nranks):
        for _ in range(rng.randint(0, 4)):
            n = rng.randint(1, 40)
            if rng.random() < 0.5:
                qs[r].push_range(next_id, next_id + n, prio=rng.randint(0, 2))
            else:
                qs[r].push_ids(list(range(next_id, next_id + n)), prio=rng.randint(0, 2))
            expected += range(next_id, next_id + n)
            next_id += n
    seen = []
    for _ in range(20000):
        r = rng.randrange(nranks)
        action = rng.random()
        if action < 0.5:
            w = qs[r].claim(rng.randint(1, 6))
            if w is not None:
                seen += as_ids(w)
        elif action < 0.9 and nranks > 1:
            v = rng.choice([x for x in range(nranks) if x != r])
            got = qs[r].steal(v)
            if got is not None:
                prio, w = got
                if isinstance(w, tuple):
                    qs[r].push_range(*w, prio=prio)
                elif prio is None:
                    for lo, hi in w:
                        qs[r].push_range(lo, hi, prio=0)
                else:
                    qs[r].push_ids(w, prio=prio)
        else:
            ids = [next_id]
            next_id += 1
            expected += ids
            target = rng.randrange(nranks)
            qs[target].set_busy(rng.random() < 0.5)
            if target != r and qs[r].push_remote(target, ids[0], ids[0] + 1) == ids[0] + 1:
                continue
            qs[r].push_ids(ids, prio=0)
        if not any(q.has_work() for q in qs) and all(
                q.local[1] == q.local[2] for q in qs):
            break
    for q in qs:
        for lo, hi in q.take_inbox():
            q.push_range(lo, hi, 0)
        while (w := q.claim(100)) is not None:
            seen += as_ids(w)
    assert sorted(seen) == sorted(expected)


class MeddlingView:
    """A thief's memory view that lets the victim's owner act between the thief's reads and
    its compare-and-swap, so that thieves work from stale views (the ABA cases)."""

    def __init__(self, view, meddle):
        self._view = view
        self._meddle = meddle
        self._busy = False

    def __getattr__(self, name):
        return getattr(self._view, name)

    def cas(self, rank, disp, expected, new):
        if not self._busy:
            self._busy = True
            self._meddle()
            self._busy = False
        return self._view.cas(rank, disp, expected, new)


@pytest.mark.parametrize("seed", range(30))
def test_stale_thief_views_never_lose_or_double_tasks(seed):
    rng = random.Random(seed)
    mem = LocalMemory(2, region_size(3, 4, 8))
    owner = StealQueue(mem.view(0), 0, 3, 4, 8)
    seen, expected = [], []
    counter = [0]

    def push():
        n = rng.randint(1, 5)
        ids = list(range(counter[0], counter[0] + n))
        counter[0] += n
        expected.extend(ids)
        if rng.random() < 0.5:
            owner.push_range(ids[0], ids[-1] + 1, prio=rng.randint(0, 1))
        else:
            owner.push_ids(ids, prio=rng.randint(0, 1))

    def meddle():
        for _ in range(rng.randint(0, 3)):
            if rng.random() < 0.6:
                w = owner.claim(rng.randint(1, 3))
                if w is not None:
                    seen.extend(as_ids(w))
            else:
                push()

    thief = StealQueue(MeddlingView(mem.view(1), meddle), 0, 3, 4, 8)
    for _ in range(300):
        if rng.random() < 0.3:
            push()
        got = thief.steal(0)
        if got is not None:
            seen.extend(as_ids(got[1]))
    while (w := owner.claim(100)) is not None:
        seen.extend(as_ids(w))
    assert sorted(seen) == sorted(expected)


def test_overflow_is_published_once_slots_are_used_up():
    owner, thief = make_queues(2, slots=2)
    owner.push_range(0, 1, prio=5)
    owner.push_range(10, 11, prio=5)
    owner.push_range(20, 30, prio=0)        # no slot left: private overflow
    assert owner.pending
    assert as_ids(owner.claim(1)) == [10] and as_ids(owner.claim(1)) == [0]
    assert as_ids(owner.claim(1)) == [20]   # the used-up slots are freed, the overflow published
    assert not owner.pending
    prio, work = thief.steal(0)
    assert prio == 0 and work == (21, 26)


# ---------------------------------------------------------------------- priorities across ranks
def test_steal_above_a_priority_takes_only_such_slots_and_never_the_inbox():
    owner, pusher, thief = make_queues(3, inbox=4)
    owner.push_range(0, 100, prio=0)
    owner.push_range(200, 204, prio=5)
    assert pusher.push_remote(0, 300, 301) == 301
    owner.set_busy(True)
    assert thief.steal(0, min_prio=6) is None        # nothing that high; the inbox waits
    assert thief.steal(0, min_prio=5) == (5, (200, 202))
    assert thief.steal(0, min_prio=5) == (5, (202, 203))
    assert thief.steal(0, min_prio=5) == (5, (203, 204))
    assert thief.steal(0, min_prio=5) is None
    assert thief.steal(0) == (0, (0, 50))             # without: the highest left, as before


def test_top_prio_and_the_top_word():
    """``top_prio``: the owner's best, pending work included; the TOP word: the best it
    published, raised by ``advertise``, set again by ``refresh_top`` after claims."""
    from mpitiny.queue.stealq import TOP, TOP_BIAS
    (owner,) = make_queues(1, slots=2)
    assert owner.top_prio() is None and owner.local[TOP] == 0
    owner.push_range(0, 3, prio=-2)
    owner.advertise(-2)
    assert owner.top_prio() == -2 and owner.local[TOP] == TOP_BIAS - 2
    owner.push_ids([10, 11], prio=7)
    owner.advertise(7)
    owner.advertise(3)                                # lower: no change
    owner.push_range(20, 21, prio=9)                  # no slot left: pending, not published
    assert owner.pending and owner.top_prio() == 9
    assert owner.local[TOP] == TOP_BIAS + 7
    expected = [([20], 9, 7), ([10, 11], 7, -2), ([0, 1, 2], -2, None)]
    for ids, prio, top in expected:
        assert as_ids(owner.claim(10)) == ids and owner.claimed_prio == prio
        owner.refresh_top()
        assert owner.local[TOP] == (0 if top is None else TOP_BIAS + top)
    assert owner.top_prio() is None


def test_level_map_shares_levels_beyond_the_board():
    from mpitiny.queue.levels import MAX_LEVELS, level_map
    assert level_map([5, 0, 5, -3]) == {-3: 0, 0: 1, 5: 2}
    many = level_map(range(-50, 50))
    levels = [many[p] for p in range(-50, 50)]
    assert levels[0] == 0 and levels[-1] == MAX_LEVELS
    assert levels == sorted(levels) and set(levels) == set(range(MAX_LEVELS + 1))


def boards(nranks, priorities, slots=8):
    from mpitiny.queue.levels import PriorityBoard
    qs = make_queues(nranks, slots=slots)
    return qs, [PriorityBoard(q, priorities) for q in qs]


def test_board_counts_what_is_queued_above_the_lowest_level():
    qs, bs = boards(3, [0, 5, 10])
    qs[0].push_range(0, 8, prio=10)
    bs[0].queued(10, 8)
    qs[0].push_range(100, 103, prio=5)
    bs[0].queued(5, 3)
    bs[0].queued(0, 50)                               # the lowest level is not counted
    assert bs[2].counts() == [3, 8]
    assert bs[1].wanted(None) == (2, 0)               # level 2 (priority 10), at rank 0
    assert bs[1].wanted(0) == (2, 0)
    assert bs[1].wanted(5) == (2, 0)
    assert bs[1].wanted(10) is None                   # own best is the top: nothing to read
    bs[0].claimed(10, 8)
    assert bs[1].wanted(0) == (1, 0) and bs[1].wanted(5) is None
    bs[0].claimed(5, 3)
    assert bs[1].wanted(None) is None and bs[0].counts() == [0, 0]


def test_victims_hinted_rank_first_then_those_whose_top_word_has_the_level():
    qs, bs = boards(6, [0, 5, 10])
    for r, prio in [(1, 10), (3, 5), (4, 10)]:
        qs[r].push_range(10 * r, 10 * r + 4, prio=prio)
        qs[r].advertise(prio)
    assert list(bs[0].victims(2, 4))[0] == 4
    assert sorted(bs[0].victims(2, 4)) == [1, 4]
    assert sorted(bs[0].victims(2, -1)) == [1, 4]
    assert sorted(bs[0].victims(1, -1)) == [1, 3, 4]
    assert sorted(bs[4].victims(2, 4)) == [1]         # never itself


@pytest.mark.parametrize("seed", range(10))
def test_board_counts_stay_exact_under_random_pushes_steals_and_claims(seed):
    """Owners push (and count), thieves steal (not counted again) and owners claim (counted
    off) in random order: the board always equals what is queued, per level."""
    rng = random.Random(seed)
    prios = [0, 1, 4, 9]
    qs, bs = boards(4, prios, slots=4)
    queued = {p: 0 for p in prios}
    next_id = 0
    for _ in range(3000):
        r = rng.randrange(4)
        q, b = qs[r], bs[r]
        action = rng.random()
        if action < 0.35:
            n, p = rng.randint(1, 6), rng.choice(prios)
            if rng.random() < 0.5:
                q.push_range(next_id, next_id + n, prio=p)
            else:
                q.push_ids(list(range(next_id, next_id + n)), prio=p)
            b.queued(p, n)
            q.advertise(p)
            queued[p] += n
            next_id += n
        elif action < 0.7:
            w = q.claim(rng.randint(1, 4))
            if w is not None:
                n = len(as_ids(w))
                b.claimed(q.claimed_prio, n)
                queued[q.claimed_prio] -= n
            q.refresh_top()
        else:
            v = rng.choice([x for x in range(4) if x != r])
            floor = rng.choice([None, 1, 4, 9])
            got = q.steal(v, floor)
            if got is not None:
                p, w = got
                assert floor is None or p >= floor
                if isinstance(w, tuple):
                    q.push_range(*w, prio=p)
                else:
                    q.push_ids(w, prio=p)
                q.advertise(p)
        assert bs[0].counts() == [queued[1], queued[4], queued[9]]


def tiered_boards(nranks, priorities, group_ranks, slots=4):
    from mpitiny.queue.levels import PriorityBoard
    qs = make_queues(nranks, slots=slots)
    clock = iter(range(10 ** 9))          # every read of the summary is a fresh one
    return qs, [PriorityBoard(q, priorities, group_ranks=group_ranks,
                              clock=lambda: next(clock)) for q in qs]


def published(queue):
    """``{priority: tasks}`` that ``queue`` holds unclaimed in its slots."""
    from mpitiny.queue.stealq import unpack
    out: dict = {}
    for prio, _, slot in queue.active:
        _, nxt, hi = unpack(int(queue.local[queue.slot0 + slot]))
        out[prio] = out.get(prio, 0) + max(0, hi - nxt)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_tiered_board_lists_every_group_that_holds_higher_tasks(seed):
    """Beyond ``group_ranks`` ranks each group counts its own tasks and rank 0 keeps how many
    groups are listed per level. Under random pushes, claims, steals across groups (which
    carry the count: ``moved``) and reads (which unlist groups found empty): a group's count is
    never below what its queues hold, a group holding tasks of a level is listed, the summary
    counts exactly the listed groups, and a rank whose best is below a level some group
    holds is told so by ``wanted``."""
    rng = random.Random(seed)
    prios, nranks, group = [0, 1, 4, 9], 7, 2
    qs, bs = tiered_boards(nranks, prios, group)
    assert bs[0].tiered and bs[6].leader == 6 and bs[3].leader == 2
    next_id = 0
    for _ in range(1500):
        r = rng.randrange(nranks)
        q, b = qs[r], bs[r]
        action = rng.random()
        if action < 0.3:
            n, p = rng.randint(1, 6), rng.choice(prios)
            b.queued(p, n)
            q.push_range(next_id, next_id + n, prio=p)
            next_id += n
        elif action < 0.55:
            w = q.claim(rng.randint(1, 4))
            if w is not None:
                b.claimed(q.claimed_prio, len(as_ids(w)))
        elif action < 0.8:
            v = rng.choice([x for x in range(nranks) if x != r])
            got = q.steal(v, rng.choice([None, 1, 4, 9]))
            if got is not None:
                p, w = got
                b.moved(p, len(as_ids(w)), v)
                if isinstance(w, tuple):
                    q.push_range(*w, prio=p)
                else:
                    q.push_ids(w, prio=p)
                if rng.random() < 0.5:
                    b.hint(p)
        else:
            b.wanted(q.top_prio())
        for lvl, p in enumerate(prios[1:]):
            held = [sum(published(qs[k]).get(p, 0) for k in range(g, min(g + group, nranks)))
                    for g in range(0, nranks, group)]
            counts = [bs[g].counts()[lvl] for g in range(0, nranks, group)]
            hints = [int(bs[0].mem.get(g, bs[0].board0 + 2 * lvl + 1, 1)[0])
                     for g in range(0, nranks, group)]
            assert all(c >= h for c, h in zip(counts, held)), (p, counts, held)
            assert all(hint for hint, h in zip(hints, held) if h), (p, hints, held)
            assert bs[0].groups_with_work()[lvl] == sum(1 for hint in hints if hint)
            if any(held):
                assert bs[r].wanted(prios[lvl]) is not None, (r, p, held)


def test_tiered_board_unlists_an_empty_group_only_when_it_holds_nothing():
    qs, bs = tiered_boards(4, [0, 5], 2)
    bs[3].queued(5, 2)
    qs[3].push_range(0, 2, prio=5)
    assert bs[0].groups_with_work() == [1]
    assert bs[0].wanted(0) == (1, 3)                  # through the summary, to group 2's board
    assert bs[1].wanted(0) == (1, 3)
    assert qs[3].claim(2) == (0, 2)
    bs[3].claimed(5, 2)
    assert bs[0].wanted(0) is None                    # found empty: unlisted
    assert bs[0].groups_with_work() == [0]
    bs[2].queued(5, 1)                                # listed again by the next count
    qs[2].push_range(10, 11, prio=5)
    assert bs[0].groups_with_work() == [1] and bs[1].wanted(None) == (1, 2)


@pytest.mark.parametrize("meanwhile", ["count", "hint"])
def test_a_group_that_gets_tasks_while_it_is_being_unlisted_stays_listed(meanwhile):
    """``unlist`` clears a group's hint word, then reads its count again. If rank 3 counts a
    task there (from 0: its swap finds the word cleared) or names itself as holding stolen
    ones (``hint``) in between, the group is listed again by that rank, and the reader,
    finding the count positive and the word set, takes back only the extra listing."""
    qs, bs = tiered_boards(4, [0, 5], 2)
    bs[3].queued(5, 1)
    qs[3].push_range(0, 1, prio=5)
    assert qs[3].claim(1) == (0, 1)
    bs[3].claimed(5, 1)                         # group 2 listed, its count 0
    if meanwhile == "hint":
        bs[3].queued(5, 2)                      # its count 2 (hint word still set)
        qs[3].push_range(1, 3, prio=5)
    reader = bs[0]
    count_word = reader.board0
    get = reader.mem.get

    def get_between(rank, disp, n):
        if (rank, disp, n) == (2, count_word, 1):      # unlist's second look at the count
            if meanwhile == "count":
                bs[3].queued(5, 1)
                qs[3].push_range(10, 11, prio=5)
            else:
                bs[3].hint(5)
        return get(rank, disp, n)

    reader.mem.get = get_between       # (with "hint", as if it had seen the count 0 before)
    reader.unlist(2, 1, int(get(2, count_word + 1, 1)[0]))
    reader.mem.get = get
    assert bs[3].counts() == [1 if meanwhile == "count" else 2]
    assert get(2, count_word + 1, 1)[0] != 0
    assert reader.groups_with_work() == [1]


def test_slots_that_thieves_used_up_are_freed_by_has_work():
    """A rank that runs what it releases directly never claims: each task it hands off takes
    a slot, a thief empties it, and ``has_work`` (asked at every release) frees it. Without
    that, the used-up slots pile up to ``nslots`` and every later ``has_work`` and steal
    scans them all."""
    owner, thief = make_queues(2, slots=16)
    for k in range(200):
        owner.push_range(k, k + 1)
        assert owner.has_work()
        prio, work = thief.steal(0)
        assert as_ids(work) == [k]
        assert not owner.has_work()
        assert len(owner.active) == 0
    assert len(owner.free) == 16
    words = owner.local[owner.slot0:owner.slot0 + 16]
    assert sum(1 for w in words if w) <= 2       # the same slot is used again and again


def test_has_work_keeps_live_slots_under_used_up_ones():
    owner, thief = make_queues(2, slots=8)
    owner.push_range(0, 1)
    owner.push_range(10, 20)
    owner.push_range(30, 31)
    taken = []
    for _ in range(2):
        got = thief.steal(0)
        taken += as_ids(got[1])
    assert owner.has_work()
    left = []
    while (w := owner.claim(100)) is not None:
        left += as_ids(w)
    assert sorted(taken + left) == [0] + list(range(10, 20)) + [30]
    assert not owner.has_work() and not owner.active


def test_an_idle_thief_asks_a_busy_victim_once_and_gets_its_next_task_by_mail():
    from mpitiny.queue.stealq import WANT, asker, give
    victim, thief, other = make_queues(3)
    thief.may_ask = other.may_ask = True               # they spin (Backoff)
    assert thief.steal(0) is None                      # the victim is idle: nobody is asked
    assert victim.local[WANT] == 0 and not give(victim, 41)
    victim.set_busy(True)
    assert thief.steal(0) is None
    first = int(victim.local[WANT])
    assert asker(first) == 1 and thief.asked == 0
    assert other.steal(0) is None                      # one request per word, and per thief
    assert victim.local[WANT] == first and other.asked == -1
    assert thief.steal(0) is None and thief.asked == 0 and victim.local[WANT] == first
    assert give(victim, 42)
    assert thief.take_inbox() == [(42, 43)] and thief.answered
    assert not give(victim, 43)                        # each request is answered once
    assert other.steal(0) is None and other.asked == -1   # the answered request stands
    assert thief.steal(0) is None                      # idle again: a new request replaces it
    second = int(victim.local[WANT])
    assert asker(second) == 1 and second != first and not thief.answered
    assert give(victim, 44) and thief.take_inbox() == [(44, 45)]
    thief.steal(0)
    victim.push_remote(1, 50, 51)                      # the thief's MAIL holds a task already
    assert not give(victim, 46) and victim.local[WANT] != 0


def test_a_thief_that_steals_settles_its_request_and_one_that_finds_an_inbox_entry_withdraws_it():
    from mpitiny.queue.stealq import WANT, asker, give
    victim, thief, other = make_queues(3)
    thief.may_ask = True
    victim.set_busy(True)
    assert thief.steal(0) is None and asker(int(victim.local[WANT])) == 1
    first = int(victim.local[WANT])
    other.push_range(100, 110)
    assert thief.steal(2) is not None                   # stolen elsewhere: no operation at 0
    assert int(victim.local[WANT]) == first and thief.answered
    assert thief.steal(0) is None                       # idle again: the request is renewed
    assert asker(int(victim.local[WANT])) == 1 and int(victim.local[WANT]) != first
    assert not thief.answered
    victim.push_remote(1, 7, 9)                         # an inbox entry, not the answer
    assert thief.take_inbox() == [(7, 9)]
    assert victim.local[WANT] == 0 and thief.asked == -1 and not give(victim, 5)


def test_an_answered_request_to_another_rank_is_taken_back_before_asking_anew():
    from mpitiny.queue.stealq import WANT, ask, give
    victim, thief, other = make_queues(3)
    thief.may_ask = True
    ask(thief, 0)
    assert give(victim, 42) and thief.take_inbox() == [(42, 43)]
    ask(thief, 2)
    assert victim.local[WANT] == 0 and other.local[WANT] != 0 and thief.asked == 2


def test_a_thief_asks_only_while_it_spins_and_takes_its_request_back_when_it_sleeps():
    from mpitiny.engine.loop import Backoff
    from mpitiny.queue.stealq import WANT
    victim, thief = make_queues(2)
    victim.set_busy(True)
    Backoff(1e-4, spin=False, queue=thief)             # more ranks than cores: no asking
    assert thief.steal(0) is None and victim.local[WANT] == 0
    backoff = Backoff(1e-4, spin=True, queue=thief)
    assert thief.steal(0) is None and victim.local[WANT] != 0
    backoff.spin_until = 1e-9                           # its spinning time is over
    backoff.wait()
    assert victim.local[WANT] == 0 and thief.asked == -1 and not thief.may_ask
    assert thief.steal(0) is None and victim.local[WANT] == 0


def test_a_spinning_thief_with_a_request_standing_watches_its_mail_between_rounds():
    """``Backoff.wait`` while a request of its rank stands unanswered (``awaits_answer``):
    it watches its own ``MAIL`` word until a task lands there (or ``WATCH_SECONDS``), so the
    answer is seen at once; without a request it only yields the core."""
    from mpitiny.engine.loop import Backoff
    from mpitiny.queue.stealq import ask, give
    victim, thief = make_queues(2)
    victim.set_busy(True)
    backoff = Backoff(1e-4, spin=True, queue=thief)
    backoff.spin_until += 3600             # it spins all through, however loaded the machine
    looks = []
    has_mail = thief.has_mail

    def watched():
        looks.append(1)
        if len(looks) == 3:
            assert give(victim, 42)                   # the answer lands while it watches
        return has_mail()
    thief.has_mail = watched
    backoff.WATCH_SECONDS = 60.0                       # bounded by the answer, not the clock
    backoff.wait()
    assert len(looks) == 0 and not thief.awaits_answer()    # no request: nothing to watch
    ask(thief, 0)
    assert thief.awaits_answer()
    backoff.wait()
    assert len(looks) == 3 and thief.take_inbox() == [(42, 43)] and not thief.awaits_answer()


def test_an_idle_engine_asks_before_its_first_steal_and_asks_the_rank_that_answered_again():
    """``ask_first``: a rank with nothing left asks at once (no steal first); after an answer
    it asks the same rank anew, replacing its answered request in one swap; never while it
    holds work or mail, nor with several priority levels."""
    import types

    from mpitiny.engine.loop import ask_first
    from mpitiny.queue.stealq import WANT, asker, give
    queues = make_queues(3)
    thief = queues[1]
    engine = types.SimpleNamespace(nranks=3, rank=1, queue=thief, rng=random.Random(3), spare_cores=True,
                                   ready=types.SimpleNamespace(board=None), reserved=None)
    thief.may_ask = True
    thief.push_range(5, 6)
    ask_first(engine)
    assert thief.asked == -1 and not any(q.local[WANT] for q in queues)
    assert thief.claim(1) == (5, 6)
    ask_first(engine)
    victim = queues[thief.asked]
    first = int(victim.local[WANT])
    assert thief.asked in (0, 2) and asker(first) == 1
    ask_first(engine)                                  # one request at a time
    assert int(victim.local[WANT]) == first
    assert give(victim, 42) and thief.take_inbox() == [(42, 43)]
    for _ in range(5):                                 # the rank that answered, not a random one
        ask_first(engine)
        assert asker(int(victim.local[WANT])) == 1 and int(victim.local[WANT]) != first
        assert give(victim, 42) and thief.take_inbox() == [(42, 43)]
    engine.reserved = (0, 0, 0, 0)                     # a child reserved: no request
    ask_first(engine)
    assert thief.answered
    engine.reserved = None
    engine.ready.board = object()
    ask_first(engine)
    assert not int(victim.local[WANT]) or int(victim.local[WANT]) == thief.token
    assert thief.answered
