/*
 * pycatar._zstd: zstd compression and decompression of a batch of chunks with one release of the GIL, by the system's
 * libzstd (Debian's libzstd1, the library casync links: the same version gives the same bytes).
 *
 * Why: a chunk store write used to compress each chunk with python-zstandard, one call (and one
 * release and retaking of the GIL) per chunk.  With 4 KiB chunks that is thousands of GIL hand-overs
 * a second between the threads that chunk, hash and store; each wakes a waiting thread.  Here a
 * worker compresses a whole batch in C.
 *
 * libzstd is loaded with dlopen (_dlbind.h) by load(name) (pycatar.compression: libzstd.so.1, at the first zstd
 * compression), so that building pycatar needs no zstd headers.  The few functions, structures and constants used
 * are declared here; they are zstd's stable API (zstd.h, since 1.4.0).
 *
 * compress_many(buffers, level) compresses each buffer as one zstd frame the way casync does
 * (STORE-5): a compression stream at ``level``, without the content size and checksum fields, the
 * whole chunk given as input before the frame is ended.  Returns a list of bytes objects, one per
 * buffer.  A context (and its output scratch memory) is kept per concurrent caller for the next
 * batch: fresh memory of that size costs a page fault per 4 KiB each time.
 *
 * decompress_many(buffers, sizes, limit) decompresses each buffer, which must be exactly one zstd
 * frame (nothing after it) of the given size (None: unknown, at most ``limit`` bytes), the GIL
 * released once.  For each: the bytes, or (why, detail, n) -- why "corrupt" (detail: zstd's error),
 * "trailing" (data after the frame), "size" (n bytes, or more, instead of the size given: n is size
 * + 1 when the frame holds more) or "exceeds" (more than ``limit``).  A known size is decompressed
 * straight into the bytes object; an unknown one grows a buffer up to the limit.
 *
 * load(name) loads the library (once) and returns its version number (10504: 1.5.4), or raises
 * OSError saying why it cannot be used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_dlbind.h"

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

typedef struct ZSTD_DCtx_s ZSTD_DCtx;
#define ZSTD_CONTENTSIZE_UNKNOWN (0ULL - 1)
#define ZSTD_CONTENTSIZE_ERROR (0ULL - 2)
#define ZSTD_error_dstSize_tooSmall 70
#define ZSTD_error_srcSize_wrong 72
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
    ZSTD_DCtx *(*createDCtx)(void);
    size_t (*freeDCtx)(ZSTD_DCtx *);
    size_t (*DCtx_reset)(ZSTD_DCtx *, int);
    size_t (*decompressDCtx)(ZSTD_DCtx *, void *, size_t, const void *, size_t);
    size_t (*decompressStream)(ZSTD_DCtx *, ZSTD_outBuffer *, ZSTD_inBuffer *);
    size_t (*findFrameCompressedSize)(const void *, size_t);
    unsigned long long (*getFrameContentSize)(const void *, size_t);
    int (*getErrorCode)(size_t);
} lib;

/* dlopen ``name`` and look up every function used: 1, or 0 with lib.error set. */
static int load(const char *name) {
    if (lib.loaded)
        return 1;
    const dl_symbol_t symbols[] = {
        DL_SYM(lib.createCCtx, "ZSTD_createCCtx"),
        DL_SYM(lib.freeCCtx, "ZSTD_freeCCtx"),
        DL_SYM(lib.CCtx_reset, "ZSTD_CCtx_reset"),
        DL_SYM(lib.CCtx_setParameter, "ZSTD_CCtx_setParameter"),
        DL_SYM(lib.compressStream2, "ZSTD_compressStream2"),
        DL_SYM(lib.compressBound, "ZSTD_compressBound"),
        DL_SYM(lib.isError, "ZSTD_isError"),
        DL_SYM(lib.getErrorName, "ZSTD_getErrorName"),
        DL_SYM(lib.versionNumber, "ZSTD_versionNumber"),
        DL_SYM(lib.createDCtx, "ZSTD_createDCtx"),
        DL_SYM(lib.freeDCtx, "ZSTD_freeDCtx"),
        DL_SYM(lib.DCtx_reset, "ZSTD_DCtx_reset"),
        DL_SYM(lib.decompressDCtx, "ZSTD_decompressDCtx"),
        DL_SYM(lib.decompressStream, "ZSTD_decompressStream"),
        DL_SYM(lib.findFrameCompressedSize, "ZSTD_findFrameCompressedSize"),
        DL_SYM(lib.getFrameContentSize, "ZSTD_getFrameContentSize"),
        DL_SYM(lib.getErrorCode, "ZSTD_getErrorCode"),
    };
    void *h = dl_bind(name, symbols, sizeof symbols / sizeof symbols[0], lib.error, sizeof lib.error);
    if (!h)
        return 0;
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

/* Idle decompression contexts (taken and given back with the GIL held). */
static ZSTD_DCtx *idle_d[IDLE_MAX];
static int n_idle_d;

enum { D_OK, D_CORRUPT, D_TRAILING, D_EXCEEDS, D_SIZE, D_NOMEM };

typedef struct {
    const char *src;
    size_t n;
    Py_ssize_t size; /* expected size, or -1: unknown (bounded by the limit) */
    char *dst;       /* expected size: the bytes object's buffer; unknown: malloc'd here */
    size_t got;      /* bytes decompressed */
    int status;
    size_t code;     /* the zstd error (D_CORRUPT, D_EXCEEDS from zstd) */
} djob_t;

/* One frame: exactly one, nothing after it, at most size (or limit) bytes out.  No GIL. */
static void unframe(ZSTD_DCtx *d, djob_t *j, size_t limit) {
    size_t fsz = lib.findFrameCompressedSize(j->src, j->n);
    if (lib.isError(fsz)) { /* srcSize_wrong: the frame goes on past the end */
        j->status = D_CORRUPT, j->code = lib.getErrorCode(fsz) == ZSTD_error_srcSize_wrong ? 0 : fsz;
        return;
    }
    if (fsz != j->n) {
        j->status = D_TRAILING;
        return;
    }
    unsigned long long fcs = lib.getFrameContentSize(j->src, j->n);
    size_t bound = j->size >= 0 ? (size_t)j->size : limit;
    if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ZSTD_CONTENTSIZE_ERROR && fcs > bound) {
        j->status = j->size >= 0 ? D_SIZE : D_EXCEEDS, j->got = (size_t)fcs;
        return;
    }
    lib.DCtx_reset(d, ZSTD_reset_session_only);
    if (j->size >= 0) { /* straight into the bytes object */
        size_t r = lib.decompressDCtx(d, j->dst, (size_t)j->size, j->src, j->n);
        if (lib.isError(r)) {
            j->status = lib.getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? D_SIZE : D_CORRUPT;
            j->code = r, j->got = (size_t)j->size + 1;
        } else if (r != (size_t)j->size) {
            j->status = D_SIZE, j->got = r;
        }
        return;
    }
    size_t cap = j->n * 4 < (64 << 10) ? (64 << 10) : j->n * 4;
    if (cap > limit)
        cap = limit;
    ZSTD_inBuffer in = {j->src, j->n, 0};
    ZSTD_outBuffer out = {NULL, 0, 0};
    for (;;) {
        if (out.pos == out.size) {
            if (out.size == limit) {
                j->status = D_EXCEEDS;
                break;
            }
            size_t ncap = out.size ? (out.size * 2 < limit ? out.size * 2 : limit) : cap;
            char *nd = realloc(j->dst, ncap ? ncap : 1);
            if (!nd) {
                j->status = D_NOMEM;
                break;
            }
            j->dst = nd, out.dst = nd, out.size = ncap;
        }
        size_t r = lib.decompressStream(d, &out, &in);
        if (lib.isError(r)) {
            j->status = D_CORRUPT, j->code = r;
            break;
        }
        if (r == 0) /* the frame is complete */
            break;
        if (in.pos == in.size && out.pos < out.size) {
            j->status = D_CORRUPT, j->code = 0; /* truncated */
            break;
        }
    }
    j->got = out.pos;
}

static PyObject *py_decompress_many(PyObject *self, PyObject *args) {
    PyObject *seq_arg, *sizes_arg;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOn", &seq_arg, &sizes_arg, &limit))
        return NULL;
    if (!need_lib())
        return NULL;
    if (limit < 1)
        return PyErr_Format(PyExc_ValueError, "decompress_many(): limit must be positive");
    PyObject *seq = PySequence_Fast(seq_arg, "decompress_many() needs a sequence of buffers");
    if (!seq)
        return NULL;
    PyObject *sizes = PySequence_Fast(sizes_arg, "decompress_many() needs a sequence of sizes");
    if (!sizes) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    djob_t *jobs = PyMem_Calloc(n ? n : 1, sizeof(djob_t));
    PyObject **outs = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    PyObject *result = NULL;
    ZSTD_DCtx *d = NULL;
    if (!views || !jobs || !outs) {
        PyErr_NoMemory();
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(sizes) != n) {
        PyErr_SetString(PyExc_ValueError, "decompress_many(): as many sizes as buffers");
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        PyObject *so = PySequence_Fast_GET_ITEM(sizes, got);
        Py_ssize_t size = so == Py_None ? -1 : PyLong_AsSsize_t(so);
        if (size == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&views[got]);
            goto done;
        }
        if (size > limit || size < -1) {
            PyErr_Format(PyExc_ValueError, "decompress_many(): size %zd out of range", size);
            PyBuffer_Release(&views[got]);
            goto done;
        }
        jobs[got].src = views[got].buf, jobs[got].n = (size_t)views[got].len, jobs[got].size = size;
        if (size >= 0) {
            if (!(outs[got] = PyBytes_FromStringAndSize(NULL, size))) {
                PyBuffer_Release(&views[got]);
                goto done;
            }
            jobs[got].dst = PyBytes_AS_STRING(outs[got]);
        }
    }
    d = n_idle_d ? idle_d[--n_idle_d] : lib.createDCtx();
    if (!d) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        unframe(d, &jobs[i], (size_t)limit);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        djob_t *j = &jobs[i];
        PyObject *item;
        if (j->status == D_NOMEM) {
            Py_CLEAR(result);
            PyErr_NoMemory();
            break;
        }
        if (j->status != D_OK) {
            const char *why = j->status == D_TRAILING ? "trailing" : j->status == D_EXCEEDS ? "exceeds"
                            : j->status == D_SIZE    ? "size" : "corrupt";
            const char *detail = j->status == D_CORRUPT ? (j->code ? lib.getErrorName(j->code) : "truncated compressed stream")
                                                        : "";
            item = Py_BuildValue("(ssn)", why, detail, (Py_ssize_t)j->got);
        } else if (j->size >= 0) {
            item = Py_NewRef(outs[i]);
        } else {
            item = PyBytes_FromStringAndSize(j->dst ? j->dst : "", (Py_ssize_t)j->got);
        }
        if (!item)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, item);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
        if (jobs[i].size < 0)
            free(jobs[i].dst);
    }
    for (Py_ssize_t i = 0; outs && i < n; i++)
        Py_XDECREF(outs[i]);
    if (d) {
        if (n_idle_d < IDLE_MAX)
            idle_d[n_idle_d++] = d;
        else
            lib.freeDCtx(d);
    }
    PyMem_Free(views);
    PyMem_Free(jobs);
    PyMem_Free(outs);
    Py_DECREF(seq);
    Py_DECREF(sizes);
    return result;
}

static PyMethodDef methods[] = {
    {"load", py_load, METH_O,
     "load(name) -> version: dlopen the libzstd ``name`` (once loaded, later calls return at once); its "
     "version number (10504 for 1.5.4).  Raises OSError saying why it cannot be used."},
    {"compress_many", py_compress_many, METH_VARARGS,
     "compress_many(buffers, level) -> list of bytes: each buffer as one zstd frame, as casync makes it."},
    {"decompress_many", py_decompress_many, METH_VARARGS,
     "decompress_many(buffers, sizes, limit) -> list of bytes or (why, detail, n): each buffer as exactly "
     "one zstd frame of its size (None: unknown, at most limit bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._zstd", NULL, -1, methods};

PyMODINIT_FUNC PyInit__zstd(void) { return PyModule_Create(&module); }
