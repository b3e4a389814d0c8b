/*
 * pycatar._chunker: the content-defined chunker of the casync format family (spec/chunker.md).
 *
 * A rolling buzhash over a 48-byte window decides where chunks end.  The hot loop runs with
 * the GIL released on any C-contiguous buffer, without copying it.  The chunker keeps its
 * state (bytes in the current chunk, the rolling hash, the last 48 bytes) between calls, so a
 * stream may be fed in pieces of any size and yields the same cuts as when fed in one piece.
 *
 * The Python wrapper (pycatar/chunker.py) resolves and validates the sizes and computes the
 * discriminator; this module trusts what it is given (but still refuses nonsense).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 48

/* CHUNK-3: the 256 buzhash values, indexed by byte value. */
static const uint32_t T[256] = {
    0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68, 0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,
    0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c, 0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,
    0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa, 0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,
    0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7, 0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,
    0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc, 0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,
    0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2, 0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,
    0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e, 0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,
    0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c, 0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,
    0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d, 0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
    0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae, 0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,
    0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874, 0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,
    0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493, 0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,
    0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929, 0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,
    0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617, 0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,
    0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f, 0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,
    0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50, 0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,
    0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c, 0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,
    0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729, 0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
    0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328, 0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,
    0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475, 0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,
    0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09, 0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,
    0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293, 0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,
    0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661, 0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,
    0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73, 0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,
    0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2, 0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,
    0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49, 0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,
    0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a, 0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
    0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1, 0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,
    0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1, 0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,
    0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c, 0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,
    0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d, 0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,
    0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131, 0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
};

/* T rotated left by WINDOW % 32 bits: the contribution of the byte leaving the window. */
static uint32_t T_OUT[256];

static inline uint32_t rotl32(uint32_t x, unsigned r) {
    r &= 31;
    return r ? (x << r) | (x >> (32 - r)) : x;
}

typedef struct {
    PyObject_HEAD
    uint64_t min_size, avg_size, max_size, discriminator;
    uint64_t first_test;     /* smallest chunk size at which a cut may happen: max(min, WINDOW) */
    uint64_t divisor_c;      /* ceil(2^64 / discriminator), for is_cut */
    uint32_t target;         /* discriminator - 1 */
    int fixed;               /* min == avg == max: cut every avg bytes */
    int busy;                /* a scan is running (the GIL is released) */
    uint64_t chunk_size;     /* bytes of the current (unfinished) chunk seen so far */
    uint32_t h;              /* hash of the window ending at chunk_size (valid once >= first_test) */
    uint8_t ring[WINDOW];    /* byte at chunk offset j is kept at ring[j % WINDOW] */
} ChunkerObject;

/* CHUNK-5's test h % discriminator == discriminator - 1, with one multiplication: h - target is a
 * multiple of the discriminator d exactly when (h - target) * c, modulo 2^64, is below c =
 * ceil(2^64 / d), for any 32-bit value and d < 2^32 (Lemire, Kaser and Kurz, "Faster remainder by
 * direct computation", 2019); below target, h % d == h != target.  Checked against % for every
 * 32-bit h and 16 discriminators from 1 to 2^32 - 1. */
static inline int is_cut(uint32_t h, uint64_t c, uint32_t target) {
    return h >= target && (uint64_t) (h - target) * c <= c - 1;
}

typedef struct {
    Py_ssize_t *v;
    size_t n, cap;
    int oom;
} CutVec;

static inline void cut_push(CutVec *c, Py_ssize_t pos) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        Py_ssize_t *nv = realloc(c->v, cap * sizeof(Py_ssize_t));
        if (!nv) {
            c->oom = 1;
            return;
        }
        c->v = nv;
        c->cap = cap;
    }
    c->v[c->n++] = pos;
}

static uint32_t window_hash(const ChunkerObject *c) {
    /* Hash of the WINDOW bytes ending at chunk offset c->chunk_size, the oldest weighted most. */
    uint32_t h = 0;
    uint64_t start = c->chunk_size; /* oldest byte sits at (chunk_size - WINDOW) % WINDOW == chunk_size % WINDOW */
    for (unsigned i = 0; i < WINDOW; i++)
        h ^= rotl32(T[c->ring[(start + i) % WINDOW]], WINDOW - 1 - i);
    return h;
}

/* Scans p[0..n) and appends every cut position (relative to p) to cuts.  Runs without the GIL. */
static void scan(ChunkerObject *c, const uint8_t *p, size_t n, CutVec *cuts) {
    size_t pos = 0;

    if (c->fixed) {
        while (pos < n) {
            uint64_t need = c->avg_size - c->chunk_size;
            if ((uint64_t) (n - pos) < need) {
                c->chunk_size += n - pos;
                return;
            }
            pos += (size_t) need;
            c->chunk_size = 0;
            cut_push(cuts, (Py_ssize_t) pos);
        }
        return;
    }

    const uint64_t first = c->first_test, max = c->max_size, dc = c->divisor_c;
    const uint32_t target = c->target;

    while (pos < n) {
        uint64_t cs = c->chunk_size;

        if (cs + WINDOW < first) {
            /* No cut can happen before first_test and the hash needs only the last WINDOW bytes:
             * skip what lies before the first window without looking at it. */
            uint64_t adv = first - WINDOW - cs;
            if (adv > (uint64_t) (n - pos))
                adv = n - pos;
            pos += (size_t) adv;
            c->chunk_size = cs + adv;
            continue;
        }

        if (cs < first) {
            /* Collect the first window of the chunk, then hash it from scratch. */
            while (cs < first && pos < n)
                c->ring[cs++ % WINDOW] = p[pos++];
            c->chunk_size = cs;
            if (cs < first)
                return;
            c->h = window_hash(c);
            if (cs >= max || is_cut(c->h, dc, target)) {
                c->chunk_size = 0;
                cut_push(cuts, (Py_ssize_t) pos);
            }
            continue;
        }

        /* Rolling phase: h covers the WINDOW bytes ending at chunk offset cs. */
        uint32_t h = c->h;
        int cut = 0;

        /* While the leaving byte lies before this buffer, take it from the ring. */
        while (pos < WINDOW && pos < n) {
            h = rotl32(h, 1) ^ T_OUT[c->ring[cs % WINDOW]] ^ T[p[pos]];
            pos++, cs++;
            if (cs >= max || is_cut(h, dc, target)) {
                cut = 1;
                break;
            }
        }

        if (!cut) {
            /* Hot loop: both bytes are in the buffer, and the chunk stays below max_size up to end. */
            size_t start = pos, end = max - cs < (uint64_t) (n - pos) ? pos + (size_t) (max - cs) : n;
            while (pos < end) {
                h = rotl32(h, 1) ^ T_OUT[p[pos - WINDOW]] ^ T[p[pos]];
                pos++;
                if (is_cut(h, dc, target)) {
                    cut = 1;
                    break;
                }
            }
            cs += pos - start;
            if (!cut && cs >= max)
                cut = 1;
        }

        if (cut) {
            c->chunk_size = 0;
            cut_push(cuts, (Py_ssize_t) pos);
            continue;
        }

        /* End of buffer in the middle of a chunk: remember the last bytes for the next call. */
        {
            uint64_t in_buf = n < WINDOW ? n : WINDOW; /* bytes of this buffer that may be needed */
            for (uint64_t j = cs - in_buf; j < cs; j++)
                c->ring[j % WINDOW] = p[n - (size_t) (cs - j)];
        }
        c->h = h;
        c->chunk_size = cs;
        return;
    }
}

static int Chunker_init(ChunkerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"min_size", "avg_size", "max_size", "discriminator", NULL};
    unsigned long long mn, av, mx, di;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKKK", kwlist, &mn, &av, &mx, &di))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "chunker is in use");
        return -1;
    }
    if (mn < 1 || !(mn <= av && av <= mx) || mx > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid chunk sizes");
        return -1;
    }
    if (di < 1 || di > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid discriminator");
        return -1;
    }
    self->min_size = mn;
    self->avg_size = av;
    self->max_size = mx;
    self->discriminator = di;
    self->target = (uint32_t) (di - 1);
    self->divisor_c = UINT64_MAX / di + 1;
    self->first_test = mn > WINDOW ? mn : WINDOW;
    self->fixed = mn == av && av == mx;
    self->chunk_size = 0;
    self->h = 0;
    memset(self->ring, 0, sizeof(self->ring));
    return 0;
}

static PyObject *Chunker_feed(ChunkerObject *self, PyObject *arg) {
    Py_buffer view;
    CutVec cuts = {0};
    PyObject *list;

    if (self->min_size == 0) {
        PyErr_SetString(PyExc_RuntimeError, "chunker not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (self->busy) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "chunker is used by another thread");
        return NULL;
    }
    self->busy = 1;
    if (view.len >= 4096) {
        Py_BEGIN_ALLOW_THREADS
        scan(self, view.buf, (size_t) view.len, &cuts);
        Py_END_ALLOW_THREADS
    } else
        scan(self, view.buf, (size_t) view.len, &cuts);
    self->busy = 0;
    PyBuffer_Release(&view);

    if (cuts.oom) {
        free(cuts.v);
        return PyErr_NoMemory();
    }
    list = PyList_New((Py_ssize_t) cuts.n);
    if (list) {
        for (size_t i = 0; i < cuts.n; i++) {
            PyObject *o = PyLong_FromSsize_t(cuts.v[i]);
            if (!o) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t) i, o);
        }
    }
    free(cuts.v);
    return list;
}

static PyObject *Chunker_reset(ChunkerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "chunker is used by another thread");
        return NULL;
    }
    self->chunk_size = 0;
    self->h = 0;
    Py_RETURN_NONE;
}

static PyObject *Chunker_get_pending(ChunkerObject *self, void *closure) {
    (void) closure;
    return PyLong_FromUnsignedLongLong(self->chunk_size);
}

static PyObject *Chunker_get_u64(ChunkerObject *self, void *closure) {
    return PyLong_FromUnsignedLongLong(*(uint64_t *) ((char *) self + (Py_ssize_t) closure));
}

static PyGetSetDef Chunker_getset[] = {
    {"pending", (getter) Chunker_get_pending, NULL, "bytes of the current, not yet cut chunk", NULL},
    {"min_size", (getter) Chunker_get_u64, NULL, NULL, (void *) offsetof(ChunkerObject, min_size)},
    {"avg_size", (getter) Chunker_get_u64, NULL, NULL, (void *) offsetof(ChunkerObject, avg_size)},
    {"max_size", (getter) Chunker_get_u64, NULL, NULL, (void *) offsetof(ChunkerObject, max_size)},
    {"discriminator", (getter) Chunker_get_u64, NULL, NULL, (void *) offsetof(ChunkerObject, discriminator)},
    {NULL},
};

static PyMethodDef Chunker_methods[] = {
    {"feed", (PyCFunction) Chunker_feed, METH_O,
     "feed(buffer) -> list of cut offsets relative to the buffer start (end of each finished chunk)"},
    {"reset", (PyCFunction) Chunker_reset, METH_NOARGS, "forget the current chunk"},
    {NULL},
};

static PyTypeObject ChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pycatar._chunker.Chunker",
    .tp_basicsize = sizeof(ChunkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Chunker(min_size, avg_size, max_size, discriminator): buzhash content-defined chunker",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc) Chunker_init,
    .tp_methods = Chunker_methods,
    .tp_getset = Chunker_getset,
};

static PyObject *buzhash(PyObject *mod, PyObject *arg) {
    (void) mod;
    /* Hash of one window from scratch (for tests): XOR of T[b_i] rotated by len-1-i. */
    Py_buffer view;
    uint32_t h = 0;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *q = view.buf;
    for (Py_ssize_t i = 0; i < view.len; i++)
        h ^= rotl32(T[q[i]], (unsigned) ((view.len - 1 - i) & 31));
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

static PyMethodDef module_methods[] = {
    {"buzhash", buzhash, METH_O, "buzhash(window) -> int: hash of a window computed from scratch"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "pycatar._chunker", "casync buzhash chunker (C core)", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__chunker(void) {
    PyObject *m, *table;

    for (int i = 0; i < 256; i++)
        T_OUT[i] = rotl32(T[i], WINDOW % 32);

    if (PyType_Ready(&ChunkerType) < 0)
        return NULL;
    m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&ChunkerType);
    if (PyModule_AddObject(m, "Chunker", (PyObject *) &ChunkerType) < 0) {
        Py_DECREF(&ChunkerType);
        Py_DECREF(m);
        return NULL;
    }
    table = PyTuple_New(256);
    if (!table) {
        Py_DECREF(m);
        return NULL;
    }
    for (int i = 0; i < 256; i++)
        PyTuple_SET_ITEM(table, i, PyLong_FromUnsignedLong(T[i]));
    if (PyModule_AddObject(m, "TABLE", table) < 0) {
        Py_DECREF(table);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "WINDOW_SIZE", WINDOW);
    return m;
}
