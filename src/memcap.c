/* memcap.c - the memory cap: what a run allocates, counted in C.
 *
 * Hooks.  The first runner with a cap installs wrapping hooks on CPython's
 * three allocator domains (raw, mem, object), on pymalloc's arena
 * allocator and, per step, on numpy's data allocator (NEP 49).  Each hook
 * calls the allocator it replaced; tracemalloc does the same, and hooks are
 * never removed (a hook removed under a block it counted would lose the
 * block).  Without a cap nothing is installed.
 *
 * Attribution.  A thread-local pointer names the account of the capped run
 * whose step runs on this thread (set by sp_memcap_step_enter in the
 * cell's step, cleared on leave): an allocation with no account is passed
 * straight through, one branch.  Tasks the cell spawned step in the event
 * loop's own calls, not through the cell; what they allocate is counted
 * only while the cell itself runs (see the README's Limits section).
 *
 * What is counted.  Object and mem blocks above pymalloc's small-request
 * threshold (512 bytes), raw blocks of any size, whole pymalloc arenas
 * (small objects count by the arena they land in, when a new arena is
 * needed), and numpy array buffers.  A counted block is entered in a hash
 * table (pointer -> size, account): its free credits exactly what was
 * charged, to the account that was charged.  A block allocated outside a
 * capped step (before the run, by the host) is not in the table, so its
 * free gives no credit; when a run ends its entries are dropped, so the
 * table is empty whenever no capped run is alive and a free costs one
 * atomic load.  A realloc of a block the run did not allocate is charged
 * its whole new size (the old size is unknown): conservative.
 *
 * Refusal.  A block that would take the account past its cap fails (NULL),
 * so CPython or numpy raise MemoryError; the cell turns it into one that
 * names the cap (cell.c).  Arenas get a small allowance past the cap
 * (MEMCAP_ARENA_SLACK), so the interpreter can still build the exception
 * and unwind once a large block was refused.
 *
 * Threading.  Domains may be called without the GIL (raw, numpy), so the
 * table and the accounts' counters are guarded by one mutex, taken only on
 * the counted paths.  A hook that calls the allocator below it with the
 * mutex held sets a thread-local flag that makes the inner domains pass
 * through (a large object block is a raw block underneath: counted once).
 * The table lives in libc memory, never in a Python allocator.
 */
#include "common.h"
#include "state.h"
#include "memcap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Requests above this go to the raw domain in pymalloc (SMALL_REQUEST_
 * THRESHOLD); below, a block lives in an arena, and arenas are counted. */
#define MEMCAP_SMALL 512
/* How far arenas may take an account past its cap (see the design note). */
#define MEMCAP_ARENA_SLACK ((size_t)8 << 20)
#define MEMCAP_TABLE_MIN 1024

#if defined(__GNUC__)
#define MEMCAP_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define MEMCAP_TLS _Thread_local
#endif

struct sp_memcap_account {
    size_t cap;     /* bytes */
    size_t used;    /* bytes charged and not yet freed (mutex) */
    size_t peak;    /* the high-water mark of used (mutex) */
    int tripped;    /* an allocation was refused */
    int ended;      /* the run is over: nothing more is counted */
};

/* The account charged on this thread, or NULL (the hot path's branch). */
static MEMCAP_TLS sp_memcap_account *memcap_active;
/* Nonzero while one of our hooks calls the allocator below it (always
 * with memcap_mutex held by this thread). */
static MEMCAP_TLS int memcap_inner;
/* numpy's handler this thread's step replaced mid-step (module_ready),
 * to be put back by the step's leave; owned or NULL. */
static MEMCAP_TLS PyObject *memcap_np_pending;

/* This file's part of the engine state (state.h). */
static struct sp_memcap_state *const memcap = &sp_state.memcap;

/* Entries in the table: read without the mutex by the free fast path. */
static atomic_size_t memcap_tracked;

/* A filter in front of the table, read without the mutex: bit h(ptr) is
 * set for every counted block (and stays set until the table empties), so
 * the free of a block the run never counted -- nearly every small object
 * -- costs one relaxed load instead of the mutex and a probe. */
#define MEMCAP_FILTER_BITS 20
static _Atomic uint64_t memcap_filter[(1u << MEMCAP_FILTER_BITS) / 64];

static inline size_t
memcap_filter_bit(uintptr_t key)
{
    return (size_t)(((uint64_t)key >> 4) * 0x9E3779B97F4A7C15ull >>
                    (64 - MEMCAP_FILTER_BITS));
}

static inline int
memcap_filter_has(uintptr_t key)
{
    size_t b = memcap_filter_bit(key);
    return (atomic_load_explicit(&memcap_filter[b / 64],
                                 memory_order_relaxed) >> (b % 64)) & 1;
}
static pthread_mutex_t memcap_mutex = PTHREAD_MUTEX_INITIALIZER;

/* ---- the table: pointer -> (size, account) ------------------------------ */

#define MEMCAP_EMPTY ((uintptr_t)0)
#define MEMCAP_TOMB ((uintptr_t)1)

static size_t
memcap_hash(uintptr_t key, size_t mask)
{
    return (size_t)(((uint64_t)key >> 4) * 0x9E3779B97F4A7C15ull >> 20) & mask;
}

/* Slot of `key`, or -1.  Mutex held. */
static Py_ssize_t
memcap_find(uintptr_t key)
{
    if (memcap->size == 0) {
        return -1;
    }
    size_t mask = memcap->size - 1;
    for (size_t i = memcap_hash(key, mask);; i = (i + 1) & mask) {
        uintptr_t k = memcap->slots[i].key;
        if (k == key) {
            return (Py_ssize_t)i;
        }
        if (k == MEMCAP_EMPTY) {
            return -1;
        }
    }
}

/* Rebuild into `size` slots, keeping live entries not charged to `drop`
 * (NULL: keep all).  0 ok, -1 out of memory (the table is unchanged).
 * Mutex held. */
static int
memcap_rebuild(size_t size, const sp_memcap_account *drop)
{
    sp_memcap_slot *slots = calloc(size, sizeof(*slots));
    if (slots == NULL) {
        return -1;
    }
    size_t live = 0, mask = size - 1;
    for (size_t j = 0; j < memcap->size; j++) {
        sp_memcap_slot *s = &memcap->slots[j];
        if (s->key <= MEMCAP_TOMB || (drop != NULL && s->acct == drop)) {
            continue;
        }
        size_t i = memcap_hash(s->key, mask);
        while (slots[i].key != MEMCAP_EMPTY) {
            i = (i + 1) & mask;
        }
        slots[i] = *s;
        live++;
    }
    free(memcap->slots);
    memcap->slots = slots;
    memcap->size = size;
    memcap->live = memcap->filled = live;
    atomic_store(&memcap_tracked, live);
    return 0;
}

static void memcap_remove(Py_ssize_t i);

/* Enter `key`.  0 ok, -1 out of memory.  Mutex held. */
static int
memcap_insert(uintptr_t key, size_t size, sp_memcap_account *acct)
{
    Py_ssize_t stale = memcap_find(key);
    if (stale >= 0) {
        /* Freed while our hooks were not installed (see memcap_hooked). */
        memcap_remove(stale);
    }
    if ((memcap->filled + 1) * 2 > memcap->size) {
        size_t want = memcap->size < MEMCAP_TABLE_MIN ? MEMCAP_TABLE_MIN
                                                      : memcap->size;
        while ((memcap->live + 1) * 4 > want) {
            want *= 2;
        }
        if (memcap_rebuild(want, NULL) < 0) {
            return -1;
        }
    }
    size_t mask = memcap->size - 1;
    size_t i = memcap_hash(key, mask);
    while (memcap->slots[i].key > MEMCAP_TOMB) {
        i = (i + 1) & mask;
    }
    if (memcap->slots[i].key == MEMCAP_EMPTY) {
        memcap->filled++;
    }
    memcap->slots[i] = (sp_memcap_slot){key, size, acct};
    size_t b = memcap_filter_bit(key);
    atomic_fetch_or_explicit(&memcap_filter[b / 64], (uint64_t)1 << (b % 64),
                             memory_order_relaxed);
    memcap->live++;
    atomic_store(&memcap_tracked, memcap->live);
    return 0;
}

/* Remove slot `i`, crediting its account.  Mutex held. */
static void
memcap_remove(Py_ssize_t i)
{
    sp_memcap_slot *s = &memcap->slots[i];
    sp_memcap_account *acct = s->acct;
    acct->used = acct->used >= s->size ? acct->used - s->size : 0;
    s->key = MEMCAP_TOMB;
    s->acct = NULL;
    memcap->live--;
    atomic_store(&memcap_tracked, memcap->live);
}

/* Whether `ptr` may be a counted block (no false negatives). */
static inline int
memcap_maybe_counted(void *ptr)
{
    return ptr != NULL &&
           atomic_load_explicit(&memcap_tracked, memory_order_relaxed) != 0 &&
           memcap_filter_has((uintptr_t)ptr);
}

/* A block is being freed (or moved by realloc): credit it if counted.
 * With memcap_inner set, this thread already holds the mutex: an
 * allocator below one of our hooks is freeing (pymalloc's realloc of a
 * small block to a large one can empty an arena and free it).  Removing
 * an entry only marks its slot, so the hook's own slot index stays valid. */
static void
memcap_forget(void *ptr)
{
    if (!memcap_maybe_counted(ptr)) {
        return;
    }
    int held = memcap_inner;
    if (!held) {
        pthread_mutex_lock(&memcap_mutex);
    }
    Py_ssize_t i = memcap_find((uintptr_t)ptr);
    if (i >= 0) {
        memcap_remove(i);
    }
    if (!held) {
        pthread_mutex_unlock(&memcap_mutex);
    }
}

/* May `acct` take `size` more bytes (`slack` past the cap)?  Marks the
 * account tripped when not.  Mutex held. */
static int
memcap_admit(sp_memcap_account *acct, size_t size, size_t credit, size_t slack)
{
    size_t used = acct->used >= credit ? acct->used - credit : 0;
    if (size > acct->cap + slack || used > acct->cap + slack - size) {
        acct->tripped = 1;
        return 0;
    }
    return 1;
}

/* Record `ptr` (a block of `size` just allocated) as `acct`'s.  When the
 * table cannot grow, the block stays uncounted (libc is out of memory: the
 * next allocation fails anyway).  Mutex held. */
static void
memcap_charge(sp_memcap_account *acct, void *ptr, size_t size)
{
    if (memcap_insert((uintptr_t)ptr, size, acct) < 0) {
        return;
    }
    acct->used += size;
    if (acct->used > acct->peak) {
        acct->peak = acct->used;
    }
}

/* ---- the CPython allocator domains ---------------------------------------- */

/* ctx of our hooks: the domain and the allocator it replaced. */
typedef struct {
    PyMemAllocatorEx prev;
    size_t small; /* requests below this are not counted (arenas are) */
} memcap_domain;

static memcap_domain memcap_domains[3];

/* The account to charge for a request of `size`, or NULL to pass it
 * through. */
static inline sp_memcap_account *
memcap_charged(size_t size, size_t small)
{
    sp_memcap_account *acct = memcap_active;
    if (acct == NULL || memcap_inner || size < small || acct->ended) {
        return NULL;
    }
    return acct;
}

static void *
memcap_alloc_counted(memcap_domain *d, sp_memcap_account *acct, size_t nelem,
                     size_t elsize, int zero)
{
    size_t size;
    if (elsize != 0 && nelem > SIZE_MAX / elsize) {
        return NULL;
    }
    size = nelem * elsize;
    void *p = NULL;
    pthread_mutex_lock(&memcap_mutex);
    if (memcap_admit(acct, size, 0, 0)) {
        memcap_inner = 1;
        p = zero ? d->prev.calloc(d->prev.ctx, nelem, elsize)
                 : d->prev.malloc(d->prev.ctx, size);
        memcap_inner = 0;
        if (p != NULL) {
            memcap_charge(acct, p, size);
        }
    }
    pthread_mutex_unlock(&memcap_mutex);
    return p;
}

static void *
memcap_malloc(void *ctx, size_t size)
{
    memcap_domain *d = ctx;
    sp_memcap_account *acct = memcap_charged(size, d->small);
    if (acct == NULL) {
        return d->prev.malloc(d->prev.ctx, size);
    }
    return memcap_alloc_counted(d, acct, 1, size, 0);
}

static void *
memcap_calloc(void *ctx, size_t nelem, size_t elsize)
{
    memcap_domain *d = ctx;
    size_t size = elsize != 0 && nelem > SIZE_MAX / elsize ? SIZE_MAX
                                                           : nelem * elsize;
    sp_memcap_account *acct = memcap_charged(size, d->small);
    if (acct == NULL) {
        return d->prev.calloc(d->prev.ctx, nelem, elsize);
    }
    return memcap_alloc_counted(d, acct, nelem, elsize, 1);
}

/* A realloc that may involve a counted block, under the table's lock:
 * `acct` (NULL: the caller's run is not counting) is charged the new size
 * less what the old block was charged to it, and the table follows the
 * block.  `realloc_fn(fn_ctx, ptr, size)` is the wrapped allocator's. */
static void *
memcap_realloc_counted(sp_memcap_account *acct, void *ptr, size_t size,
                       void *(*realloc_fn)(void *, void *, size_t),
                       void *fn_ctx)
{
    pthread_mutex_lock(&memcap_mutex);
    Py_ssize_t old = ptr != NULL ? memcap_find((uintptr_t)ptr) : -1;
    size_t credit = old >= 0 && memcap->slots[old].acct == acct
                        ? memcap->slots[old].size : 0;
    void *p = NULL;
    if (acct == NULL || memcap_admit(acct, size, credit, 0)) {
        memcap_inner = 1;
        p = realloc_fn(fn_ctx, ptr, size);
        memcap_inner = 0;
        if (p != NULL) {
            /* The old block is gone (unless an inner free saw it go). */
            if (old >= 0 && memcap->slots[old].key == (uintptr_t)ptr) {
                memcap_remove(old);
            }
            if (acct != NULL) {
                memcap_charge(acct, p, size);
            }
        }
    }
    pthread_mutex_unlock(&memcap_mutex);
    return p;
}

static void *
memcap_realloc(void *ctx, void *ptr, size_t size)
{
    memcap_domain *d = ctx;
    if (memcap_inner) {
        return d->prev.realloc(d->prev.ctx, ptr, size);
    }
    sp_memcap_account *acct = memcap_charged(size, d->small);
    if (acct == NULL && !memcap_maybe_counted(ptr)) {
        return d->prev.realloc(d->prev.ctx, ptr, size);
    }
    return memcap_realloc_counted(acct, ptr, size, d->prev.realloc,
                                  d->prev.ctx);
}

static void
memcap_free(void *ctx, void *ptr)
{
    memcap_domain *d = ctx;
    memcap_forget(ptr);
    d->prev.free(d->prev.ctx, ptr);
}

/* ---- pymalloc's arenas -------------------------------------------------- */

static PyObjectArenaAllocator memcap_arena_prev;

static void *
memcap_arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    sp_memcap_account *acct = memcap_charged(size, 0);
    if (acct == NULL) {
        return memcap_arena_prev.alloc(memcap_arena_prev.ctx, size);
    }
    void *p = NULL;
    pthread_mutex_lock(&memcap_mutex);
    if (memcap_admit(acct, size, 0, MEMCAP_ARENA_SLACK)) {
        memcap_inner = 1;
        p = memcap_arena_prev.alloc(memcap_arena_prev.ctx, size);
        memcap_inner = 0;
        if (p != NULL) {
            memcap_charge(acct, p, size);
        }
    }
    pthread_mutex_unlock(&memcap_mutex);
    return p;
}

static void
memcap_arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    memcap_forget(ptr);
    memcap_arena_prev.free(memcap_arena_prev.ctx, ptr, size);
}

/* Whether our hooks are the outermost ones.  Only meaningful right after
 * tracemalloc.stop(), which puts back what it found when it started: ours
 * (tracing started after them: nothing to do), or an older allocator (our
 * hooks are gone and must wrap it again).  Anywhere else, another hook
 * wrapping ours (tracemalloc started later) is not a reason to wrap again:
 * that would put ours in the chain twice, below and above it. */
static int
memcap_hooked(void)
{
    PyMemAllocatorEx a;
    PyObjectArenaAllocator arena;
    for (int dom = 0; dom < 3; dom++) {
        PyMem_GetAllocator((PyMemAllocatorDomain)dom, &a);
        if (a.malloc != memcap_malloc) {
            return 0;
        }
    }
    PyObject_GetArenaAllocator(&arena);
    return arena.alloc == memcap_arena_alloc;
}

/* Wrap whatever is installed now; domains already ours are left alone. */
static void
memcap_hook(void)
{
    static const PyMemAllocatorDomain doms[3] = {
        PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx cur;
        PyMem_GetAllocator(doms[i], &cur);
        if (cur.malloc == memcap_malloc) {
            continue;
        }
        memcap_domains[i].prev = cur;
        memcap_domains[i].small = doms[i] == PYMEM_DOMAIN_RAW ? 0
                                                              : MEMCAP_SMALL + 1;
        PyMemAllocatorEx ours = {&memcap_domains[i], memcap_malloc,
                                 memcap_calloc, memcap_realloc, memcap_free};
        PyMem_SetAllocator(doms[i], &ours);
    }
    PyObjectArenaAllocator cur;
    PyObject_GetArenaAllocator(&cur);
    if (cur.alloc != memcap_arena_alloc) {
        memcap_arena_prev = cur;
        PyObjectArenaAllocator ours = {NULL, memcap_arena_alloc,
                                       memcap_arena_free};
        PyObject_SetArenaAllocator(&ours);
    }
}

int
sp_memcap_install(void)
{
    if (!memcap->installed) {
        memcap_hook();
        memcap->installed = 1;
    }
    return 0;
}

void
sp_memcap_rehook(void)
{
    if (memcap->installed && !memcap_hooked()) {
        memcap_hook();
    }
}

/* ---- numpy's data allocator (NEP 49) -------------------------------------- */

/* numpy's layout (numpy/ndarraytypes.h, stable since 1.22). */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} memcap_np_allocator;

typedef struct {
    char name[127];
    uint8_t version;
    memcap_np_allocator allocator;
} memcap_np_handler;

/* Our handler around one of numpy's (capsule name "mem_handler"); lives as
 * long as its capsule, which arrays allocated through it hold. */
typedef struct {
    memcap_np_handler handler; /* first: the capsule points here */
    memcap_np_handler *prev;   /* borrowed from prev_capsule */
    PyObject *prev_capsule;    /* owned */
} memcap_np_wrap;

/* numpy's C API slots (numpy/__multiarray_api.h). */
#define MEMCAP_NP_SET_HANDLER 304
#define MEMCAP_NP_GET_HANDLER 305

static void *
memcap_np_malloc(void *ctx, size_t size)
{
    memcap_np_allocator *prev = &((memcap_np_wrap *)ctx)->prev->allocator;
    sp_memcap_account *acct = memcap_charged(size, 0);
    if (acct == NULL) {
        return prev->malloc(prev->ctx, size);
    }
    void *p = NULL;
    pthread_mutex_lock(&memcap_mutex);
    if (memcap_admit(acct, size, 0, 0)) {
        memcap_inner = 1;
        p = prev->malloc(prev->ctx, size);
        memcap_inner = 0;
        if (p != NULL) {
            memcap_charge(acct, p, size);
        }
    }
    pthread_mutex_unlock(&memcap_mutex);
    return p;
}

static void *
memcap_np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    memcap_np_allocator *prev = &((memcap_np_wrap *)ctx)->prev->allocator;
    if (elsize != 0 && nelem > SIZE_MAX / elsize) {
        return NULL;
    }
    size_t size = nelem * elsize;
    sp_memcap_account *acct = memcap_charged(size, 0);
    if (acct == NULL) {
        return prev->calloc(prev->ctx, nelem, elsize);
    }
    void *p = NULL;
    pthread_mutex_lock(&memcap_mutex);
    if (memcap_admit(acct, size, 0, 0)) {
        memcap_inner = 1;
        p = prev->calloc(prev->ctx, nelem, elsize);
        memcap_inner = 0;
        if (p != NULL) {
            memcap_charge(acct, p, size);
        }
    }
    pthread_mutex_unlock(&memcap_mutex);
    return p;
}

static void *
memcap_np_realloc(void *ctx, void *ptr, size_t size)
{
    memcap_np_allocator *prev = &((memcap_np_wrap *)ctx)->prev->allocator;
    sp_memcap_account *acct = memcap_charged(size, 0);
    if (acct == NULL && !memcap_maybe_counted(ptr)) {
        return prev->realloc(prev->ctx, ptr, size);
    }
    return memcap_realloc_counted(acct, ptr, size, prev->realloc, prev->ctx);
}

static void
memcap_np_free(void *ctx, void *ptr, size_t size)
{
    memcap_np_allocator *prev = &((memcap_np_wrap *)ctx)->prev->allocator;
    memcap_forget(ptr);
    prev->free(prev->ctx, ptr, size);
}

static void
memcap_np_wrap_destroy(PyObject *capsule)
{
    memcap_np_wrap *w = PyCapsule_GetPointer(capsule, "mem_handler");
    if (w == NULL) {
        PyErr_Clear();
        return;
    }
    Py_XDECREF(w->prev_capsule);
    PyMem_RawFree(w);
}

/* Our handler around `prev` (a "mem_handler" capsule).  New reference. */
static PyObject *
memcap_np_wrap_new(PyObject *prev)
{
    memcap_np_handler *inner = PyCapsule_GetPointer(prev, "mem_handler");
    if (inner == NULL) {
        return NULL;
    }
    memcap_np_wrap *w = PyMem_RawCalloc(1, sizeof(*w));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    /* numpy reports this name (get_handler_name): ours, then the one it
     * wraps, cut to fit. */
    static const char prefix[] = "safepyrun_memcap:";
    size_t len = sizeof(prefix) - 1;
    size_t rest = strnlen(inner->name, sizeof(inner->name));
    if (rest > sizeof(w->handler.name) - len - 1) {
        rest = sizeof(w->handler.name) - len - 1;
    }
    memcpy(w->handler.name, prefix, len);
    memcpy(w->handler.name + len, inner->name, rest);
    w->handler.name[len + rest] = '\0';
    w->handler.version = 1;
    w->handler.allocator = (memcap_np_allocator){
        w, memcap_np_malloc, memcap_np_calloc, memcap_np_realloc,
        memcap_np_free};
    w->prev = inner;
    w->prev_capsule = Py_NewRef(prev);
    PyObject *capsule = PyCapsule_New(w, "mem_handler", memcap_np_wrap_destroy);
    if (capsule == NULL) {
        Py_DECREF(w->prev_capsule);
        PyMem_RawFree(w);
    }
    return capsule;
}

static int
memcap_np_is_ours(PyObject *capsule)
{
    if (!PyCapsule_IsValid(capsule, "mem_handler")) {
        return 0;
    }
    memcap_np_handler *h = PyCapsule_GetPointer(capsule, "mem_handler");
    return h != NULL && h->allocator.malloc == memcap_np_malloc;
}

/* numpy's API table, once numpy's core is loaded.  1 found, 0 not loaded,
 * -1 error. */
static int
memcap_np_api(void)
{
    static const char *const names[] = {"numpy._core._multiarray_umath",
                                        "numpy.core._multiarray_umath"};
    if (memcap->np_api != NULL) {
        return 1;
    }
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PyObject *mod = NULL;
        if (sp_dict_get_ref_str(modules, names[i], &mod) < 0) {
            return -1;
        }
        if (mod == NULL) {
            continue;
        }
        PyObject *cap = PyObject_GetAttrString(mod, "_ARRAY_API");
        Py_DECREF(mod);
        if (cap == NULL) {
            PyErr_Clear(); /* still initialising, or not numpy's */
            continue;
        }
        void **api = PyCapsule_IsValid(cap, NULL)
                         ? PyCapsule_GetPointer(cap, NULL) : NULL;
        if (api != NULL) {
            memcap->np_api_capsule = cap; /* keeps the table alive */
            memcap->np_api = api;
            return 1;
        }
        Py_DECREF(cap);
        PyErr_Clear();
    }
    return 0;
}

/* Put our handler around the current one in this context.  Returns the
 * handler replaced (new reference) for the leave to restore, or NULL
 * (nothing to restore, or an error reported as unraisable). */
static PyObject *
memcap_np_enter(void)
{
    int found = memcap_np_api();
    if (found <= 0) {
        if (found < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        return NULL;
    }
    PyObject *(*get)(void) =
        (PyObject * (*)(void)) memcap->np_api[MEMCAP_NP_GET_HANDLER];
    PyObject *(*set)(PyObject *) =
        (PyObject * (*)(PyObject *)) memcap->np_api[MEMCAP_NP_SET_HANDLER];
    PyObject *cur = get();
    if (cur == NULL) {
        PyErr_WriteUnraisable(NULL);
        return NULL;
    }
    if (memcap_np_is_ours(cur)) {
        Py_DECREF(cur);
        return NULL;
    }
    /* One wrapper per handler the host uses (almost always numpy's
     * default): reused across steps. */
    PyObject *wrap = NULL;
    if (memcap->np_wraps == NULL) {
        memcap->np_wraps = PyDict_New();
    }
    PyObject *key = PyLong_FromVoidPtr(cur);
    if (memcap->np_wraps == NULL || key == NULL ||
        sp_dict_get_ref(memcap->np_wraps, key, &wrap) < 0) {
        goto error;
    }
    if (wrap == NULL) {
        wrap = memcap_np_wrap_new(cur);
        if (wrap == NULL || PyDict_SetItem(memcap->np_wraps, key, wrap) < 0) {
            goto error;
        }
    }
    Py_DECREF(key);
    PyObject *old = set(wrap);
    Py_DECREF(wrap);
    Py_DECREF(cur);
    if (old == NULL) {
        PyErr_WriteUnraisable(NULL);
    }
    return old;
error:
    Py_XDECREF(key);
    Py_XDECREF(wrap);
    Py_DECREF(cur);
    PyErr_WriteUnraisable(NULL);
    return NULL;
}

static void
memcap_np_leave(PyObject *old)
{
    PyObject *(*set)(PyObject *) =
        (PyObject * (*)(PyObject *)) memcap->np_api[MEMCAP_NP_SET_HANDLER];
    PyObject *exc = sp_err_get_raised();
    PyObject *ours = set(old);
    if (ours == NULL) {
        PyErr_WriteUnraisable(NULL);
    }
    Py_XDECREF(ours);
    Py_DECREF(old);
    sp_err_set_raised(exc);
}

void
sp_memcap_module_ready(PyObject *module)
{
    if (memcap_active == NULL || memcap_np_pending != NULL ||
        memcap->np_api != NULL || !PyModule_Check(module)) {
        return;
    }
    const char *name = PyModule_GetName(module);
    if (name == NULL) {
        PyErr_Clear();
        return;
    }
    if (strcmp(name, "numpy._core._multiarray_umath") != 0 &&
        strcmp(name, "numpy.core._multiarray_umath") != 0) {
        return;
    }
    /* Not yet in sys.modules while it executes: read its capsule here. */
    PyObject *cap = PyObject_GetAttrString(module, "_ARRAY_API");
    void **api = cap != NULL && PyCapsule_IsValid(cap, NULL)
                     ? PyCapsule_GetPointer(cap, NULL) : NULL;
    if (api == NULL) {
        Py_XDECREF(cap);
        PyErr_Clear();
        return;
    }
    memcap->np_api_capsule = cap;
    memcap->np_api = api;
    sp_memcap_account *acct = memcap_active;
    memcap_active = NULL; /* our own wrapper is not the cell's */
    memcap_np_pending = memcap_np_enter();
    memcap_active = acct;
}

/* ---- accounts and steps --------------------------------------------------- */

sp_memcap_account *
sp_memcap_new(size_t cap)
{
    sp_memcap_account *acct = calloc(1, sizeof(*acct));
    if (acct == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    acct->cap = cap;
    memcap->accounts_live++;
    return acct;
}

int
sp_memcap_any_live(void)
{
    return memcap->accounts_live != 0;
}

int
sp_memcap_counting(const sp_memcap_account *acct)
{
    return acct != NULL && !acct->ended;
}

void
sp_memcap_end(sp_memcap_account *acct)
{
    if (acct == NULL || acct->ended) {
        return;
    }
    memcap->accounts_live--;
    pthread_mutex_lock(&memcap_mutex);
    acct->ended = 1;
    if (memcap->live > 0) {
        int any = 0;
        for (size_t i = 0; i < memcap->size && !any; i++) {
            any = memcap->slots[i].key > MEMCAP_TOMB &&
                  memcap->slots[i].acct == acct;
        }
        if (any && memcap_rebuild(memcap->size, acct) < 0) {
            /* No memory for a new table: drop its entries in place. */
            for (size_t i = 0; i < memcap->size; i++) {
                if (memcap->slots[i].key > MEMCAP_TOMB &&
                    memcap->slots[i].acct == acct) {
                    memcap_remove((Py_ssize_t)i);
                }
            }
        }
    }
    if (memcap->live == 0 && memcap->filled > 0) {
        /* Nothing counted any more: start clean, filter included. */
        memset(memcap->slots, 0, memcap->size * sizeof(*memcap->slots));
        memcap->filled = 0;
        for (size_t i = 0; i < sizeof(memcap_filter) / sizeof(memcap_filter[0]);
             i++) {
            atomic_store_explicit(&memcap_filter[i], 0, memory_order_relaxed);
        }
    }
    acct->used = 0;
    pthread_mutex_unlock(&memcap_mutex);
}

void
sp_memcap_release(sp_memcap_account *acct)
{
    if (acct != NULL) {
        sp_memcap_end(acct);
        free(acct);
    }
}

void
sp_memcap_step_enter(sp_memcap_account *acct, sp_memcap_step *step)
{
    step->prev = memcap_active;
    step->np_handler = NULL;
    step->entered = acct != NULL && !acct->ended;
    if (!step->entered) {
        return;
    }
    memcap_active = NULL;
    step->np_handler = memcap_np_enter();
    memcap_active = acct;
}

void
sp_memcap_step_leave(sp_memcap_step *step)
{
    if (!step->entered) {
        return;
    }
    memcap_active = NULL;
    PyObject *pending = memcap_np_pending; /* numpy loaded mid-step */
    memcap_np_pending = NULL;
    if (pending != NULL) {
        memcap_np_leave(pending);
    }
    if (step->np_handler != NULL) {
        memcap_np_leave(step->np_handler);
        step->np_handler = NULL;
    }
    memcap_active = step->prev;
}

size_t
sp_memcap_cap(const sp_memcap_account *acct)
{
    return acct->cap;
}

size_t
sp_memcap_peak(const sp_memcap_account *acct)
{
    return acct->peak;
}

int
sp_memcap_tripped(const sp_memcap_account *acct)
{
    return acct->tripped;
}

void
sp_memcap_format(size_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(buf, size, "%zu bytes", bytes);
        return;
    }
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, size, "%.1f %s", v, units[u]);
}

void
sp_memcap_trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
