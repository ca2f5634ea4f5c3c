"""The trusted-native cache in src/monitor.c stays exact.

Repeated calls of one trusted native skip the registry look-up.  These
attacks check that the shortcut never lets another callee through the same
call site, nor survives a change of the registry, on every interpreter (the
3.12+ CALL callback and 3.11's profile function share the cache).
"""
import _socket
import os
import socket

import pytest

from safepyrun import RunPython, allow, disallow

from conftest import host_ns, refused, run
from trust_helpers import clean_registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")


def test_same_site_other_native_is_refused(tmp_path, touch):
    """One call site: a trusted native three times, then an untrusted one."""
    marker = tmp_path / "ran"
    target = tmp_path / "made-by-cell"
    g = host_ns(cmd=f"{touch} {marker}", target=str(target))
    allow(os.system)
    py = RunPython(g, ok_dests=[])
    refused(py, "for f, a in [(os.system, cmd)] * 3 + [(os.mkdir, target)]:\n"
                "    f(a)", "os.mkdir")
    assert marker.exists()
    assert not target.exists()


def test_cache_does_not_survive_disallow(tmp_path, touch):
    marker = tmp_path / "ran"
    g = host_ns(cmd=f"{touch} {marker}")
    allow(os.system)
    py = RunPython(g, ok_dests=[])
    code = "for _ in range(3):\n    os.system(cmd)"
    run(py, code)
    assert marker.exists()
    marker.unlink()
    disallow(os.system)
    refused(py, code, "os.system")
    assert not marker.exists()


def test_bound_methods_other_method_same_type_is_refused():
    """Bound builtin methods made anew at each access: a registered method
    of a type is cached by type and method; another method of the same type
    at the same call site still takes the full look-up and is refused."""
    socks = [socket.socket() for _ in range(3)]
    try:
        g = host_ns(socks=socks, addr=("127.0.0.1", 0))
        allow({_socket.socket: ["bind"]})
        py = RunPython(g, ok_dests=[])
        refused(py, "for s, name in [(socks[0], 'bind'), (socks[1], 'bind'),"
                    " (socks[2], 'connect')]:\n"
                    "    getattr(s, name)(addr)", "socket.connect")
        assert socks[0].getsockname()[1] != 0
        assert socks[1].getsockname()[1] != 0
        with pytest.raises(OSError):
            socks[2].getpeername()
    finally:
        for s in socks:
            s.close()


def test_bound_method_cache_does_not_survive_disallow():
    socks = [socket.socket() for _ in range(2)]
    try:
        g = host_ns(socks=socks, addr=("127.0.0.1", 0))
        allow({_socket.socket: ["bind"]})
        py = RunPython(g, ok_dests=[])
        run(py, "b = socks[0].bind\nb(addr)")
        disallow(_socket.socket, "bind")
        refused(py, "b = socks[1].bind\nb(addr)", "socket.bind")
        assert socks[1].getsockname()[1] == 0
    finally:
        for s in socks:
            s.close()


def test_subclass_with_same_native_is_still_trusted_and_others_not():
    """A subclass instance shares the method definition (trusted, as the
    registry says); a different type with another bind is looked up anew."""
    class Sub(socket.socket):
        pass
    socks = [socket.socket(), Sub()]
    try:
        g = host_ns(socks=socks, addr=("127.0.0.1", 0))
        allow({_socket.socket: ["bind"]})
        py = RunPython(g, ok_dests=[])
        run(py, "for s in socks:\n    s.bind(addr)")
        assert all(s.getsockname()[1] != 0 for s in socks)
    finally:
        for s in socks:
            s.close()
