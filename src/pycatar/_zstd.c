/*
 * pycatar._zstd: zstd compression of a batch of chunks with one release of the GIL, by the system's
 * libzstd (Debian's libzstd1, the library casync links: the same version gives the same bytes).
 *
 * Why: a chunk store write used to compress each chunk with python-zstandard, one call (and one
 * release and retaking of the GIL) per chunk.  With 4 KiB chunks that is thousands of GIL hand-overs
 * a second between the threads that chunk, hash and store; each wakes a waiting thread.  Here a
 * worker compresses a whole batch in C.
 *
 * libzstd is loaded with dlopen by load(name) (pycatar.compression: libzstd.so.1, at the first zstd
 * compression), so that building pycatar needs no zstd headers.  The few functions, structures and constants used
 * are declared here; they are zstd's stable API (zstd.h, since 1.4.0).
 *
 * compress_many(buffers, level) compresses each buffer as one zstd frame the way casync does
 * (STORE-5): a compression stream at ``level``, without the content size and checksum fields, the
 * whole chunk given as input before the frame is ended.  Returns a list of bytes objects, one per
 * buffer.  A context (and its output scratch memory) is kept per concurrent caller for the next
 * batch: fresh memory of that size costs a page fault per 4 KiB each time.
 *
 * load(name) loads the library (once) and returns its version number (10504: 1.5.4), or raises
 * OSError saying why it cannot be used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct {
    const void *src;
    size_t size;
    size_t pos;
} ZSTD_inBuffer;
typedef struct {
    void *dst;
    size_t size;
    size_t pos;
} ZSTD_outBuffer;

#define ZSTD_c_compressionLevel 100
#define ZSTD_c_contentSizeFlag 200
#define ZSTD_c_checksumFlag 201
#define ZSTD_reset_session_only 1
#define ZSTD_e_continue 0
#define ZSTD_e_end 2

static struct {
    int loaded;
    char error[256];
    ZSTD_CCtx *(*createCCtx)(void);
    size_t (*freeCCtx)(ZSTD_CCtx *);
    size_t (*CCtx_reset)(ZSTD_CCtx *, int);
    size_t (*CCtx_setParameter)(ZSTD_CCtx *, int, int);
    size_t (*compressStream2)(ZSTD_CCtx *, ZSTD_outBuffer *, ZSTD_inBuffer *, int);
    size_t (*compressBound)(size_t);
    unsigned (*isError)(size_t);
    const char *(*getErrorName)(size_t);
    unsigned (*versionNumber)(void);
} lib;

/* dlopen ``name`` and look up every function used: 1, or 0 with lib.error set. */
static int load(const char *name) {
    if (lib.loaded)
        return 1;
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lib.error, sizeof lib.error, "%s", dlerror());
        return 0;
    }
#define SYM(field, symbol)                                                                        \
    if ((*(void **)&lib.field = dlsym(h, symbol)) == NULL) {                                     \
        snprintf(lib.error, sizeof lib.error, "%s has no %s", name, symbol);                     \
        dlclose(h);                                                                              \
        return 0;                                                                                \
    }
    SYM(createCCtx, "ZSTD_createCCtx")
    SYM(freeCCtx, "ZSTD_freeCCtx")
    SYM(CCtx_reset, "ZSTD_CCtx_reset")
    SYM(CCtx_setParameter, "ZSTD_CCtx_setParameter")
    SYM(compressStream2, "ZSTD_compressStream2")
    SYM(compressBound, "ZSTD_compressBound")
    SYM(isError, "ZSTD_isError")
    SYM(getErrorName, "ZSTD_getErrorName")
    SYM(versionNumber, "ZSTD_versionNumber")
#undef SYM
    if (lib.versionNumber() < 10400) {
        snprintf(lib.error, sizeof lib.error, "%s is zstd %u, older than 1.4.0", name, lib.versionNumber());
        dlclose(h);
        return 0;
    }
    lib.loaded = 1;
    return 1;
}

/* Idle contexts with their scratch output memory; taken and given back with the GIL held. */
typedef struct {
    ZSTD_CCtx *cctx;
    int level;
    char *scratch;
    size_t scratch_size;
} slot_t;

#define IDLE_MAX 8
static slot_t idle[IDLE_MAX];
static int n_idle;

static void slot_free(slot_t *s) {
    if (s->cctx)
        lib.freeCCtx(s->cctx);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

static int need_lib(void) {
    if (lib.loaded)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "pycatar._zstd: load() has not succeeded");
    return 0;
}

static PyObject *py_load(PyObject *self, PyObject *arg) {
    PyObject *name;
    if (!PyUnicode_FSConverter(arg, &name))
        return NULL;
    int ok = load(PyBytes_AS_STRING(name));
    Py_DECREF(name);
    if (!ok)
        return PyErr_Format(PyExc_OSError, "%s", lib.error);
    return PyLong_FromUnsignedLong(lib.versionNumber());
}

/* One frame of p[0..n) into out (room: compressBound(n)); returns its size, or 0 with *err set. */
static size_t frame(ZSTD_CCtx *c, const char *p, size_t n, char *out, size_t room, size_t *err) {
    ZSTD_inBuffer in = {p, n, 0};
    ZSTD_outBuffer o = {out, room, 0};
    size_t r = lib.CCtx_reset(c, ZSTD_reset_session_only);
    if (lib.isError(r))
        goto fail;
    /* as casync: all of the input first (a stream of unknown size), then the end of the frame */
    while (in.pos < in.size) {
        r = lib.compressStream2(c, &o, &in, ZSTD_e_continue);
        if (lib.isError(r))
            goto fail;
    }
    do {
        r = lib.compressStream2(c, &o, &in, ZSTD_e_end);
        if (lib.isError(r))
            goto fail;
    } while (r != 0 && o.pos < o.size);
    if (r != 0) {
        *err = (size_t)-70; /* dstSize_tooSmall: cannot happen with compressBound's room */
        return 0;
    }
    return o.pos;
fail:
    *err = r;
    return 0;
}

static PyObject *py_compress_many(PyObject *self, PyObject *args) {
    PyObject *seq_arg;
    int level;
    if (!PyArg_ParseTuple(args, "Oi", &seq_arg, &level))
        return NULL;
    if (!need_lib())
        return NULL;
    PyObject *seq = PySequence_Fast(seq_arg, "compress_many() needs a sequence of buffers");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    size_t *ends = PyMem_Calloc(n ? n : 1, sizeof(size_t));
    PyObject *result = NULL;
    Py_ssize_t got = 0;
    slot_t s = {0};
    if (!views || !ends) {
        PyErr_NoMemory();
        goto done;
    }
    size_t room = 0;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        room += lib.compressBound((size_t)views[got].len);
    }
    if (n_idle)
        s = idle[--n_idle];
    if (!s.cctx || s.level != level) {
        slot_free(&s);
        s.cctx = lib.createCCtx();
        if (!s.cctx) {
            PyErr_NoMemory();
            goto done;
        }
        size_t r = lib.CCtx_setParameter(s.cctx, ZSTD_c_compressionLevel, level);
        if (!lib.isError(r))
            r = lib.CCtx_setParameter(s.cctx, ZSTD_c_contentSizeFlag, 0);
        if (!lib.isError(r))
            r = lib.CCtx_setParameter(s.cctx, ZSTD_c_checksumFlag, 0);
        if (lib.isError(r)) {
            PyErr_Format(PyExc_ValueError, "zstd: %s", lib.getErrorName(r));
            goto done;
        }
        s.level = level;
    }
    if (s.scratch_size < room) {
        free(s.scratch);
        s.scratch_size = 0;
        s.scratch = malloc(room);
        if (!s.scratch) {
            PyErr_NoMemory();
            goto done;
        }
        s.scratch_size = room;
    }
    size_t err = 0, at = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)views[i].len;
        size_t k = frame(s.cctx, views[i].buf, len, s.scratch + at, lib.compressBound(len), &err);
        if (!k)
            break;
        at += k;
        ends[i] = at;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        PyErr_Format(PyExc_ValueError, "zstd: %s", lib.getErrorName(err));
        goto done;
    }
    result = PyList_New(n);
    if (!result)
        goto done;
    for (Py_ssize_t i = 0, start = 0; i < n; start = (Py_ssize_t)ends[i], i++) {
        PyObject *b = PyBytes_FromStringAndSize(s.scratch + start, (Py_ssize_t)ends[i] - start);
        if (!b) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, b);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(ends);
    Py_DECREF(seq);
    if (s.cctx) {
        if (n_idle < IDLE_MAX)
            idle[n_idle++] = s;
        else
            slot_free(&s);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"load", py_load, METH_O,
     "load(name) -> version: dlopen the libzstd ``name`` (once loaded, later calls return at once); its "
     "version number (10504 for 1.5.4).  Raises OSError saying why it cannot be used."},
    {"compress_many", py_compress_many, METH_VARARGS,
     "compress_many(buffers, level) -> list of bytes: each buffer as one zstd frame, as casync makes it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._zstd", NULL, -1, methods};

PyMODINIT_FUNC PyInit__zstd(void) { return PyModule_Create(&module); }
