"""One contract, every dispatch store: the DynamoDB store (moto) and the benchmark's in-memory model.

The bench's figures are only as true as its model of the store, so the model is held to the real
store's behaviour: the same random sequences of reads and conditional writes run against both, from
the same rows, and every answer and every resulting row must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sundial.domain.instants import format_instant
from sundial.store.dispatch import Advance, Claim, DispatchStore, DueRow, DynamoDispatchStore, ShardMarker, due_row
from sundial.store.records import SHARD_MARKER_PK, TriggerRecord, trigger_pk

from bench.dispatch_bench import Item, ModelClock, ModelStore
from tests.conftest import START, FakeClock
from tests.dispatch_support import DispatchEnv, create, dispatch_env

TRIGGERS = ("a", "b", "c")
SHARDS = 4
INSTANTS = [START + timedelta(minutes=minutes) for minutes in (-5, 0, 1, 60)]
UNTIL = [format_instant(START + timedelta(minutes=minutes)) for minutes in (-10, 0, 2, 120)]

trigger = st.tuples(st.integers(0, 1), st.sampled_from(TRIGGERS))  # (which of two callers, which row)
instant = st.sampled_from(INSTANTS)
claim_writes = st.one_of(
    st.tuples(st.just("advance"), trigger, st.one_of(st.none(), instant), st.booleans(), st.integers(0, SHARDS - 1)),
    st.tuples(st.just("renew"), trigger, instant),
    st.tuples(st.just("release"), trigger, st.one_of(st.none(), instant), st.integers(0, SHARDS - 1)),
)
operation = st.one_of(
    claim_writes,  # the claim protocol's writes are drawn as often as everything else together
    st.one_of(
        st.tuples(st.just("due_page"), st.integers(0, SHARDS - 1), st.sampled_from(UNTIL)),
        st.tuples(st.just("shard_page"), st.integers(0, SHARDS - 1)),
        st.tuples(st.just("move"), trigger, st.integers(0, SHARDS - 1)),
        st.tuples(st.just("raise_marker"), st.integers(1, 8)),
        st.tuples(st.just("lower_marker"), st.integers(1, 8), st.integers(1, 8)),
        st.tuples(st.just("note_empty"), st.integers(1, 8), st.one_of(st.none(), instant)),
        st.tuples(st.just("read"), trigger),
    ),
)


@pytest.fixture(scope="module")
def env() -> Iterator[DispatchEnv]:
    with dispatch_env(FakeClock(START - timedelta(minutes=10)), DUE_SHARD_COUNT=SHARDS) as built:
        yield built


class Pair:
    """The two stores side by side, and what each of two callers last read of every row.

    A caller reads a row again after each of its own writes that held; the other caller's copy goes
    stale, as a second dispatcher's would.
    """

    def __init__(self, env: DispatchEnv) -> None:
        table = env.settings.triggers_table
        for item in env.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]:
            env.dynamodb.delete_item(TableName=table, Key={"pk": item["pk"]})
        self.real = DynamoDispatchStore()
        self.model = ModelStore(ModelClock(START, scale=1e9))
        self.read: dict[tuple[int, str], DueRow] = {}
        for number, name in enumerate(TRIGGERS):
            trigger_id = create(env, id=name, cron_expression=f"{number} 15 * * *")
            row = self._real_row(trigger_id)
            self.model.items[row.pk] = Item(replace(row, due_shard=None), row.due_shard)
            self.read[0, name] = self.read[1, name] = row
        # Creating a trigger may announce the shard count (at most once a minute of real time per
        # process); the model store starts without a marker, so the real one must too.
        env.dynamodb.delete_item(TableName=table, Key={"pk": {"S": SHARD_MARKER_PK}})

    @staticmethod
    def _real_row(trigger_id: str) -> DueRow:
        return due_row(TriggerRecord.get(trigger_pk("acme", trigger_id), consistent_read=True))

    def rows(self) -> tuple[list[Any], list[Any]]:
        """Every row as each store holds it now, in the fields the dispatcher reads."""
        real = [_view(self._real_row(name)) for name in TRIGGERS]
        model = [
            _view(replace(item.row, due_shard=item.shard))
            for item in (self.model.items[trigger_pk("acme", name)] for name in TRIGGERS)
        ]
        return real, model

    def apply(self, step: tuple[Any, ...]) -> tuple[Any, Any]:
        """Run one operation on both stores; their answers, in comparable form."""
        kind = step[0]
        if kind == "read":  # a caller reads the row again (from the real store; both must agree on it)
            self.read[step[1]] = self._real_row(step[1][1])
            return None, None
        answers = self._on(self.real, step), self._on(self.model, step)
        if answers[0] is True and isinstance(step[1], tuple):
            self.read[step[1]] = self._real_row(step[1][1])
        return answers

    def _on(self, store: DispatchStore, step: tuple[Any, ...]) -> Any:
        kind, *args = step
        if kind == "due_page":
            rows, cursor = store.due_page(args[0], args[1], None)
            return [_view(row, shard=False) for row in rows], cursor is None
        if kind == "shard_page":
            rows, cursor = store.shard_page(args[0], None)
            return sorted(row.pk for row in rows), cursor is None
        if kind == "raise_marker":
            store.raise_marker(args[0])
            return store.shard_marker()
        if kind == "lower_marker":
            return store.lower_marker(args[0], args[1]), store.shard_marker()
        if kind == "note_empty":
            return store.note_empty(args[0], args[1]), store.shard_marker()
        row = self.read[args[0]]
        if kind == "advance":
            next_run_at, claiming, shard = args[1], args[2], args[3]
            claim = Claim(row.next_run_at or START, f"s-{row.trigger_id}-{row.next_run_at}", row.schedule_version)
            lease = START + timedelta(seconds=60)
            advance = Advance(next_run_at, 0, shard, claim if claiming else None, lease if claiming else None)
            return store.advance(row, advance)
        if kind == "renew":
            return store.renew_lease(row, args[1]) if row.claim is not None else None
        if kind == "release":
            return store.release(row, row.claim, args[1], args[2]) if row.claim is not None else None
        if kind == "move":
            return store.move_shard(row, args[1])
        raise AssertionError(kind)


def _view(row: DueRow, *, shard: bool = True) -> tuple[Any, ...]:
    claim = (row.claim.name, row.claim.occurrence, row.claim.version) if row.claim is not None else None
    view = (row.pk, row.incarnation, row.next_run_at, row.schedule_version, row.due_at, claim)
    return (*view, row.due_shard) if shard else view


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(operation, min_size=1, max_size=30))
def test_the_model_store_answers_as_the_dynamodb_store_does(env: DispatchEnv, steps: list[tuple[Any, ...]]) -> None:
    pair = Pair(env)
    for step in steps:
        real, model = pair.apply(step)
        assert real == model, step
        assert pair.rows()[0] == pair.rows()[1], step


def test_a_claim_is_won_once_and_released_once(env: DispatchEnv) -> None:
    """The protocol's core in both stores: of two writers with the same read, one claims; one release holds."""
    pair = Pair(env)
    read = pair.read[0, "a"]
    tomorrow: datetime = (read.next_run_at or START) + timedelta(days=1)
    claim = Claim(read.next_run_at or START, "s-a", read.schedule_version)
    step = Advance(tomorrow, 0, 1, claim, START + timedelta(seconds=60))
    for store in (pair.real, pair.model):
        assert (store.advance(read, step), store.advance(read, step)) == (True, False)
        assert (store.release(read, claim, tomorrow, 3), store.release(read, claim, tomorrow, 3)) == (True, False)
    real, model = pair.rows()
    assert real == model
    assert (real[0][4], real[0][5], real[0][6]) == (format_instant(tomorrow), None, 3)  # due again, new shard


def test_the_shard_marker_only_rises_until_it_is_lowered_as_observed(env: DispatchEnv) -> None:
    pair = Pair(env)
    for store in (pair.real, pair.model):
        assert store.shard_marker() is None
        store.raise_marker(8)
        store.raise_marker(2)
        assert store.shard_marker() == ShardMarker(8)
        assert (store.note_empty(4, START), store.note_empty(8, START)) == (False, True)
        assert store.shard_marker() == ShardMarker(8, START)
        store.raise_marker(16)
        assert store.shard_marker() == ShardMarker(16)
        assert (store.lower_marker(8, 2), store.lower_marker(16, 2), store.shard_marker()) == (
            False,
            True,
            ShardMarker(2),
        )
