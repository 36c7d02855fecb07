"""Sequences the exactly-once model found, kept as they were found so they can never come back."""

from __future__ import annotations

from tests.model.model_support import model_session
from tests.model.test_exactly_once_model import ExactlyOnceModel


def test_a_row_written_to_a_high_shard_as_the_count_drops_is_not_stranded() -> None:
    """A trigger created under 8 shards, in the second before the count went to 2, while the due index
    lagged: a re-shard pass read the high shards empty and stopped reading them, and the trigger's
    21:50 occurrence ran nowhere (lost-occurrence). The shards above the count must now read empty
    for RESHARD_QUIET before they are given up."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=1, shards=1)
        state.advance_clock(seconds=1)
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.patch(change="disable", crash=False, run_in=192, slot="t0")
        state.begin_dispatch(pick=2)
        state.patch(change="enable", crash=True, run_in=397, slot="t0")
        state.dispatcher_tick()
        state.reshard(shards=1)
        state.sfn_healthy()
        state.sfn_healthy()
        state.run_now(key="k1", slot="t0")
        state.patch(change="enable", crash=False, run_in=231, slot="t0")
        state.advance_clock(seconds=4096)
        state.patch(change="cron:* * * * *", crash=False, run_in=199, slot="t1")
        state.advance_clock(seconds=7556)
        state.advance_clock(seconds=4100)
        state.reshard(shards=2)
        state.advance_clock(seconds=4100)
        state.sfn_fault(calls=None, kind="lost", seconds=262)
        state.advance_clock(seconds=4717)
        state.delete(slot="t0")
        state.run_now(key=None, slot="t1")
        state.reshard(shards=1)
        state.reshard(shards=8)
        state.patch(change="maxRetries", crash=False, run_in=280, slot="t0")
        state.advance_clock(seconds=51)
        state.sfn_fault(calls=1, kind="throttle", seconds=336)
        state.run_now(key=None, slot="t0")
        state.sfn_healthy()
        state.create(
            catch_up=3600, crash=False, max_retries=1, overlap="allow", run_in=117, schedule="* * * * *", slot="t1"
        )
        state.create(
            catch_up=3600, crash=True, max_retries=2, overlap="allow", run_in=100, schedule="* * * * *", slot="t1"
        )
        state.dispatcher_tick()
        state.cancel(pick=1, slot="t0")
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.sfn_fault(calls=1, kind="lost", seconds=221)
        state.sfn_fault(calls=None, kind="lost", seconds=328)
        state.dispatcher_tick()
        state.reshard(shards=2)
        state.teardown()


def test_a_row_written_under_a_shard_count_no_dispatcher_used_is_not_stranded() -> None:
    """The API wrote a one-time trigger into shard 3 of 4 while no dispatcher had ever ticked with 4
    shards; the count went back to 2 before the next tick, which then read shards 0 and 1 only, so
    the occurrence was neither run nor counted as missed (lost-occurrence). Writers now make the shard
    marker cover their count before they write."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.patch(change="disable", crash=False, run_in=326, slot="t0")
        state.advance_clock(seconds=1)
        state.reshard(shards=2)
        state.patch(change="cron:* * * * *", crash=True, run_in=274, slot="t0")
        state.sfn_fault(calls=None, kind="lost", seconds=395)
        state.run_now(key="k1", slot="t0")
        state.reshard(shards=4)
        state.patch(change="cron:*/5 * * * *", crash=False, run_in=158, slot="t0")
        state.create(catch_up=0, crash=True, max_retries=1, overlap="allow", run_in=126, schedule="once", slot="t0")
        state.reshard(shards=4)
        state.patch(change="cron:*/5 * * * *", crash=True, run_in=148, slot="t0")
        state.advance_clock(seconds=4078)
        state.advance_clock(seconds=55)
        state.patch(change="runAt", crash=False, run_in=400, slot="t0")
        state.sfn_fault(calls=None, kind="throttle", seconds=442)
        state.sfn_fault(calls=None, kind="lost", seconds=496)
        state.create(catch_up=3600, crash=True, max_retries=0, overlap="skip", run_in=312, schedule="once", slot="t1")
        state.create(
            catch_up=3600, crash=False, max_retries=0, overlap="skip", run_in=148, schedule="*/5 * * * *", slot="t1"
        )
        state.sfn_fault(calls=None, kind="throttle", seconds=233)
        state.reshard(shards=4)
        state.advance_clock(seconds=5425)
        state.create(
            catch_up=0, crash=False, max_retries=1, overlap="skip", run_in=251, schedule="* * * * *", slot="t1"
        )
        state.advance_clock(seconds=28)
        state.run_now(key="k1", slot="t0")
        state.advance_clock(seconds=5)
        state.advance_clock(seconds=198)
        state.patch(change="maxRetries", crash=False, run_in=198, slot="t0")
        state.advance_clock(seconds=6673)
        state.run_now(key=None, slot="t0")
        state.patch(change="maxRetries", crash=True, run_in=346, slot="t0")
        state.reshard(shards=8)
        state.reshard(shards=2)
        state.create(catch_up=0, crash=True, max_retries=0, overlap="skip", run_in=204, schedule="once", slot="t1")
        state.reshard(shards=4)
        state.reshard(shards=1)
        state.create(catch_up=0, crash=True, max_retries=0, overlap="allow", run_in=114, schedule="once", slot="t0")
        state.reshard(shards=2)
        state.reshard(shards=2)
        state.sfn_fault(calls=None, kind="throttle", seconds=321)
        state.teardown()


def test_a_cancelled_instant_that_an_edit_schedules_again_may_be_missed_again() -> None:
    """A user cancelled the claimed 15:05 of a `* * * * *` trigger; an edit then made it `*/5`, whose
    first occurrence is 15:05 again, claimed anew; that claim's first attempt came two hours late and
    was skipped as missed. Two occurrences of the same instant did not run, one of them missed: the
    model's over-count bound now counts such an instant as not run (the product was right)."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.patch(change="disable", crash=False, run_in=101, slot="t0")
        state.delete(slot="t0")
        state.advance_clock(seconds=1)
        state.advance_clock(seconds=1)
        state.advance_clock(seconds=21)
        state.advance_clock(seconds=1)
        state.advance_clock(seconds=3)
        state.advance_clock(seconds=228)
        state.sfn_fault(calls=1, kind="lost", seconds=165)
        state.delete(slot="t1")
        state.sfn_fault(calls=None, kind="throttle", seconds=79)
        state.sfn_fault(calls=3, kind="throttle", seconds=330)
        state.patch(change="maxRetries", crash=True, run_in=265, slot="t0")
        state.advance_clock(seconds=95)
        state.create(
            catch_up=3600, crash=False, max_retries=0, overlap="skip", run_in=166, schedule="* * * * *", slot="t0"
        )
        state.patch(change="enable", crash=True, run_in=400, slot="t0")
        state.cancel(pick=5, slot="t0")
        state.advance_clock(seconds=11)
        state.patch(change="cron:*/5 * * * *", crash=True, run_in=63, slot="t0")
        state.rerun(pick=4, slot="t1")
        state.step_execution(exhausted=False, fault="none", pick=0, reply=200)
        state.advance_clock(seconds=1)
        state.cancel(pick=4, slot="t1")
        state.rerun(pick=1, slot="t0")
        state.begin_dispatch(pick=0)
        state.reshard(shards=2)
        state.delete(slot="t1")
        state.delete(slot="t1")
        state.reshard(shards=4)
        state.sfn_fault(calls=None, kind="throttle", seconds=1)
        state.begin_dispatch(pick=3)
        state.create(
            catch_up=3600, crash=True, max_retries=1, overlap="skip", run_in=115, schedule="* * * * *", slot="t0"
        )
        state.advance_clock(seconds=7224)
        state.cancel(pick=3, slot="t0")
        state.create(
            catch_up=0, crash=False, max_retries=1, overlap="skip", run_in=166, schedule="*/5 * * * *", slot="t0"
        )
        state.sfn_fault(calls=3, kind="lost", seconds=538)
        state.teardown()


def test_a_late_claim_of_an_edited_schedule_obeys_the_missed_run_rule_of_its_own_schedule() -> None:
    """A `* * * * *` occurrence (14:59) whose start failed was re-driven at 15:02:07 and attempted
    after an edit had made the trigger one-time: the runner judged "a later occurrence was due" by
    the new schedule (one run, hours ahead) and ran it, though 15:00 and 15:01 of its own schedule
    were missed too (backlog-replay). The execution input now carries the occurrence that followed
    under the claim's schedule."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.begin_dispatch(pick=0)
        state.create(
            catch_up=0, crash=False, max_retries=0, overlap="allow", run_in=112, schedule="* * * * *", slot="t0"
        )
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.patch(change="disable", crash=True, run_in=304, slot="t0")
        state.patch(change="disable", crash=True, run_in=157, slot="t0")
        state.step_execution(exhausted=False, fault="none", pick=0, reply=200)
        state.dispatcher_tick()
        state.dispatcher_tick()
        state.create(
            catch_up=3600, crash=True, max_retries=0, overlap="allow", run_in=300, schedule="* * * * *", slot="t1"
        )
        state.rerun(pick=4, slot="t1")
        state.run_now(key=None, slot="t1")
        state.advance_clock(seconds=175)
        state.begin_dispatch(pick=3)
        state.advance_clock(seconds=21)
        state.patch(change="cron:*/5 * * * *", crash=False, run_in=191, slot="t0")
        state.advance_clock(seconds=21)
        state.begin_dispatch(pick=0)
        state.rerun(pick=5, slot="t1")
        state.step_execution(exhausted=False, fault="crash", pick=5, reply=400)
        state.run_now(key=None, slot="t0")
        state.dispatcher_tick()
        state.patch(change="runAt", crash=True, run_in=117, slot="t1")
        state.sfn_fault(calls=3, kind="lost", seconds=218)
        state.teardown()


def test_an_edit_at_an_instant_schedules_it_when_its_start_is_still_ahead() -> None:
    """An interval trigger with 30 s of jitter was created at 15:01:00 (anchor 15:01, first start
    15:03:10) and made `* * * * *` in the same second: the edited schedule's first occurrence is
    15:01, whose start (15:01:21) was still ahead, and it ran once. The model had given each schedule
    the instants after its start, so 15:01 belonged to neither (ran-superseded). An occurrence now
    belongs to the schedule in force at its start: an edit schedules from its first occurrence whose
    start is ahead, as the product does (the product was right)."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.invariants_hold()
        state.advance_clock(seconds=150)
        state.invariants_hold()
        state.create(
            catch_up=0,
            crash=False,
            jitter=30,
            max_retries=1,
            overlap="buffer_one",
            run_in=316,
            schedule="interval",
            slot="t1",
        )
        state.invariants_hold()
        state.patch(change="cron:* * * * *", crash=False, run_in=353, slot="t1")
        state.invariants_hold()
        state.teardown()


def test_an_edit_during_an_occurrences_jitter_takes_it_from_the_schedule_before() -> None:
    """The other side of the same rule: a `* * * * *` trigger with 30 s of jitter had 15:01 claimed (start
    15:01:21) when an edit at 15:01:05 made it `*/5`. The claim stood down as superseded and 15:01 did
    not run, since no schedule in force at its start has it; the model must not count it as lost."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.invariants_hold()
        state.advance_clock(seconds=100)
        state.invariants_hold()
        state.create(
            catch_up=0,
            crash=False,
            jitter=30,
            max_retries=1,
            overlap="allow",
            run_in=316,
            schedule="* * * * *",
            slot="t1",
        )
        state.invariants_hold()
        state.advance_clock(seconds=55)
        state.invariants_hold()
        state.patch(change="cron:*/5 * * * *", crash=False, run_in=353, slot="t1")
        state.invariants_hold()
        state.teardown()


def test_a_pause_between_an_instant_and_its_jittered_start_stands_the_occurrence_down() -> None:
    """A `* * * * *` trigger with 30 s of jitter and pauseOnFailure: its 14:59 run, whose Prepare step
    had failed, was finalized as failed at 15:01:01 and paused the trigger, 1 s after the 15:01 instant
    and 20 s before that occurrence's start (15:01:21). The runner stood 15:01 down as superseded, and
    nothing ran it or counted it as missed (lost-occurrence). A pause, like any edit, is judged against
    an occurrence's start, not its instant: one whose start was still ahead stands down, and a disabled
    trigger claims it no more. The model now expects of a closed schedule only the occurrences whose
    start was before the edit (the product was right)."""
    with model_session() as session:
        ExactlyOnceModel.session = session
        state = ExactlyOnceModel()
        state.start_world(lag=0, shards=1)
        state.invariants_hold()
        state.create(
            catch_up=0,
            crash=False,
            end_in=None,
            jitter=30,
            max_retries=0,
            max_runs=None,
            overlap="allow",
            pause_on_failure=True,
            run_in=60,
            schedule="* * * * *",
            slot="t0",
        )
        state.invariants_hold()
        state.step_execution(exhausted=True, fault="after", pick=0, reply=200)
        state.invariants_hold()
        state.advance_clock(seconds=119)
        state.invariants_hold()
        state.dispatcher_tick()
        state.invariants_hold()
        state.advance_clock(seconds=32)
        state.invariants_hold()
        state.teardown()
