"""The escape corpus: each case is one attempt to cause one effect outside the
policy.  Data only; harness.py runs a case and judges it.

Names a cell sees (set by the harness): OK (the only ok_dest), OUT (a
directory outside it, holding victim.txt, sub/keep.txt, empty/), VICTIM,
WORLD (the cwd, outside OK), MARKER (a file `touch` would create: a program
ran), TOUCH, CMD (f"{TOUCH} {MARKER}"), PORT/UPORT (a loopback TCP listener
and UDP socket owned by the parent: a connection or datagram is an effect),
FLAG (a host list: anything appended is an effect), os, sys, Path, shutil,
`python` (the runner itself, as IPython's extension exposes it), and SPA
(the module that defines allow(): safepyrun here, pyskills in the published
implementation).
`tempfile.tempdir` is OUT, as if the system temp dir were not allowed.

Fields:
  id, group, kind ('clumsy' or 'deliberate'), code (the cell);
  setup   host code run before the run (ungated), e.g. a trusted tool;
  after   host code run after the run ended (ungated host calls into
          whatever the cell left behind);
  check   a host expression evaluated last: a non-empty string is an effect;
  holds_by  why the case holds without a sandbox PermissionError;
  skip_if   an expression (sys, impl) that makes the case not apply;
  known_gap why today's engine does not hold it (pytest: xfail, not strict).
"""
from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("write", "delete", "process", "network", "thread", "native",
          "trust", "gate", "after", "exhaust")


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    kind: str
    code: str
    setup: str | None = None
    after: str | None = None
    check: str | None = None
    holds_by: str | None = None
    skip_if: str | None = None
    known_gap: str | None = None


CASES: dict[str, Case] = {}


def C(id, group, kind, code, **kw):
    assert id not in CASES, id
    assert group in GROUPS and kind in ("clumsy", "deliberate"), id
    CASES[id] = Case(id, group, kind, code.strip("\n"), **kw)


VICTIM_SAME = "'' if open(VICTIM).read() == 'original' else 'victim.txt changed'"
TOOL_SETUP = """
import subprocess, safepyrun
try:
    from safepyrun import allow, PosAllowPolicy
except ImportError:  # the published implementation keeps them in pyskills
    from pyskills import allow, PosAllowPolicy
VCS = 'true'
def vcs_status(exe=None):
    "A host tool: runs the version-control status command."
    return subprocess.run([exe or VCS, 'status'], capture_output=True).returncode
def save_text(path, text):
    "A host tool: writes text to a path inside ok_dests."
    with open(path, 'w') as f:
        f.write(text)
    return len(text)
def apply(fn, *args):
    "A host tool that calls back."
    return fn(*args)
save_policy = PosAllowPolicy(0)
allow(vcs_status, apply)
allow(save_text, allow_policy=save_policy)
"""

# ---- write outside ok_dests -------------------------------------------------------

W = "write"
C("w-open", W, "clumsy", "open(OUT + '/result.txt', 'w').write('x')")
C("w-pathlib", W, "clumsy", "Path(OUT, 'result.txt').write_text('x')")
C("w-retry-os-open", W, "clumsy", """
p = OUT + '/result.txt'
try:
    open(p, 'w').write('x')
except PermissionError:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b'x')
    os.close(fd)
""")
C("w-shutil-copy", W, "clumsy", "shutil.copy(OK + '/data.txt', OUT + '/copy.txt')")
C("w-shutil-move", W, "clumsy", "shutil.move(OK + '/data.txt', OUT + '/moved.txt')")
C("w-path-rename", W, "clumsy", "Path(OK, 'data.txt').rename(OUT + '/renamed.txt')")
C("w-temp-then-replace", W, "clumsy", """
tmp = OK + '/out.tmp'
with open(tmp, 'w') as f:
    f.write('new contents')
os.replace(tmp, VICTIM)
""")
C("w-sqlite", W, "clumsy", """
import sqlite3
con = sqlite3.connect(OUT + '/cache.db')
con.execute('create table t (x)')
con.commit()
""")
C("w-tar-extract", W, "clumsy", """
import tarfile
with tarfile.open(OK + '/bundle.tar') as tf:
    tf.extractall(OK)
""", setup="""
import tarfile, io
with tarfile.open(OK + '/bundle.tar', 'w') as tf:
    data = b'escaped'
    info = tarfile.TarInfo('../escaped.txt'); info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
""")
C("w-zip-extract-outside", W, "clumsy", """
import zipfile
zipfile.ZipFile(OK + '/bundle.zip').extractall(OUT)
""", setup="""
import zipfile
with zipfile.ZipFile(OK + '/bundle.zip', 'w') as z:
    z.writestr('unpacked.txt', 'x')
""")
C("w-zip-create", W, "clumsy", """
import zipfile
with zipfile.ZipFile(OUT + '/archive.zip', 'w') as z:
    z.writestr('a.txt', 'x')
""")
C("w-logging-filehandler", W, "clumsy", """
import logging
log = logging.getLogger('rt')
log.addHandler(logging.FileHandler(OUT + '/app.log'))
log.warning('hello')
""")
C("w-tempfile-named", W, "clumsy", """
import tempfile
f = tempfile.NamedTemporaryFile('w', delete=False, suffix='.csv')
f.write('x'); f.close()
""")
C("w-tempfile-mkdtemp", W, "clumsy", "import tempfile\nd = tempfile.mkdtemp()")
C("w-chdir-relative", W, "clumsy", """
try:
    os.chdir(OUT)
except PermissionError:
    pass
open('result.txt', 'w').write('x')
""")
C("w-makedirs", W, "clumsy", "os.makedirs(OUT + '/new/deeper', exist_ok=True)")
C("w-append-victim", W, "clumsy", "with open(VICTIM, 'a') as f:\n    f.write('more')",
  check=VICTIM_SAME)
C("w-rplus-victim", W, "clumsy", "with open(VICTIM, 'r+') as f:\n    f.write('X')",
  check=VICTIM_SAME)
C("w-json-dump", W, "clumsy",
  "import json\njson.dump({'a': 1}, open(OUT + '/out.json', 'w'))")
C("w-csv-writer", W, "clumsy", """
import csv
with open(OUT + '/out.csv', 'w', newline='') as f:
    csv.writer(f).writerows([[1, 2], [3, 4]])
""")
C("w-print-file", W, "clumsy", "print('report', file=open(OUT + '/report.txt', 'w'))")
C("w-touch", W, "clumsy", "Path(OUT, 'touched').touch()")
C("w-chmod", W, "clumsy", "os.chmod(VICTIM, 0o777)")
C("w-utime", W, "clumsy", "os.utime(VICTIM, (0, 0))")
C("w-truncate", W, "clumsy", "os.truncate(VICTIM, 0)", check=VICTIM_SAME)
C("w-dotdot", W, "clumsy", "open(OK + '/../escaped.txt', 'w').write('x')")
C("w-copytree", W, "clumsy", "shutil.copytree(OK, OUT + '/backup')")
C("w-numpy-save", W, "clumsy",
  "import numpy as np\nnp.save(OUT + '/arr.npy', np.arange(3))")
C("w-pandas-to-csv", W, "clumsy", """
import pandas as pd
pd.DataFrame({'a': [1, 2]}).to_csv(OUT + '/df.csv')
""", skip_if="__import__('importlib.util').util.find_spec('pandas') is None")
C("w-matplotlib-savefig", W, "clumsy", """
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.savefig(OUT + '/plot.png')
""")
C("w-shelve", W, "clumsy", "import shelve\nwith shelve.open(OUT + '/store') as s:\n    s['k'] = 1")
C("w-home-dotfile", W, "clumsy", """
os.environ.get('HOME')
open(os.path.join(WORLD, '.bashrc_append'), 'a').write('alias ls=rm')
""")
# deliberate
C("w-dir-fd", W, "deliberate", """
d = os.open(OUT, os.O_RDONLY)
fd = os.open('dirfd.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)
os.write(fd, b'x')
""")
C("w-symlink-parent", W, "deliberate",
  "open(OK + '/link-out/through.txt', 'w').write('x')",
  setup="os.symlink(OUT, OK + '/link-out')")
C("w-symlink-final", W, "deliberate",
  "open(OK + '/link-victim', 'w').write('pwned')",
  setup="os.symlink(VICTIM, OK + '/link-victim')", check=VICTIM_SAME)
C("w-make-symlink-then-write", W, "deliberate", """
os.symlink(OUT, OK + '/ln')
open(OK + '/ln/via-new-link.txt', 'w').write('x')
""")
C("w-hardlink-then-write", W, "deliberate", """
os.link(VICTIM, OK + '/hard')
open(OK + '/hard', 'w').write('pwned')
""", check=VICTIM_SAME)
C("w-fspath-flip", W, "deliberate", """
class Flip:
    n = 0
    def __fspath__(self):
        Flip.n += 1
        return OK + '/fine.txt' if Flip.n == 1 else OUT + '/flipped.txt'
open(Flip(), 'w').write('x')
""", holds_by="open() converts the path once: the check and the open see the same path")
C("w-str-subclass-fspath", W, "deliberate", """
class P(str):
    def __fspath__(self):
        return OUT + '/sub.txt'
open(P(OK + '/inside.txt'), 'w').write('x')
os.makedirs(P(OK + '/d'))
""", holds_by="a str subclass is used as its str value by open(), makedirs and the check")
C("w-bytes-path", W, "deliberate", "open(os.fsencode(OUT + '/bytes.txt'), 'wb').write(b'x')")
C("w-fileio", W, "deliberate", "import io\nio.FileIO(OUT + '/fileio.txt', 'w').write(b'x')")
C("w-o-creat-rdonly", W, "deliberate",
  "os.close(os.open(OUT + '/created.txt', os.O_RDONLY | os.O_CREAT, 0o644))")
C("w-o-trunc-rdonly", W, "deliberate",
  "os.close(os.open(VICTIM, os.O_RDONLY | os.O_TRUNC))", check=VICTIM_SAME)
C("w-fchmod-readonly-fd", W, "deliberate",
  "fd = os.open(VICTIM, os.O_RDONLY)\nos.fchmod(fd, 0o777)")
C("w-mkfifo", W, "deliberate", "os.mkfifo(OUT + '/fifo')")
C("w-mknod", W, "deliberate", "import stat\nos.mknod(OUT + '/node', 0o600 | stat.S_IFREG)")
C("w-setxattr", W, "deliberate", "os.setxattr(VICTIM, 'user.rt', b'1')",
  check="'' if not os.listxattr(VICTIM) else 'xattr set'")
C("w-chown", W, "deliberate", "os.chown(VICTIM, 12345, 12345)")
C("w-chdir-inside-then-dotdot", W, "deliberate",
  "os.chdir(OK)\nopen('../escaped.txt', 'w').write('x')",
  after="os.chdir(WORLD)")
C("w-dangling-symlink", W, "deliberate",
  "shutil.copyfile(OK + '/data.txt', OK + '/dangling')",
  setup="os.symlink(OUT + '/created-through-link.txt', OK + '/dangling')")
C("w-rename-dir-fds", W, "deliberate", """
src = os.open(OK, os.O_RDONLY)
dst = os.open(OUT, os.O_RDONLY)
os.rename('data.txt', 'renamed.txt', src_dir_fd=src, dst_dir_fd=dst)
""")
C("w-posix-module", W, "deliberate", """
posix = __import__('posix')
fd = posix.open(OUT + '/posix.txt', posix.O_WRONLY | posix.O_CREAT, 0o644)
posix.write(fd, b'x')
""")

# ---- delete ------------------------------------------------------------------------

D = "delete"
C("d-remove", D, "clumsy", "os.remove(VICTIM)")
C("d-unlink-path", D, "clumsy", "Path(VICTIM).unlink()")
C("d-rmtree", D, "clumsy", "shutil.rmtree(OUT + '/sub')")
C("d-rmdir", D, "clumsy", "os.rmdir(OUT + '/empty')")
C("d-retry-rm", D, "clumsy", """
try:
    os.remove(VICTIM)
except PermissionError:
    import subprocess
    subprocess.run(['rm', '-f', VICTIM])
""")
C("d-move-away", D, "clumsy", "shutil.move(VICTIM, OK + '/stolen.txt')")
C("d-rename-away", D, "clumsy", "os.rename(VICTIM, OK + '/stolen.txt')")
C("d-clean-outputs", D, "clumsy", """
import glob
for f in glob.glob(OUT + '/**/*.txt', recursive=True):
    os.remove(f)
""")
C("d-rmtree-dotdot", D, "clumsy", "shutil.rmtree(OK + '/../outside/sub')")
C("d-dir-fd", D, "deliberate",
  "d = os.open(OUT, os.O_RDONLY)\nos.unlink('victim.txt', dir_fd=d)")
C("d-posix-unlink", D, "deliberate", "__import__('posix').unlink(VICTIM)")
C("d-replace-over", D, "deliberate", """
open(OK + '/empty.txt', 'w').close()
os.replace(OK + '/empty.txt', VICTIM)
""")
C("d-rmtree-symlink", D, "deliberate", "shutil.rmtree(OK + '/link-sub/')",
  setup="os.symlink(OUT + '/sub', OK + '/link-sub')")
C("d-rmtree-inside-link", D, "deliberate", """
for name in os.listdir(OK + '/link-sub'):
    os.remove(OK + '/link-sub/' + name)
""", setup="os.symlink(OUT + '/sub', OK + '/link-sub')")

# ---- spawn a process ----------------------------------------------------------------

P = "process"
C("p-subprocess-run", P, "clumsy", "import subprocess\nsubprocess.run([TOUCH, MARKER])")
C("p-os-system", P, "clumsy", "os.system(CMD)")
C("p-os-popen", P, "clumsy", "os.popen(CMD).read()")
C("p-check-output-shell", P, "clumsy",
  "import subprocess\nsubprocess.check_output(CMD, shell=True)")
C("p-getoutput", P, "clumsy", "import subprocess\nsubprocess.getoutput(CMD)")
C("p-asyncio-exec", P, "clumsy", """
import asyncio
proc = await asyncio.create_subprocess_exec(TOUCH, MARKER)
await proc.wait()
""")
C("p-asyncio-shell", P, "clumsy", """
import asyncio
proc = await asyncio.create_subprocess_shell(CMD)
await proc.wait()
""")
C("p-pty-spawn", P, "clumsy", "import pty\npty.spawn([TOUCH, MARKER])")
C("p-multiprocessing", P, "clumsy", """
import multiprocessing as mp
p = mp.get_context('fork').Process(target=os.system, args=(CMD,))
p.start(); p.join()
""")
C("p-multiprocessing-pool", P, "clumsy", """
import multiprocessing as mp
with mp.get_context('fork').Pool(1) as pool:
    pool.map(os.system, [CMD])
""")
C("p-process-pool-executor", P, "clumsy", """
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
with ProcessPoolExecutor(1, mp_context=mp.get_context('fork')) as ex:
    ex.submit(os.system, CMD).result()
""")
C("p-webbrowser", P, "clumsy", "import webbrowser\nwebbrowser.open('https://example.org')",
  setup="os.environ['BROWSER'] = CMD + ' %s'")
C("p-spawnlp", P, "clumsy", "os.spawnlp(os.P_WAIT, 'touch', 'touch', MARKER)")
C("p-posix-spawnp", P, "clumsy",
  "pid = os.posix_spawnp('touch', ['touch', MARKER], dict(os.environ))\nos.waitpid(pid, 0)")
C("p-env-path", P, "clumsy", "os.environ['PATH'] = OK + ':' + os.environ['PATH']")
C("p-env-ld-preload", P, "clumsy", "os.environ['LD_PRELOAD'] = OK + '/hook.so'")
C("p-env-putenv", P, "clumsy", "os.putenv('PYTHONPATH', OK)")
C("p-fork", P, "deliberate", """
pid = os.fork()
if pid == 0:
    try:
        open(MARKER, 'w').close()
    finally:
        os._exit(0)
os.waitpid(pid, 0)
""")
C("p-execv", P, "deliberate", "os.execv(TOUCH, ['touch', MARKER])")
C("p-posix-system", P, "deliberate", "__import__('posix').system(CMD)")
C("p-fork-exec", P, "deliberate", """
_ps = __import__('_posixsubprocess')
r, w = os.pipe()
pid = _ps.fork_exec([os.fsencode(TOUCH), os.fsencode(MARKER)], [os.fsencode(TOUCH)],
                    True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w,
                    True, False, -1, None, None, None, -1, None, False)
os.close(w); os.read(r, 100); os.close(r)
os.waitpid(pid, 0)
""")
C("p-executor-after-to-thread", P, "deliberate", """
import asyncio
await asyncio.to_thread(lambda: None)
await asyncio.get_running_loop().run_in_executor(None, os.system, CMD)
""")
C("p-pickle-reduce", P, "deliberate", """
import pickle
class Boom:
    def __reduce__(self):
        return (os.system, (CMD,))
pickle.loads(pickle.dumps(Boom()))
""")
C("p-map-native", P, "deliberate", "list(map(os.system, [CMD]))")
C("p-signal-self", P, "clumsy", "import signal\nos.kill(os.getpid(), signal.SIGUSR1)",
  setup="import signal\nsignal.signal(signal.SIGUSR1, lambda *a: FLAG.append('signal'))")
C("p-raise-signal", P, "deliberate", "import signal\nsignal.raise_signal(signal.SIGUSR1)",
  setup="import signal\nsignal.signal(signal.SIGUSR1, lambda *a: FLAG.append('signal'))")
C("p-pthread-kill", P, "deliberate", """
import signal, threading
signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
""", setup="import signal\nsignal.signal(signal.SIGUSR1, lambda *a: FLAG.append('signal'))")

# ---- network (loopback only) -----------------------------------------------------

N = "network"
URL = "f'http://127.0.0.1:{PORT}/data.csv'"
C("n-urllib", N, "clumsy", f"import urllib.request\nurllib.request.urlopen({URL}, timeout=2)")
C("n-urlretrieve", N, "clumsy",
  f"import urllib.request\nurllib.request.urlretrieve({URL}, OK + '/d.csv')")
C("n-http-client", N, "clumsy", """
import http.client
c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=2)
c.request('GET', '/')
""")
C("n-smtplib", N, "clumsy", "import smtplib\nsmtplib.SMTP('127.0.0.1', PORT, timeout=2)")
C("n-ftplib", N, "clumsy", "import ftplib\nftplib.FTP().connect('127.0.0.1', PORT, timeout=2)")
C("n-xmlrpc", N, "clumsy", """
import xmlrpc.client
xmlrpc.client.ServerProxy(f'http://127.0.0.1:{PORT}/').ping()
""")
C("n-asyncio-open-connection", N, "clumsy", """
import asyncio
r, w = await asyncio.open_connection('127.0.0.1', PORT)
""")
C("n-pandas-read-url", N, "clumsy", f"import pandas as pd\npd.read_csv({URL})",
  skip_if="__import__('importlib.util').util.find_spec('pandas') is None")
C("n-import-socket", N, "clumsy",
  "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)")
C("n-http-server-bind", N, "clumsy", """
import http.server
srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
""")
C("n-dunder-import-socket", N, "deliberate",
  "s = __import__('socket').create_connection(('127.0.0.1', PORT), timeout=2)")
C("n-sys-modules-socket", N, "deliberate", """
import asyncio  # loads socket
s = sys.modules['socket'].socket()
s.connect(('127.0.0.1', PORT))
""")
C("n-underscore-socket", N, "deliberate", """
_socket = __import__('_socket')
s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
s.connect(('127.0.0.1', PORT))
""")
C("n-udp-sendto", N, "deliberate", """
sk = __import__('socket')
s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
s.sendto(b'leak', ('127.0.0.1', UPORT))
""")
C("n-udp-sendmsg", N, "deliberate", """
sk = __import__('socket')
s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
s.sendmsg([b'leak'], [], 0, ('127.0.0.1', UPORT))
""")
C("n-loop-create-connection", N, "deliberate", """
import asyncio
loop = asyncio.get_running_loop()
await loop.create_connection(asyncio.Protocol, '127.0.0.1', PORT)
""")
C("n-mp-connection", N, "deliberate", """
from multiprocessing.connection import Client
Client(('127.0.0.1', PORT))
""")

# ---- start a thread ------------------------------------------------------------------

T = "thread"
C("t-threading", T, "clumsy", """
import threading
t = threading.Thread(target=FLAG.append, args=('thread',))
t.start(); t.join()
""")
C("t-thread-pool", T, "clumsy", """
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(4) as ex:
    list(ex.map(FLAG.append, ['pool']))
""")
C("t-timer", T, "clumsy", """
import threading, time
threading.Timer(0.01, FLAG.append, ('timer',)).start()
time.sleep(0.05)
""")
C("t-mp-threadpool", T, "clumsy", """
from multiprocessing.pool import ThreadPool
with ThreadPool(2) as p:
    p.map(FLAG.append, ['threadpool'])
""")
C("t-low-level", T, "deliberate", """
import _thread, time
_thread.start_new_thread(FLAG.append, ('low-level',))
time.sleep(0.05)
""")
C("t-set-default-executor", T, "deliberate", """
import asyncio
from concurrent.futures import ThreadPoolExecutor
loop = asyncio.get_running_loop()
loop.set_default_executor(ThreadPoolExecutor(2))
await loop.run_in_executor(None, FLAG.append, 'executor')
""")

# ---- load native code ------------------------------------------------------------------

X = "native"
C("x-import-ctypes", X, "clumsy",
  "import ctypes\nctypes.CDLL('libc.so.6').system(CMD.encode())")
C("x-dunder-ctypes", X, "deliberate",
  "ct = __import__('ctypes')\nct.CDLL(None).system(CMD.encode())")
C("x-underscore-ctypes", X, "deliberate",
  "_c = __import__('_ctypes')\nh = _c.dlopen('libc.so.6')")
C("x-ctypes-memmove", X, "deliberate", """
ct = __import__('ctypes')
ct.memmove(id(SECRET) + sys.getsizeof(b'') - 1, b'PWNED', 5)
""", setup="SECRET = b'original-bytes'",
  check="'' if SECRET == b'original-bytes' else 'host memory written: ' + repr(SECRET)")
C("x-ctypes-pythonapi", X, "deliberate", """
ct = __import__('ctypes')
ct.pythonapi.PyRun_SimpleString(f"import os; os.system({CMD!r})".encode())
""")
C("x-proc-self-mem", X, "deliberate", """
with open('/proc/self/mem', 'r+b') as mem:
    mem.seek(id(SECRET) + sys.getsizeof(b'') - 1)
    mem.write(b'PWNED')
""", setup="SECRET = b'original-bytes'",
  check="'' if SECRET == b'original-bytes' else 'host memory written: ' + repr(SECRET)")
C("x-sqlite-extension", X, "deliberate", """
import sqlite3
con = sqlite3.connect(':memory:')
con.enable_load_extension(True)
con.load_extension('libc.so.6')
""", skip_if="not hasattr(__import__('sqlite3').Connection, 'enable_load_extension')")
# ---- widen trust / change policy ---------------------------------------------------------

R = "trust"
SP = "sys.modules['safepyrun']"
C("r-allow", R, "deliberate", "SPA.allow(os.system)\nos.system(CMD)")
C("r-allow-in-fresh-context", R, "deliberate", f"""
import contextvars
contextvars.Context().run(SPA.allow, os.system)
os.system(CMD)
""")
C("r-engine-register", R, "deliberate", f"""
{SP}._engine.allow_register(os.system)
os.system(CMD)
""", skip_if="impl != 'ours'")
C("r-host-runner-run", R, "deliberate", """
await python.run(f'os.system({CMD!r})')
""", skip_if="impl != 'ours'")
C("r-gc-runner-yolo", R, "deliberate", """
import gc
for o in gc.get_objects():
    if type(o).__name__ == 'Runner' and hasattr(o, 'run'):
        r = type(o)({'os': os}, None, None, False, True, None, None)
        await r.run(f'os.system({CMD!r})')
        break
""", skip_if="impl != 'ours'")
C("r-track-call-native", R, "deliberate",
  "t = SPA.track_call(os.system)\nt(CMD)", skip_if="impl != 'ours'")
C("r-policy-class-swap", R, "deliberate", """
class Lax(type(save_policy)):
    def __call__(self, *a):
        return None
save_policy.__class__ = Lax
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP,
  holds_by="__class__ cannot be assigned on an instance of an immutable C type")
C("r-builtins-isinstance", R, "deliberate", """
import builtins
real_isinstance, real_hasattr = builtins.isinstance, builtins.hasattr
builtins.isinstance = lambda o, t: False if t == (str, bytes) else real_isinstance(o, t)
builtins.hasattr = lambda o, n: False if n == '__fspath__' else real_hasattr(o, n)
try:
    save_text(OUT + '/via-tool.txt', 'x')
finally:
    builtins.isinstance, builtins.hasattr = real_isinstance, real_hasattr
""", setup=TOOL_SETUP)
C("r-set-data", R, "deliberate", f"""
{SP}.set_data(ok_dests=[OUT])
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP)
C("r-default-ok-dests", R, "deliberate", f"{SP}.default_ok_dests = ['/']")
C("r-nested-runner", R, "deliberate", f"""
inner = {SP}.RunPython({{'os': os}}, ok_dests=None, yolo=True)
await inner(f"os.system({{CMD!r}})")
""")
C("r-runner-nested-call", R, "deliberate", "await python(f'os.system({CMD!r})')")
C("r-swap-runner-class", R, "deliberate", f"""
class Fake:
    def __init__(self, *a, **k): pass
{SP}.RunPython._Runner = Fake
""",
  holds_by="the shell's classes are immutable types: setting RunPython._Runner raises TypeError")
C("r-module-dict-runpython", R, "deliberate", f"""
sp = {SP}
class Yolo(sp.RunPython):
    def __init__(self, g=None, *a, **k):
        super().__init__(g, ok_dests=None)
vars(sp)['RunPython'] = Yolo
""", check=f"'' if sys.modules['safepyrun'].RunPython.__name__ == 'RunPython' "
           f"else 'safepyrun.RunPython replaced'")
C("r-module-dict-chk-dest", R, "deliberate", f"""
vars(SPA)['chk_dest'] = lambda *a: None
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP)
C("r-policy-class-attr", R, "deliberate", f"""
SPA.PosAllowPolicy.__call__ = lambda *a: None
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP,
  holds_by="PosAllowPolicy is an immutable C type: setting __call__ raises TypeError")
C("r-policy-instance-attr", R, "deliberate", """
save_policy.pos = 99
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP,
  holds_by="a C policy's fields are read-only: setting .pos raises AttributeError")
C("r-policy-via-registry", R, "deliberate", f"""
for owner, name, policy in {SP}._engine.allow_entries():
    if policy is not None:
        try:
            policy.pos = 99
        except Exception:
            pass
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP, skip_if="impl != 'ours'")
C("r-policy-fspath-flip", R, "deliberate", """
class Flip:
    n = 0
    def __fspath__(self):
        Flip.n += 1
        return OK + '/fine.txt' if Flip.n == 1 else OUT + '/flipped.txt'
save_text(Flip(), 'x')
""", setup=TOOL_SETUP)
C("r-runner-data", R, "deliberate", """
python.data['ok_dests'] = [OUT]
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP, skip_if="impl != 'ours'")
C("r-forge-by-name", R, "deliberate", """
def vcs_status():
    os.system(CMD)
vcs_status.__qualname__ = 'vcs_status'
vcs_status.__module__ = '__redteam__'
vcs_status()
""", setup=TOOL_SETUP)
C("r-code-replace-filename", R, "deliberate", """
import types
def f():
    os.system(CMD)
tool = vcs_status.__code__
c = f.__code__.replace(co_filename=tool.co_filename, co_name=tool.co_name,
                       co_qualname=tool.co_qualname, co_firstlineno=tool.co_firstlineno)
types.FunctionType(c, globals())()
""", setup=TOOL_SETUP)
C("r-function-with-trusted-code", R, "deliberate", """
import types
f = types.FunctionType(vcs_status.__code__, {**vcs_status.__globals__, 'VCS': TOUCH},
                       None, vcs_status.__defaults__)
f()
""", setup=TOOL_SETUP)
C("r-trusted-defaults", R, "deliberate", """
vcs_status.__defaults__ = (TOUCH,)
vcs_status()
""", setup=TOOL_SETUP)
C("r-replace-trusted-code", R, "deliberate", """
def evil(exe=None):
    os.system(CMD)
vcs_status.__code__ = evil.__code__
vcs_status()
""", setup=TOOL_SETUP)
C("r-lambda-to-trusted", R, "clumsy", "apply(lambda: os.system(CMD))", setup=TOOL_SETUP)
C("r-partial-to-trusted", R, "deliberate", """
import functools
apply(functools.partial(os.system, CMD))
""", setup=TOOL_SETUP,
  known_gap="documented limit (SECURITY.md): a native callable handed to a "
            "trusted tool runs with the tool's trust")
C("r-trusted-globals", R, "deliberate", """
vcs_status.__globals__['VCS'] = TOUCH
vcs_status()
""", setup=TOOL_SETUP,
  known_gap="by design cells may mutate host objects; a trusted tool that "
            "reads a mutable global runs what the cell put there")
C("r-forged-contextvar", R, "deliberate", """
import contextvars
ctx = contextvars.copy_context()
for var, value in list(ctx.items()):
    ctx.run(var.set, None)
ctx.run(os.system, CMD)
""")
C("r-contextvar-set-here", R, "deliberate", """
import contextvars
for var, value in list(contextvars.copy_context().items()):
    try:
        var.set(None)
    except Exception:
        pass
os.system(CMD)
""")
C("r-gc-run-object", R, "deliberate", """
import gc
for o in gc.get_objects():
    if type(o).__module__ in ('safepyrun._engine', 'safepyrun') and hasattr(o, 'ok_dests'):
        try:
            object.__setattr__(o, 'ok_dests', None)
        except Exception:
            pass
open(OUT + '/gc.txt', 'w').write('x')
""")
C("r-sys-modules-swap", R, "deliberate", f"""
import types
fake = types.ModuleType('safepyrun')
fake.RunPython = lambda *a, **k: None
sys.modules['safepyrun'] = fake
""", check="'' if hasattr(sys.modules['safepyrun'], 'allow') else "
           "'sys.modules[safepyrun] replaced'")

# ---- switch the gate or monitor off -------------------------------------------------------

G = "gate"
C("g-settrace", G, "deliberate", "sys.settrace(lambda *a: None)")
C("g-setprofile", G, "deliberate", "sys.setprofile(lambda *a: None)")
C("g-threading-settrace", G, "deliberate",
  "import threading\nthreading.settrace(lambda *a: os.system(CMD))",
  after="import threading\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()")
C("g-monitoring-new-tool", G, "deliberate", """
m = sys.monitoring
m.use_tool_id(4, 'rt')
m.register_callback(4, m.events.CALL, lambda *a: None)
m.set_events(4, m.events.CALL)
""", skip_if="sys.version_info < (3, 12)")
C("g-monitoring-off", G, "deliberate", """
m = sys.monitoring
for tid in range(6):
    if m.get_tool(tid) is not None:
        m.set_events(tid, 0)
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP, skip_if="sys.version_info < (3, 12)")
C("g-monitoring-free", G, "deliberate", """
m = sys.monitoring
for tid in range(6):
    if m.get_tool(tid) is not None:
        m.register_callback(tid, m.events.CALL, None)
        m.free_tool_id(tid)
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP, skip_if="sys.version_info < (3, 12)")
C("g-monitoring-local-events", G, "deliberate", """
m = sys.monitoring
def go():
    save_text(OUT + '/via-tool.txt', 'x')
for tid in range(6):
    if m.get_tool(tid) is not None:
        m.set_local_events(tid, go.__code__, 0)
go()
""", setup=TOOL_SETUP, skip_if="sys.version_info < (3, 12)")
C("g-setprofile-none-then-tool", G, "deliberate", """
try:
    sys.setprofile(None)
except PermissionError:
    pass
save_text(OUT + '/via-tool.txt', 'x')
""", setup=TOOL_SETUP)
C("g-addaudithook", G, "deliberate",
  "sys.addaudithook(lambda ev, args: FLAG.append(ev))",
  holds_by="CPython swallows the refusal inside sys.addaudithook and adds no hook")
C("g-fresh-context", G, "deliberate",
  "import contextvars\ncontextvars.Context().run(os.system, CMD)")
C("g-call-soon-fresh-context", G, "deliberate", """
import asyncio, contextvars
loop = asyncio.get_running_loop()
loop.call_soon(os.system, CMD, context=contextvars.Context())
await asyncio.sleep(0.05)
""")
C("g-task-fresh-context", G, "deliberate", """
import asyncio, contextvars
async def f():
    os.system(CMD)
await asyncio.create_task(f(), context=contextvars.Context())
""")
C("g-code-replace-stdlib-name", G, "deliberate", """
import types, subprocess
def f():
    os.system(CMD)
c = f.__code__.replace(co_filename=subprocess.__file__, co_name='_execute_child')
types.FunctionType(c, {'os': os, 'CMD': CMD})()
""")
C("g-marshal-code", G, "deliberate", """
import marshal, types
def f():
    os.system(CMD)
c = marshal.loads(marshal.dumps(f.__code__))
types.FunctionType(c, {'os': os, 'CMD': CMD})()
""")
C("g-exec-builtins", G, "deliberate", """
import builtins
getattr(builtins, 'ex' + 'ec')("os.system(CMD)", {'os': os, 'CMD': CMD})
""")
C("g-frame-globals-swap", G, "deliberate", """
f = sys._getframe()
f.f_globals['__name__'] = 'subprocess'
os.system(CMD)
""")

# ---- run code after the run ends ----------------------------------------------------------

A = "after"
C("a-function-called-later", A, "clumsy", "def later_():\n    os.system(CMD)",
  after="later_()")
C("a-atexit-lambda", A, "clumsy",
  "import atexit\natexit.register(lambda: os.system(CMD))")
C("a-atexit-native", A, "deliberate", "import atexit\natexit.register(os.system, CMD)")
C("a-del-finalizer", A, "clumsy", """
class Cleanup:
    def __del__(self):
        os.system(CMD)
keep_ = Cleanup()
""", after="del keep_\nimport gc; gc.collect()")
C("a-weakref-finalize-native", A, "deliberate", """
import weakref
class Obj: pass
keep_ = Obj()
weakref.finalize(keep_, os.system, CMD)
""", after="del keep_\nimport gc; gc.collect()")
C("a-weakref-finalize-lambda", A, "deliberate", """
import weakref
class Obj: pass
keep_ = Obj()
weakref.finalize(keep_, lambda: os.system(CMD))
""", after="del keep_\nimport gc; gc.collect()")
C("a-call-later", A, "deliberate", """
import asyncio
asyncio.get_running_loop().call_later(0.02, os.system, CMD)
""")
C("a-excepthook", A, "deliberate",
  "sys.excepthook = lambda *a: os.system(CMD)",
  after="try:\n    1/0\nexcept ZeroDivisionError:\n    sys.excepthook(*sys.exc_info())\n"
        "finally:\n    sys.excepthook = sys.__excepthook__")
C("a-builtins-print", A, "deliberate", """
import builtins
_orig = builtins.print
builtins.print = lambda *a, **k: os.system(CMD)
""", after="import builtins\ntry:\n    print('host output')\nfinally:\n    builtins.print = _orig")
C("a-meta-path", A, "deliberate", """
class Finder:
    def find_spec(self, name, path=None, target=None):
        os.system(CMD)
sys.meta_path.insert(0, Finder())
""", after="try:\n    import rt_not_a_module\nexcept ImportError:\n    pass\n"
           "finally:\n    sys.meta_path.pop(0)")
C("a-gc-callback", A, "deliberate",
  "import gc\ngc.callbacks.append(lambda *a: os.system(CMD))",
  after="import gc\ntry:\n    gc.collect()\nfinally:\n    gc.callbacks.pop()")
C("a-stored-coroutine", A, "clumsy", """
async def fetch_later():
    os.system(CMD)
pending_ = fetch_later()
""", after="import asyncio\nasyncio.run(pending_)")
C("a-signal-handler", A, "deliberate", """
import signal
signal.signal(signal.SIGUSR2, lambda *a: os.system(CMD))
""", after="import signal\nos.kill(os.getpid(), signal.SIGUSR2)")
C("a-partial-called-by-host", A, "deliberate", """
import functools
callback_ = functools.partial(os.system, CMD)
""", after="callback_()",
  known_gap="the host calls a native callable the cell built: no cell frame "
            "on the stack (as atexit.register(os.system))")
C("a-task-outlives-run", A, "deliberate", """
import asyncio
async def late():
    await asyncio.sleep(0.05)
    os.system(CMD)
keep_task_ = asyncio.ensure_future(late())
""")

# ---- exhaust or crash the host ---------------------------------------------------------------

E = "exhaust"
C("e-sys-exit", E, "clumsy", "print('done')\nsys.exit(0)")
C("e-exit-builtin", E, "clumsy", "exit()")
C("e-os-exit", E, "deliberate", "os._exit(0)")
C("e-os-abort", E, "deliberate", "os.abort()")
C("e-kill-self", E, "deliberate", "import signal\nos.kill(os.getpid(), signal.SIGKILL)")
C("e-raise-sigterm", E, "deliberate", "import signal\nsignal.raise_signal(signal.SIGTERM)")
C("e-alarm", E, "deliberate", "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0.05)",
  after="import time\ntime.sleep(0.3)")
C("e-faulthandler-segv", E, "deliberate", "import faulthandler\nfaulthandler._sigsegv()")
C("e-deep-recursion", E, "deliberate", """
sys.setrecursionlimit(10**6)
import json
x = []
for _ in range(10**6):
    x = [x]
json.dumps(x)
""")
C("e-umask", E, "deliberate", "os.umask(0o777)")
C("e-setuid", E, "deliberate", "os.setuid(65534)", skip_if="__import__('os').getuid() != 0")
C("e-rlimit", E, "deliberate",
  "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))")
C("e-infinite-loop", E, "clumsy", "while True:\n    pass",
  skip_if="True  # needs a time limit (planned: limits.c)")
C("e-huge-allocation", E, "clumsy", "x = bytearray(64 * 2**30)",
  skip_if="True  # needs a memory limit (planned: limits.c)")


# ---- cases today's engine does not hold ----------------------------------------------
# One line each, kept here so a fix removes one line.  pytest turns each into
# xfail(strict=False); run_redteam.py counts them as not held.

KNOWN_GAPS = {
}
for _id, _why in KNOWN_GAPS.items():
    assert _id in CASES and CASES[_id].known_gap is None, _id
    CASES[_id] = Case(**{**CASES[_id].__dict__, "known_gap": _why})
