/*
 * pycatar._sha: SHA-512/256 and SHA-256 of a batch of chunks with one release of the GIL, by the
 * system's libcrypto (OpenSSL: the library hashlib and casync use), or SHA-512/256 several chunks at
 * a time with AVX-512 or AVX2 (_sha512lanes.h) where the CPU has them and the batch is large enough.
 *
 * Why: hashlib releases and retakes the GIL for every buffer it hashes.  Chunk ids are computed a
 * read buffer at a time (4 MiB: 64 chunks of the default size, 500 of 8 KiB), and each hand-over
 * wakes a waiting thread.  Here the whole batch is hashed in C.
 *
 * libcrypto is loaded with dlopen (_dlbind.h) by load(name) (pycatar.digest: the libcrypto hashlib loaded, so the
 * same one), so that building pycatar needs no OpenSSL headers.  The functions used are OpenSSL's
 * stable EVP API (1.1.1 and 3.x): a context initialised once per algorithm is copied for each chunk,
 * so the digest's implementation is looked up once, not per chunk.
 *
 * load(name) -> None, or OSError saying why the library cannot be used.  Only the digests that go
 * through libcrypto need it (needs_load): an extraction whose batches all take the lanes never loads it.
 * digest_many(algorithm, buffers, lanes=None) -> list of 32-byte digests; ``algorithm`` is
 * "sha512-256" or "sha256"; ``lanes`` as the method's doc says.
 * LANES: the widest SHA-512/256 kernel the CPU allows (8, 4 or 0); LANES_MIN: the batch it starts at.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_dlbind.h"
#include "_sha512lanes.h"

/* SHA-512/256 batches of at least this many buffers go through sha512_256_lanes with ``lanes`` lanes:
 * fewer are faster through libcrypto (8 x 64 KiB: 430 MB/s by libcrypto, 1 790 in eight lanes, 670 in
 * four; two buffers: 426, 467 and 343) */
#define LANES_MIN(lanes) ((lanes) == 8 ? 2 : 4)

typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;

static struct {
    int loaded;
    char error[256];
    EVP_MD_CTX *(*ctx_new)(void);
    void (*ctx_free)(EVP_MD_CTX *);
    int (*copy_ex)(EVP_MD_CTX *, const EVP_MD_CTX *);
    int (*init_ex)(EVP_MD_CTX *, const EVP_MD *, void *);
    int (*update)(EVP_MD_CTX *, const void *, size_t);
    int (*final_ex)(EVP_MD_CTX *, unsigned char *, unsigned int *);
    const EVP_MD *(*sha512_256)(void);
    const EVP_MD *(*sha256)(void);
    EVP_MD_CTX *proto[2]; /* initialised contexts: 0 sha512-256, 1 sha256 (made with the GIL held) */
} lib;

static int load(const char *name) {
    if (lib.loaded)
        return 1;
    const dl_symbol_t symbols[] = {
        DL_SYM(lib.ctx_new, "EVP_MD_CTX_new"),   DL_SYM(lib.ctx_free, "EVP_MD_CTX_free"),
        DL_SYM(lib.copy_ex, "EVP_MD_CTX_copy_ex"), DL_SYM(lib.init_ex, "EVP_DigestInit_ex"),
        DL_SYM(lib.update, "EVP_DigestUpdate"),  DL_SYM(lib.final_ex, "EVP_DigestFinal_ex"),
        DL_SYM(lib.sha512_256, "EVP_sha512_256"), DL_SYM(lib.sha256, "EVP_sha256"),
    };
    if (!dl_bind(name, symbols, sizeof symbols / sizeof symbols[0], lib.error, sizeof lib.error))
        return 0;
    lib.loaded = 1;
    return 1;
}

static PyObject *py_load(PyObject *self, PyObject *arg) {
    PyObject *name;
    if (!PyUnicode_FSConverter(arg, &name))
        return NULL;
    int ok = load(PyBytes_AS_STRING(name));
    Py_DECREF(name);
    if (!ok)
        return PyErr_Format(PyExc_OSError, "%s", lib.error);
    Py_RETURN_NONE;
}

static const EVP_MD_CTX *proto(int which) {
    if (!lib.proto[which]) {
        EVP_MD_CTX *c = lib.ctx_new();
        if (!c || lib.init_ex(c, which == 0 ? lib.sha512_256() : lib.sha256(), NULL) != 1) {
            if (c)
                lib.ctx_free(c);
            return NULL;
        }
        lib.proto[which] = c;
    }
    return lib.proto[which];
}

#ifdef SHA_LANES
#define LANES_USABLE() sha512_lanes_usable()
/* sha512_256_lanes of the buffers, the GIL released; -1: out of memory */
static int lanes_many(int lanes, const Py_buffer *views, Py_ssize_t n, unsigned char *out) {
    const unsigned char **bufs = PyMem_Malloc(sizeof *bufs * (size_t)(n ? n : 1));
    size_t *lens = PyMem_Malloc(sizeof *lens * (size_t)(n ? n : 1));
    int rc = -1;
    if (bufs && lens) {
        for (Py_ssize_t i = 0; i < n; i++) {
            bufs[i] = views[i].buf;
            lens[i] = (size_t)views[i].len;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = sha512_256_lanes(lanes, n, bufs, lens, out);
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(bufs);
    PyMem_Free(lens);
    return rc;
}
#else
#define LANES_USABLE() 0
static int lanes_many(int lanes, const Py_buffer *views, Py_ssize_t n, unsigned char *out) { return -1; }
#endif

/* the lanes digest_many(algorithm ``which``, ``n`` buffers) uses by default: 0 for libcrypto */
static int default_lanes(int which, Py_ssize_t n) {
    return which == 0 && LANES_USABLE() && n >= LANES_MIN(LANES_USABLE()) ? LANES_USABLE() : 0;
}

static int algorithm_index(const char *algorithm) {
    return strcmp(algorithm, "sha512-256") == 0 ? 0 : strcmp(algorithm, "sha256") == 0 ? 1 : -1;
}

static PyObject *py_needs_load(PyObject *self, PyObject *args) {
    const char *algorithm;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "sn", &algorithm, &n))
        return NULL;
    int which = algorithm_index(algorithm);
    if (which < 0)
        return PyErr_Format(PyExc_ValueError, "needs_load(): no algorithm %s", algorithm);
    return PyBool_FromLong(!lib.loaded && default_lanes(which, n) == 0);
}

static PyObject *py_digest_many(PyObject *self, PyObject *args) {
    const char *algorithm;
    PyObject *seq_arg, *lanes_arg = Py_None;
    if (!PyArg_ParseTuple(args, "sO|O", &algorithm, &seq_arg, &lanes_arg))
        return NULL;
    int lanes = -1; /* -1: the widest the CPU has, where it pays; 0: libcrypto; 4 or 8: those lanes */
    if (lanes_arg != Py_None && (lanes = PyLong_AsLong(lanes_arg)) == -1 && PyErr_Occurred())
        return NULL;
    int which = algorithm_index(algorithm);
    if (which < 0)
        return PyErr_Format(PyExc_ValueError, "digest_many(): no algorithm %s", algorithm);
    if (lanes > 0 && (which != 0 || (lanes != 4 && lanes != 8) || lanes > LANES_USABLE()))
        return PyErr_Format(PyExc_OSError, "digest_many(): no %d-lane %s on this CPU", lanes, algorithm);
    PyObject *seq = PySequence_Fast(seq_arg, "digest_many() needs a sequence of buffers");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    if (lanes < 0)
        lanes = default_lanes(which, n);
    const EVP_MD_CTX *p = NULL;
    if (lanes == 0) { /* libcrypto: only this path needs it loaded */
        if (!lib.loaded) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_RuntimeError, "pycatar._sha: load() has not succeeded");
            return NULL;
        }
        if (!(p = proto(which))) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_OSError, "libcrypto cannot compute %s", algorithm);
        }
    }
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    unsigned char *out = PyMem_Malloc(32 * (size_t)(n ? n : 1));
    EVP_MD_CTX *c = lanes == 0 ? lib.ctx_new() : NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (!views || !out || (lanes == 0 && !c)) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
    if (lanes > 0) {
        if (lanes_many(lanes, views, n, out) < 0) {
            PyErr_NoMemory();
            goto done;
        }
    } else {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n && !failed; i++) {
            unsigned int len = 0;
            failed = lib.copy_ex(c, p) != 1 || lib.update(c, views[i].buf, (size_t)views[i].len) != 1 ||
                     lib.final_ex(c, out + 32 * i, &len) != 1 || len != 32;
        }
        Py_END_ALLOW_THREADS
    }
    if (failed) {
        PyErr_Format(PyExc_OSError, "libcrypto failed to compute %s", algorithm);
        goto done;
    }
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        PyObject *d = PyBytes_FromStringAndSize((const char *)out + 32 * i, 32);
        if (!d)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, d);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    if (c)
        lib.ctx_free(c);
    PyMem_Free(views);
    PyMem_Free(out);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"load", py_load, METH_O,
     "load(name): dlopen the libcrypto ``name`` (once loaded, later calls return at once); raises "
     "OSError saying why it cannot be used."},
    {"needs_load", py_needs_load, METH_VARARGS,
     "needs_load(algorithm, n) -> bool: whether digest_many(algorithm, n buffers) would go through libcrypto, "
     "which load() has not loaded yet (batches the lanes take need no libcrypto)."},
    {"digest_many", py_digest_many, METH_VARARGS,
     "digest_many(algorithm, buffers, lanes=None) -> list of digests: SHA-512/256 (\"sha512-256\") or "
     "SHA-256 (\"sha256\") of each buffer, the GIL released once.  lanes: SHA-512/256 8 (AVX-512) or "
     "4 (AVX2) buffers at a time (OSError where the CPU cannot), 0: by libcrypto one at a time, None: "
     "LANES at a time for batches of LANES_MIN buffers or more (the widest kernel the CPU has), else libcrypto."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._sha", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sha(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "LANES", LANES_USABLE()) < 0 ||
              PyModule_AddIntConstant(m, "LANES_MIN", LANES_MIN(LANES_USABLE())) < 0))
        Py_CLEAR(m);
    return m;
}
