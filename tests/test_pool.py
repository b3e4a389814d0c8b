"""pycatar.pool against its oracle, the standard library's concurrent.futures: the same scenario run
on both pools gives the same outcomes (values, errors, cancellations, refusals, order)."""

import concurrent.futures as cf
import threading
import time

import pytest

from pycatar import pool as pp


def _std(workers, name):
    return cf.ThreadPoolExecutor(workers, thread_name_prefix=name)


POOLS = {"stdlib": (_std, cf.Future, cf.CancelledError), "pycatar": (pp.ThreadPool, pp.Future, pp.CancelledError)}


def outcome(fut, kind, timeout=10):
    _, _, cancelled = POOLS[kind]
    try:
        return ("value", fut.result(timeout))
    except cancelled:
        return ("cancelled",)
    except Exception as e:  # noqa: BLE001 - the outcome compared
        return ("error", type(e).__name__, str(e))


def both(scenario):
    """The scenario's result on each pool; they must be equal."""
    results = {kind: scenario(kind, *POOLS[kind]) for kind in POOLS}
    assert results["pycatar"] == results["stdlib"]
    return results["pycatar"]


def _fail(msg):
    raise ValueError(msg)


def test_values_and_errors():
    def scenario(kind, make, *_):
        with make(2, "t") as ex:
            futs = [ex.submit(pow, 2, i) for i in range(20)] + [ex.submit(_fail, "bad chunk")]
            futs.append(ex.submit(lambda *, k: k * 3, k=7))
        return [outcome(f, kind) for f in futs] + [[f.done() for f in futs]]
    res = both(scenario)
    assert res[3] == ("value", 8) and res[20] == ("error", "ValueError", "bad chunk") and res[21] == ("value", 21)


def test_cancel_before_start_while_running_and_after():
    def scenario(kind, make, *_):
        gate, started = threading.Event(), threading.Event()

        def blocker():
            started.set()
            gate.wait(10)
            return "ran"
        with make(1, "t") as ex:
            running = ex.submit(blocker)
            started.wait(10)
            queued = ex.submit(pow, 3, 2)
            cancels = [running.cancel(), queued.cancel(), queued.cancel()]
            states = [running.running(), running.done(), queued.cancelled(), queued.done()]
            gate.set()
        return cancels, states, outcome(running, kind), outcome(queued, kind), running.cancel()
    assert both(scenario) == ([False, True, True], [True, False, True, True], ("value", "ran"), ("cancelled",), False)


def test_refuses_after_shutdown_and_cancel_futures_drops_queued_jobs():
    def scenario(kind, make, *_):
        gate, started = threading.Event(), threading.Event()
        ran = []

        def blocker():
            started.set()
            gate.wait(10)
            return "first"
        ex = make(1, "t")
        first = ex.submit(blocker)
        started.wait(10)
        rest = [ex.submit(ran.append, i) for i in range(5)]
        threading.Timer(0.2, gate.set).start()
        ex.shutdown(wait=True, cancel_futures=True)
        try:
            ex.submit(pow, 1, 1)
            refused = None
        except RuntimeError as e:
            refused = str(e)
        ex.shutdown()  # twice: no effect
        return outcome(first, kind), [outcome(f, kind) for f in rest], ran, refused
    first, rest, ran, refused = both(scenario)
    assert first == ("value", "first") and rest == [("cancelled",)] * 5 and ran == []
    assert refused == "cannot schedule new futures after shutdown"


def test_leaving_the_with_block_waits_for_every_job():
    def scenario(kind, make, *_):
        done = []

        def slow(i):
            time.sleep(0.01)
            done.append(i)
        with make(2, "t") as ex:
            for i in range(30):
                ex.submit(slow, i)
        return sorted(done)
    assert both(scenario) == list(range(30))


def test_map_keeps_order_and_raises_the_first_error_in_order():
    def scenario(kind, make, *_):
        with make(3, "t") as ex:
            values = list(ex.map(lambda a, b: a * b, range(50), range(100, 150)))
            it = ex.map(lambda x: x if x != 5 else _fail(f"no {x}"), range(10))
            got = []
            try:
                for v in it:
                    got.append(v)
            except ValueError as e:
                got.append(str(e))
        return values, got
    values, got = both(scenario)
    assert values[7] == 7 * 107 and got == [0, 1, 2, 3, 4, "no 5"]


def test_threads_start_as_needed_up_to_the_limit_with_their_names():
    def scenario(kind, make, *_):
        names = set()
        barrier = threading.Barrier(3, timeout=10)

        def job():
            names.add(threading.current_thread().name)
            barrier.wait()
        with make(3, "pycatar-x") as ex:
            for f in [ex.submit(job) for _ in range(3)]:
                f.result(10)
            ex.submit(time.sleep, 0).result(10)
            for _ in range(20):
                ex.submit(names.add, threading.current_thread().name)  # (the submitter's name: ignored below)
        return sorted(n.rsplit("_", 1)[0] for n in names if n != "MainThread"), len(names - {"MainThread"})
    assert both(scenario) == (["pycatar-x"] * 3, 3)


def test_a_future_made_by_hand_wakes_every_waiter_and_is_set_once():
    def scenario(kind, make, future, cancelled):
        f = future()
        got = []
        waiters = [threading.Thread(target=lambda: got.append(outcome(f, kind))) for _ in range(4)]
        for t in waiters:
            t.start()
        time.sleep(0.05)
        early = f.done()
        f.set_result(b"chunk")
        for t in waiters:
            t.join(10)
        try:
            f.set_result(b"again")
            second = "accepted"
        except Exception:  # noqa: BLE001 - stdlib: InvalidStateError; pycatar: RuntimeError
            second = "refused"
        g = future()
        g.set_exception(OSError(5, "EIO"))
        h = future()
        try:
            h.result(timeout=0.05)
            timed_out = False
        except TimeoutError:
            timed_out = True
        return early, got, second, outcome(g, kind), type(g.exception()).__name__, timed_out, f.cancel()
    early, got, second, err, exc_type, timed_out, cancel = both(scenario)
    assert not early and got == [("value", b"chunk")] * 4 and second == "refused" and timed_out and not cancel
    assert err == ("error", "OSError", "[Errno 5] EIO") and exc_type == "OSError"


def test_inline_runs_each_job_at_submission():
    order = []
    f = pp.Inline().submit(lambda: order.append("ran") or 5)
    order.append("submitted")
    g = pp.Inline().submit(_fail, "x")
    assert order == ["ran", "submitted"] and f.result() == 5 and f.done()
    with pytest.raises(ValueError, match="x"):
        g.result()
