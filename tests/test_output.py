"""Captured output (issue 9, item 3): what a run writes to sys.stdout and
sys.stderr -- print, warnings, logging, its tasks and worker threads -- comes
back in its report, scoped to that run by the run context; the host's own
writes, and runs that do not capture, go to the host's streams; a cell can
neither reach the host's stream through the router nor unhook it."""
import asyncio
import io
import logging
import sys
import warnings

import pytest

from conftest import host_ns
from safepyrun import RunPython


def report(py, code, **kw):
    return asyncio.run(py.run(code, **kw))


@pytest.fixture
def host_out():
    """The host's stdout and stderr, as fresh StringIOs (not routers) for
    the test's body.  Set inside the body by hand: pytest's own capture
    puts its streams back between a fixture's set-up and the test."""
    return HostStreams()


class HostStreams:
    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    def __getitem__(self, i):
        return (self.out, self.err)[i]

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.saved


@pytest.fixture
def py():
    return RunPython(host_ns(), ok_dests=[])


def test_print_is_captured_not_shown(py, host_out):
    with host_out:
        r = report(py, "print('hello')\nprint('x', 1, sep='-', end='!')")
        assert r.stdout == "hello\nx-1!"
        assert r.stderr == ""
        assert host_out[0].getvalue() == ""


def test_plain_call_keeps_seed_behaviour(py, host_out):
    """await python(code): output on the host's stdout, as in the seed, even
    after a report installed the router."""
    with host_out:
        report(py, "print('captured')")
        assert asyncio.run(py("print('shown')\n1")) == 1
        assert host_out[0].getvalue() == "shown\n"


def test_echo_tees(host_out):
    with host_out:
        py = RunPython(host_ns(), ok_dests=[], echo=True)
        r = report(py, "print('both')\nimport sys\nprint('e', file=sys.stderr)")
        assert r.stdout == "both\n" and r.stderr == "e\n"
        assert host_out[0].getvalue() == "both\n"
        assert host_out[1].getvalue() == "e\n"


def test_echo_per_call_overrides_runner(py, host_out):
    with host_out:
        r = report(py, "print('one')", echo=True)
        assert r.stdout == "one\n" and host_out[0].getvalue() == "one\n"
        quiet = RunPython(host_ns(), ok_dests=[], echo=True)
        r = report(quiet, "print('two')", echo=False)
        assert r.stdout == "two\n" and host_out[0].getvalue() == "one\n"


def _show(message, category, filename, lineno, file=None, line=None):
    """warnings' default display, as pytest's recording replaces it."""
    sys.stderr.write(warnings.formatwarning(message, category, filename,
                                            lineno, line))


def test_stderr_and_warnings_captured(py, host_out):
    with host_out:
        with warnings.catch_warnings():
            # pytest records warnings; put back a printing showwarning.
            warnings.simplefilter("always")
            warnings.showwarning = _show
            r = report(py, "import sys, warnings\n"
                           "print('to err', file=sys.stderr)\n"
                           "warnings.warn('careful', UserWarning)")
        assert r.stderr.startswith("to err\n")
        assert "UserWarning: careful" in r.stderr
        assert host_out[1].getvalue() == ""


def test_logging_handler_made_before_the_run_is_captured(py, host_out):
    """A StreamHandler created before the first capturing run holds the
    host's stream object itself: it is pointed at the router, so the run's
    records are the run's and the host's still reach the host."""
    with host_out:
        log = logging.getLogger("safepyrun.test_output")
        handler = logging.StreamHandler(sys.stderr)  # holds host_out[1]
        assert handler.stream is host_out[1]
        log.addHandler(handler)
        log.propagate = False
        try:
            py.g["log"] = log
            r = report(py, "log.warning('from the cell')")
            assert r.stderr == "from the cell\n"
            assert host_out[1].getvalue() == ""
            log.warning("from the host")
            assert host_out[1].getvalue() == "from the host\n"
        finally:
            log.removeHandler(handler)


def test_logging_basicconfig_inside_the_cell(py, host_out):
    with host_out:
        r = report(py, "import logging\n"
                       "lg = logging.getLogger('safepyrun.test_output.cell')\n"
                       "h = logging.StreamHandler()\n"
                       "lg.addHandler(h)\nlg.propagate = False\n"
                       "lg.error('boom')\nlg.removeHandler(h)")
        assert r.stderr == "boom\n"


def test_tasks_the_cell_spawns_are_captured(py, host_out):
    with host_out:
        r = report(py, "import asyncio\n"
                       "async def child(n):\n"
                       "    await asyncio.sleep(0)\n"
                       "    print('child', n)\n"
                       "asyncio.create_task(child(1))\n"
                       "asyncio.ensure_future(child(2))\n"
                       "print('parent')")
        assert sorted(r.stdout.splitlines()) == ["child 1", "child 2", "parent"]
        assert host_out[0].getvalue() == ""


def test_worker_thread_of_the_run_is_captured(py, host_out):
    with host_out:
        r = report(py, "import asyncio\nawait asyncio.to_thread(print, 'thread')")
        assert r.stdout == "thread\n"


def test_two_concurrent_runs_get_exactly_their_own_output(host_out):
    with host_out:
        a = RunPython(host_ns(), ok_dests=[])
        b = RunPython(host_ns(), ok_dests=[])
        code = ("import asyncio\n"
                "for i in range(5):\n"
                "    print(NAME, i)\n"
                "    await asyncio.sleep(0)\n"
                "    import sys; print(NAME, 'err', i, file=sys.stderr)\n")
        a.g["NAME"], b.g["NAME"] = "A", "B"

        async def both():
            return await asyncio.gather(a.run(code), b.run(code))

        ra, rb = asyncio.run(both())
        assert ra.stdout == "".join(f"A {i}\n" for i in range(5))
        assert rb.stdout == "".join(f"B {i}\n" for i in range(5))
        assert ra.stderr == "".join(f"A err {i}\n" for i in range(5))
        assert rb.stderr == "".join(f"B err {i}\n" for i in range(5))
        assert host_out[0].getvalue() == "" and host_out[1].getvalue() == ""


def test_host_prints_during_the_cells_await_go_to_the_host(py, host_out):
    with host_out:
        async def main():
            started = asyncio.Event()
            py.g["started"] = started

            async def host():
                await started.wait()
                print("host line")
                sys.stderr.write("host err\n")

            task = asyncio.create_task(host())
            r = await py.run("print('before')\nstarted.set()\n"
                             "import asyncio\nawait asyncio.sleep(0.05)\n"
                             "print('after')")
            await task
            return r

        r = asyncio.run(main())
        assert r.stdout == "before\nafter\n"
        assert host_out[0].getvalue() == "host line\n"
        assert host_out[1].getvalue() == "host err\n"


def test_plain_run_concurrent_with_a_report(host_out):
    """A python(code) run beside a capturing one: its prints are the
    host's, the report's are the report's."""
    with host_out:
        a = RunPython(host_ns(), ok_dests=[])
        b = RunPython(host_ns(), ok_dests=[])
        code = ("import asyncio\nfor i in range(3):\n"
                "    print(NAME, i)\n    await asyncio.sleep(0)\n")
        a.g["NAME"], b.g["NAME"] = "R", "P"

        async def both():
            return await asyncio.gather(a.run(code), b(code))

        ra, _ = asyncio.run(both())
        assert ra.stdout == "R 0\nR 1\nR 2\n"
        assert host_out[0].getvalue() == "P 0\nP 1\nP 2\n"


def test_max_output_marker_exact(host_out):
    with host_out:
        py = RunPython(host_ns(), ok_dests=[], max_output=10)
        r = report(py, "print('y' * 12355, end='')")
        assert r.stdout == "yyyyyyyyyy\n... [output truncated: 12,345 more characters]\n"
        r = report(py, "print('ab')\nprint('c' * 30)\nimport sys\n"
                       "print('e' * 4, file=sys.stderr)")
        # Each stream is cut on its own; a cut after a newline adds none.
        assert r.stdout == "ab\nccccccc\n... [output truncated: 24 more characters]\n"
        assert r.stderr == "eeee\n"
        r = report(py, "print('x' * 9)")  # 10 characters: nothing cut
        assert r.stdout == "x" * 9 + "\n"


def test_max_output_zero_and_bad_values(host_out):
    with host_out:
        py = RunPython(host_ns(), ok_dests=[], max_output=0)
        assert report(py, "print('abc')").stdout == \
            "... [output truncated: 4 more characters]\n"
        with pytest.raises(ValueError):
            RunPython(host_ns(), ok_dests=[], max_output=-1)
        with pytest.raises(TypeError):
            RunPython(host_ns(), ok_dests=[], max_output="10")
        assert RunPython(host_ns(), ok_dests=[], max_output=5).max_output == 5
        assert RunPython(host_ns(), ok_dests=[]).max_output is None


def test_write_needs_str(py, host_out):
    with host_out:
        r = report(py, "import sys\nsys.stdout.write(b'x')")
        assert isinstance(r.error, TypeError)
        assert "must be str" in str(r.error)


def test_str_subclass_output_is_plain_text(py, host_out):
    with host_out:
        r = report(py, "class S(str):\n"
                       "    def __str__(self): return 'HIJACK'\n"
                       "    def __add__(self, o): return 'HIJACK'\n"
                       "import sys\nsys.stdout.write(S('plain'))")
        assert r.stdout == "plain" and type(r.stdout) is str


# ---- the router from a cell: no way to the host's stream, no unhooking ----

def test_cell_cannot_reach_the_host_stream(py, host_out):
    with host_out:
        r = report(py, "import sys\nsys.stdout.buffer")
        assert isinstance(r.error, AttributeError)
        assert "inside a sandboxed run" in str(r.error)
        r = report(py, "import sys\ngetattr(sys.stderr, '_target', None), "
                       "getattr(sys.stdout, 'target', None)")
        assert r.value == (None, None)
        r = report(py, "import gc, sys\ngc.get_referents(sys.stdout)")
        assert isinstance(r.error, PermissionError)
        r = report(py, "import sys\ntype(sys.stdout)(sys.stdout)")
        assert isinstance(r.error, TypeError)
        r = report(py, "import sys\ntype(sys.stdout).write = lambda s, t: 0")
        assert isinstance(r.error, TypeError)
        # The host still gets everything.
        assert sys.stdout.getvalue is not None
        print("host", end="")
        assert host_out[0].getvalue() == "host"


def test_cell_cannot_close_the_host_stream(py, host_out):
    with host_out:
        r = report(py, "import sys\nsys.stdout.close()")
        assert isinstance(r.error, PermissionError)
        assert "close sys.stdout" in str(r.error)
        assert not host_out[0].closed
        print("still open", end="")
        assert host_out[0].getvalue() == "still open"


def test_cell_rebinding_sys_stdout_does_not_reach_the_host(py, host_out):
    with host_out:
        r = report(py, "import sys, io\nmine = io.StringIO()\nsys.stdout = mine\n"
                       "print('to mine')\nsys.stderr = None")
        assert r.error is None
        assert py.g["mine"].getvalue() == "to mine\n"
        assert type(sys.stdout).__name__ == "OutputRouter"
        assert type(sys.stderr).__name__ == "OutputRouter"
        print("host after", end="")
        assert host_out[0].getvalue() == "host after"
        assert py.g["mine"].getvalue() == "to mine\n"


def test_cells_own_redirect_lasts_across_its_awaits(py, host_out):
    with host_out:
        async def main():
            async def host():
                for _ in range(3):
                    print("host")
                    await asyncio.sleep(0)
            t = asyncio.create_task(host())
            r = await py.run("import contextlib, io, asyncio\nbuf = io.StringIO()\n"
                             "with contextlib.redirect_stdout(buf):\n"
                             "    print('a')\n    await asyncio.sleep(0.01)\n"
                             "    print('b')\nprint('c')")
            await t
            return r
        r = asyncio.run(main())
        assert py.g["buf"].getvalue() == "a\nb\n"
        assert r.stdout == "c\n"
        assert host_out[0].getvalue() == "host\n" * 3


def test_router_is_transparent_for_the_host(py, host_out):
    with host_out:
        report(py, "print(1)")
        router = sys.stdout
        assert type(router).__name__ == "OutputRouter"
        assert router.getvalue() == ""         # the StringIO's own method
        assert router.isatty() is False
        assert router.closed is False
        print("x")
        router.flush()
        assert host_out[0].getvalue() == "x\n"


def test_isatty_fileno_inside_a_captured_run(py, host_out):
    with host_out:
        r = report(py, "import sys, io\n"
                       "try:\n    sys.stdout.fileno()\n"
                       "except io.UnsupportedOperation as e:\n    err = str(e)\n"
                       "sys.stdout.isatty(), sys.stdout.writable(), "
                       "sys.stdout.closed, err")
        assert r.value == (False, True, False,
                           "fileno: this run's output is captured by safepyrun")


def test_writes_after_the_run_go_to_the_host(py, host_out):
    """A callback the cell left behind writes after its report is closed:
    to the host, not into a report no one reads."""
    with host_out:
        async def main():
            r = await py.run("import asyncio\nloop = asyncio.get_running_loop()\n"
                             "loop.call_later(0.02, print, 'late')\nprint('now')")
            await asyncio.sleep(0.1)
            return r
        r = asyncio.run(main())
        assert r.stdout == "now\n"
        assert host_out[0].getvalue() == "late\n"


def test_router_passes_attribute_writes_to_the_host_stream(py, host_out):
    with host_out:
        report(py, "1")
        sys.stdout.custom_state = 5
        assert host_out[0].custom_state == 5
        assert isinstance(sys.stdout, io.TextIOBase)
        r = report(py, "import sys\nsys.stdout.custom_state = 6")
        assert isinstance(r.error, AttributeError)
        assert host_out[0].custom_state == 5
        r = report(py, "import sys\nsys.stdout.custom_state")
        assert isinstance(r.error, AttributeError)


def test_router_cannot_be_copied_or_pickled_from_a_cell(py, host_out):
    with host_out:
        for code in ("import copy, sys\ncopy.copy(sys.stdout)",
                     "import pickle, sys\npickle.dumps(sys.stdout)",
                     "import sys\nsys.stdout.__reduce_ex__(2)",
                     "import sys\nobject.__getattribute__(sys.stdout, 'buffer')"):
            r = report(py, code)
            assert isinstance(r.error, (TypeError, AttributeError)), (code, r)
            assert "StringIO" not in repr(r.value)


def test_cell_function_called_later_by_the_host_is_still_restricted(py, host_out):
    """Code a cell made stays sandboxed when the host calls it after the run:
    it still cannot reach the host's stream through the router."""
    with host_out:
        report(py, "import sys\ndef grab_():\n    return sys.stdout.buffer")
        with pytest.raises(AttributeError):
            py.g["grab_"]()
        sys.stdout.write("host")
        assert host_out[0].getvalue() == "host"


def test_a_run_cannot_read_another_runs_output(host_out):
    """The report lives in the run object, which offers a cell its policy's
    ok_dests and yolo only; the garbage collector's views are refused."""
    a = RunPython(host_ns(), ok_dests=[])
    b = RunPython(host_ns(), ok_dests=[])

    async def both():
        started = asyncio.Event()
        a.g["started"] = b.g["started"] = started
        ra = a.run("import asyncio\nprint('secret of A')\nstarted.set()\n"
                   "await asyncio.sleep(0.05)")
        rb = b.run("import asyncio, contextvars, gc\nawait started.wait()\n"
                   "runs = [v for k, v in contextvars.copy_context().items()\n"
                   "        if type(v).__name__ == 'Run']\n"
                   "found = [a for r in runs for a in dir(r)\n"
                   "         if 'report' in a or 'out' in a]\n"
                   "try:\n    gc.get_objects()\nexcept PermissionError:\n"
                   "    found.append('refused')\n"
                   "found")
        return await asyncio.gather(ra, rb)

    with host_out:
        ra, rb = asyncio.run(both())
    assert ra.stdout == "secret of A\n"
    assert rb.value == ["refused"], rb
    assert "secret" not in rb.stdout
