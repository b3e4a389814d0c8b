"""Worker threads: a pool that runs jobs, and the futures that carry their results.

The part of :mod:`concurrent.futures` the pipelines use, with its semantics: ``submit`` returns a
:class:`Future`; ``result()`` blocks, then returns the value or raises the job's exception (or
:class:`CancelledError`); ``cancel()`` succeeds only before the job starts; a pool refuses jobs after
``shutdown`` (RuntimeError), and leaving its ``with`` block waits for every job.  The standard module
is not used because importing it costs 15-20 ms of every command's start-up (it loads logging,
traceback and tokenize; benchmarks/RESULTS.md, session 15).  A pool still works with the standard
futures' users: :func:`asyncio.wrap_future` is the one thing it cannot feed, and the server keeps the
standard executor for its event loop.
"""

from __future__ import annotations

import queue
import threading

_PENDING, _RUNNING, _DONE, _FAILED, _CANCELLED = range(5)


class CancelledError(Exception):
    """The job of a future was cancelled before it started."""


class Future:
    """The result of a job: set once, by the pool or by whoever created the future."""

    __slots__ = ("_state", "_value", "_guard", "_finished")

    def __init__(self) -> None:
        self._state = _PENDING
        self._value = None
        self._guard = threading.Lock()  # for each change of state (cancel against start or result)
        self._finished = threading.Lock()  # held until the future is done: waiters block on it
        self._finished.acquire()

    def __repr__(self) -> str:
        return f"<Future {('pending', 'running', 'done', 'failed', 'cancelled')[self._state]}>"

    def done(self) -> bool:
        """Whether the future has a result, an exception or was cancelled."""
        return self._state >= _DONE

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def running(self) -> bool:
        return self._state == _RUNNING

    def cancel(self) -> bool:
        """Cancel the job if it has not started; True when the future is (now) cancelled."""
        with self._guard:
            if self._state != _PENDING:
                return self._state == _CANCELLED
            self._state = _CANCELLED
        self._finished.release()
        return True

    def _start(self) -> bool:
        """The job starts (False: it was cancelled, and must not run)."""
        with self._guard:
            if self._state != _PENDING:
                return False
            self._state = _RUNNING
            return True

    def _finish(self, state: int, value) -> None:
        with self._guard:
            if self._state >= _DONE:
                raise RuntimeError(f"{self!r} is already done")
            self._state = state
            self._value = value
        self._finished.release()

    def set_result(self, value) -> None:
        self._finish(_DONE, value)

    def set_exception(self, error: BaseException) -> None:
        self._finish(_FAILED, error)

    def _wait(self, timeout: float | None) -> None:
        if self._state < _DONE:
            if not self._finished.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError
            self._finished.release()  # (the next waiter's turn)

    def result(self, timeout: float | None = None):
        """The job's value, once it is done; its exception is raised here."""
        self._wait(timeout)
        if self._state == _DONE:
            return self._value
        if self._state == _CANCELLED:
            raise CancelledError
        raise self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        if self._state == _CANCELLED:
            raise CancelledError
        return self._value if self._state == _FAILED else None


def run_now(fn, /, *args, **kwargs) -> Future:
    """A done future holding what ``fn(*args, **kwargs)`` returned or raised: the job run in this
    thread (for the pipelines run without a pool)."""
    f = Future()
    try:
        f._value = fn(*args, **kwargs)
        f._state = _DONE
    except BaseException as e:  # noqa: BLE001 - handed to the caller via the future
        f._value = e
        f._state = _FAILED
    f._finished.release()
    return f


class Inline:
    """A pool without threads: each job runs at submission."""

    submit = staticmethod(run_now)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class ThreadPool:
    """Up to ``workers`` threads, started as jobs arrive (a thread is started while none is idle),
    named ``name_0``, ``name_1``...  Jobs run in the order submitted."""

    def __init__(self, workers: int, name: str = "pycatar") -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self._workers = workers
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads that finished a job and wait for the next (with _lock)
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        f = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((f, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._workers:
                t = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)
        return f

    def map(self, fn, *iterables):
        """``fn`` over ``iterables`` in the pool: every job submitted now, the results yielded in
        order; leaving the iteration early cancels the jobs not started."""
        futures = [self.submit(fn, *args) for args in zip(*iterables)]

        def results():
            try:
                for f in futures:
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()
        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; ``cancel_futures``: cancel those not started; ``wait``: until every
        thread has finished."""
        with self._lock:
            stops = 0
            if cancel_futures:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stops += 1  # (an earlier shutdown's: put back below)
                    else:
                        job[0].cancel()
            if not self._closed:
                self._closed = True
                stops = len(self._threads)
            for _ in range(stops):
                self._jobs.put(None)  # one stop per thread, after the jobs already queued
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            f, fn, args, kwargs = job
            del job
            if f._start():
                try:
                    value = fn(*args, **kwargs)
                except BaseException as e:  # noqa: BLE001 - handed to the caller via the future
                    f._finish(_FAILED, e)
                    del e
                else:
                    f._finish(_DONE, value)
                    del value
            del f, fn, args, kwargs
            with self._lock:
                self._idle += 1
