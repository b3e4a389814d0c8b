/*
 * pycatar._curl: the parts of libcurl's easy and multi interfaces that pycatar.httpclient uses,
 * with bodies received in C.
 *
 * Why not pycurl: libcurl hands a body over in pieces of at most 16 KiB, and pycurl turns each into
 * a bytes object passed to a Python callback, which must take the GIL.  While another thread runs
 * Python (the extraction's main thread queueing chunks, the decoders between their C calls), the
 * transfer thread waits up to the switch interval for each piece: a 4 MiB answer then arrives at a
 * few MB/s.  Here the write callback is C: it copies the piece into the transfer's buffer and
 * returns, so a transfer never needs the GIL until it is over, and no bytes object is made per piece.
 *
 * libcurl is loaded with dlopen (libcurl.so.4, the system's: Debian's libcurl4, which casync uses
 * too) when load() is first called, so that building pycatar needs no libcurl headers and a machine
 * without libcurl can still use everything but HTTP.  The few functions and constants used are
 * declared here; they are libcurl's stable ABI (curl.h: option numbers carry their argument type,
 * CURLOPTTYPE_LONG 0, OBJECTPOINT 10000, FUNCTIONPOINT 20000, OFF_T 30000; information numbers
 * theirs, CURLINFO_STRING 0x100000, LONG 0x200000, DOUBLE 0x300000, OFF_T 0x600000).
 *
 * Easy() is an easy handle.  setopt(option, value) sets an option from an int (long and off_t
 * options), a str or bytes (string options, which libcurl copies), or a list of str (the one
 * string-list option, CURLOPT_HTTPHEADER).  receive(limit, fd=-1) sets where the next transfer's
 * body goes: into a buffer of at most ``limit`` bytes (a longer body aborts the transfer and sets
 * ``overflowed``), or written to the descriptor ``fd``.  post(data) sends ``data`` (any buffer,
 * kept, not copied) as the request body.  body() takes the received body: a Body, a read-only
 * buffer (memoryview(body) is its bytes, no copy).  getinfo(info), reset() (every option back to its
 * default, the connections kept), error() (libcurl's message for the last failed transfer).
 *
 * Multi() is a multi handle: add(easy), remove(easy), perform() (the number of transfers running),
 * info_read() (the transfers done since the last call: [(easy, result code)]), poll(timeout_ms)
 * (waits for activity on any transfer, at most ``timeout_ms`` or until wakeup()), wakeup() (from any
 * thread).  perform() and poll() release the GIL.
 *
 * A Body's memory, once the Body is gone, is kept for the next bodies (up to POOL_BYTES in all): a
 * batch of chunks is some MiB, and fresh memory of that size costs a page fault per 4 KiB each time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "_dlbind.h"

typedef void CURL;
typedef void CURLM;
struct curl_slist;
typedef struct {
    int msg;
    CURL *easy_handle;
    union {
        void *whatever;
        int result;
    } data;
} CURLMsg;

#define CURLMSG_DONE 1
#define CURL_GLOBAL_DEFAULT 3L
#define CURL_ERROR_SIZE 256
#define CURLOPT_WRITEDATA 10001
#define CURLOPT_ERRORBUFFER 10010
#define CURLOPT_HTTPHEADER 10023
#define CURLOPT_POSTFIELDS 10015
#define CURLOPT_PRIVATE 10103
#define CURLOPT_WRITEFUNCTION 20011
#define CURLOPT_POSTFIELDSIZE_LARGE 30120
#define CURLINFO_PRIVATE 0x100015
#define CURLINFO_CONTENT_LENGTH_DOWNLOAD_T 0x60000F
#define CURLINFO_TYPEMASK 0xf00000
#define CURLINFO_STRING 0x100000
#define CURLINFO_LONG 0x200000
#define CURLINFO_DOUBLE 0x300000
#define CURLINFO_OFF_T 0x600000

typedef size_t (*write_fn)(char *, size_t, size_t, void *);

static struct {
    int loaded;
    int (*global_init)(long);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    int (*easy_setopt)(CURL *, int, ...);
    int (*easy_getinfo)(CURL *, int, ...);
    void (*easy_reset)(CURL *);
    const char *(*easy_strerror)(int);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLM *(*multi_init)(void);
    int (*multi_cleanup)(CURLM *);
    int (*multi_add_handle)(CURLM *, CURL *);
    int (*multi_remove_handle)(CURLM *, CURL *);
    int (*multi_perform)(CURLM *, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    int (*multi_poll)(CURLM *, void *, unsigned int, int, int *);
    int (*multi_wakeup)(CURLM *);
    const char *(*multi_strerror)(int);
    char *(*version)(void);
} lib;


/* The numbers pycatar.httpclient uses, as module attributes (curl.h's names without CURLOPT_,
   CURLINFO_ or CURLPROTO_; result codes as E_...). */
static const struct {
    const char *name;
    long value;
} constants[] = {
    /* options */
    {"URL", 10002}, {"USERAGENT", 10018}, {"HTTPHEADER", CURLOPT_HTTPHEADER}, {"CUSTOMREQUEST", 10036},
    {"CAINFO", 10065}, {"CAPATH", 10097}, {"SSLCERT", 10025}, {"SSLKEY", 10087},
    {"NOSIGNAL", 99}, {"PROTOCOLS", 181}, {"REDIR_PROTOCOLS", 182}, {"FOLLOWLOCATION", 52},
    {"MAXREDIRS", 68}, {"CONNECTTIMEOUT_MS", 156}, {"TIMEOUT_MS", 155}, {"LOW_SPEED_LIMIT", 19},
    {"LOW_SPEED_TIME", 20}, {"BUFFERSIZE", 98}, {"NOBODY", 44}, {"MAXFILESIZE_LARGE", 30117},
    {"PROTO_HTTP", 1}, {"PROTO_HTTPS", 2},
    /* information */
    {"RESPONSE_CODE", 0x200002}, {"OS_ERRNO", 0x200019}, {"RETRY_AFTER", 0x600039},
    {"NUM_CONNECTS", 0x20001A}, {"HTTP_VERSION", 0x20002E},
    /* result codes */
    {"E_UNSUPPORTED_PROTOCOL", 1}, {"E_URL_MALFORMAT", 3}, {"E_COULDNT_RESOLVE_HOST", 6},
    {"E_COULDNT_CONNECT", 7}, {"E_REMOTE_ACCESS_DENIED", 9}, {"E_PARTIAL_FILE", 18},
    {"E_OPERATION_TIMEDOUT", 28}, {"E_SSL_CONNECT_ERROR", 35},
    {"E_ABORTED_BY_CALLBACK", 42}, {"E_TOO_MANY_REDIRECTS", 47}, {"E_GOT_NOTHING", 52},
    {"E_SSL_ENGINE_NOTFOUND", 53}, {"E_SEND_ERROR", 55}, {"E_RECV_ERROR", 56}, {"E_SSL_CERTPROBLEM", 58},
    {"E_SSL_CIPHER", 59}, {"E_PEER_FAILED_VERIFICATION", 60}, {"E_FILESIZE_EXCEEDED", 63},
    {"E_LOGIN_DENIED", 67}, {"E_SSL_CACERT_BADFILE", 77}, {"E_SSL_CRL_BADFILE", 82},
    {"E_SSL_ISSUER_ERROR", 83}, {"E_SSL_PINNEDPUBKEYNOTMATCH", 90}, {"E_SSL_INVALIDCERTSTATUS", 91},
    {NULL, 0}};

static PyObject *CurlError;  /* _curl.error(code, message) */

static PyObject *raise_code(int code, const char *message) {
    PyObject *v = Py_BuildValue("(is)", code, message ? message : "");
    if (v != NULL) {
        PyErr_SetObject(CurlError, v);
        Py_DECREF(v);
    }
    return NULL;
}

/* ------------------------------------------------------------------ the pool of body buffers */

#define POOL_SLOTS 16
#define POOL_BYTES (32u << 20)
#define POOL_MIN (256u << 10)  /* smaller buffers are malloc's to keep */
#define POOL_ROUND (1u << 20)  /* pooled buffers are whole MiB: bodies of similar sizes share them */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *buf;
    size_t cap;
} pool[POOL_SLOTS];
static size_t pool_bytes;

/* A child forked while another thread held the lock would never get it: it starts with a new one. */
static void pool_after_fork(void) { pthread_mutex_init(&pool_lock, NULL); }

/* A buffer of at least ``want`` bytes (its capacity in *cap), from the pool if it has one. */
static char *buffer_take(size_t want, size_t *cap) {
    if (want >= POOL_MIN) {
        int best = -1;
        pthread_mutex_lock(&pool_lock);
        for (int i = 0; i < POOL_SLOTS; i++)
            if (pool[i].buf != NULL && pool[i].cap >= want && (best < 0 || pool[i].cap < pool[best].cap))
                best = i;
        if (best >= 0) {
            char *b = pool[best].buf;
            *cap = pool[best].cap;
            pool[best].buf = NULL;
            pool_bytes -= *cap;
            pthread_mutex_unlock(&pool_lock);
            return b;
        }
        pthread_mutex_unlock(&pool_lock);
    }
    if (want >= POOL_MIN && want <= SIZE_MAX - POOL_ROUND)
        want = (want + POOL_ROUND - 1) / POOL_ROUND * POOL_ROUND;  /* (pages never written cost nothing) */
    char *b = PyMem_RawMalloc(want ? want : 1);
    *cap = b != NULL ? want : 0;
    return b;
}

static void buffer_give(char *buf, size_t cap) {
    if (buf == NULL)
        return;
    if (cap >= POOL_MIN) {
        pthread_mutex_lock(&pool_lock);
        if (pool_bytes + cap <= POOL_BYTES) {
            for (int i = 0; i < POOL_SLOTS; i++)
                if (pool[i].buf == NULL) {
                    pool[i].buf = buf;
                    pool[i].cap = cap;
                    pool_bytes += cap;
                    pthread_mutex_unlock(&pool_lock);
                    return;
                }
        }
        pthread_mutex_unlock(&pool_lock);
    }
    PyMem_RawFree(buf);
}

/* ------------------------------------------------------------------ Body */

typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t len;
    size_t cap;
} Body;

static void Body_dealloc(Body *self) {
    buffer_give(self->buf, self->cap);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Body_getbuffer(Body *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->buf, self->len, 1, flags);
}

static Py_ssize_t Body_length(Body *self) { return self->len; }

static PyBufferProcs Body_as_buffer = {(getbufferproc)Body_getbuffer, NULL};
static PySequenceMethods Body_as_sequence = {.sq_length = (lenfunc)Body_length};

static PyTypeObject BodyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pycatar._curl.Body",
    .tp_basicsize = sizeof(Body),
    .tp_dealloc = (destructor)Body_dealloc,
    .tp_as_buffer = &Body_as_buffer,
    .tp_as_sequence = &Body_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A received body: a read-only buffer (memoryview(body) gives its bytes without a copy).",
};

/* ------------------------------------------------------------------ Easy */

typedef struct {
    PyObject_HEAD
    CURL *h;
    struct curl_slist *headers;
    Py_buffer post;  /* the request body, held (so it neither moves nor goes) while libcurl may read it */
    int posting;
    char errbuf[CURL_ERROR_SIZE];
    /* the body of the transfer under way */
    char *buf;
    size_t len, cap, limit;
    int fd;
    int overflowed;
    int write_errno;
} Easy;

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
    Easy *e = userdata;
    size_t len = size * n;
    if (len > e->limit - e->len) {  /* e->len <= e->limit always */
        e->overflowed = 1;
        return 0;
    }
    if (e->fd >= 0) {
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(e->fd, data + done, len - done);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                e->write_errno = errno;
                return 0;
            }
            done += (size_t)w;
        }
        e->len += len;
        return len;
    }
    if (len > e->cap - e->len) {
        size_t want;
        if (e->cap == 0) {
            /* the announced length, when there is one (a body longer than announced is an error
               for libcurl anyway), else room to grow */
            int64_t announced = -1;
            lib.easy_getinfo(e->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
            want = announced > 0 && (uint64_t)announced <= e->limit ? (size_t)announced : (64u << 10);
        } else {
            want = e->cap * 2;
        }
        while (want < e->len + len)
            want *= 2;
        if (want > e->limit)
            want = e->limit;
        size_t cap;
        char *b = buffer_take(want, &cap);
        if (b == NULL) {
            e->write_errno = ENOMEM;
            return 0;
        }
        if (e->len)
            memcpy(b, e->buf, e->len);
        buffer_give(e->buf, e->cap);
        e->buf = b;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, data, len);
    e->len += len;
    return len;
}

/* The options every transfer of the handle has, which reset() would clear. */
static int Easy_prime(Easy *self) {
    int rc = lib.easy_setopt(self->h, CURLOPT_ERRORBUFFER, self->errbuf);
    if (!rc)
        rc = lib.easy_setopt(self->h, CURLOPT_PRIVATE, (void *)self);
    if (!rc)
        rc = lib.easy_setopt(self->h, CURLOPT_WRITEFUNCTION, (write_fn)on_body);
    if (!rc)
        rc = lib.easy_setopt(self->h, CURLOPT_WRITEDATA, (void *)self);
    if (rc) {
        raise_code(rc, lib.easy_strerror(rc));
        return -1;
    }
    return 0;
}

static void Easy_drop_post(Easy *self) {
    if (self->posting) {
        PyBuffer_Release(&self->post);
        self->posting = 0;
    }
}

static void Easy_drop_body(Easy *self) {
    buffer_give(self->buf, self->cap);
    self->buf = NULL;
    self->len = self->cap = 0;
}

static PyObject *Easy_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!lib.loaded) {
        PyErr_SetString(PyExc_RuntimeError, "libcurl is not loaded (call load() first)");
        return NULL;
    }
    Easy *self = (Easy *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fd = -1;
    self->h = lib.easy_init();
    if (self->h == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    if (Easy_prime(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Easy_dealloc(Easy *self) {
    if (self->h != NULL)
        lib.easy_cleanup(self->h);
    if (self->headers != NULL)
        lib.slist_free_all(self->headers);
    Easy_drop_post(self);
    Easy_drop_body(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Easy_setopt(Easy *self, PyObject *args) {
    int option, rc;
    PyObject *value;
    if (!PyArg_ParseTuple(args, "iO:setopt", &option, &value))
        return NULL;
    if (option < 10000 || (option >= 30000 && option < 40000)) {
        long long v = PyLong_AsLongLong(value);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        rc = option < 10000 ? lib.easy_setopt(self->h, option, (long)v) : lib.easy_setopt(self->h, option, (int64_t)v);
    } else if (option < 20000 && PyList_Check(value)) {
        if (option != CURLOPT_HTTPHEADER) {
            PyErr_SetString(PyExc_ValueError, "a list is taken only for CURLOPT_HTTPHEADER");
            return NULL;
        }
        struct curl_slist *list = NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            const char *s = PyUnicode_AsUTF8(PyList_GET_ITEM(value, i));
            struct curl_slist *more = s != NULL ? lib.slist_append(list, s) : NULL;
            if (more == NULL) {
                if (list != NULL)
                    lib.slist_free_all(list);
                return s != NULL ? PyErr_NoMemory() : NULL;
            }
            list = more;
        }
        rc = lib.easy_setopt(self->h, option, list);
        if (rc) {
            lib.slist_free_all(list);
        } else {
            if (self->headers != NULL)
                lib.slist_free_all(self->headers);
            self->headers = list;
        }
    } else if (option < 20000 && option != CURLOPT_POSTFIELDS && option != CURLOPT_PRIVATE &&
               option != CURLOPT_WRITEDATA && option != CURLOPT_ERRORBUFFER) {
        const char *s;
        if (PyUnicode_Check(value)) {
            s = PyUnicode_AsUTF8(value);
        } else if (PyBytes_Check(value)) {
            s = PyBytes_AsString(value);
            if (s != NULL && strlen(s) != (size_t)PyBytes_GET_SIZE(value)) {
                PyErr_SetString(PyExc_ValueError, "embedded null byte");
                return NULL;
            }
        } else {
            PyErr_SetString(PyExc_TypeError, "a string option takes str or bytes");
            return NULL;
        }
        if (s == NULL)
            return NULL;
        rc = lib.easy_setopt(self->h, option, s);  /* libcurl keeps a copy */
    } else {
        PyErr_Format(PyExc_ValueError, "option %d is not settable here", option);
        return NULL;
    }
    if (rc)
        return raise_code(rc, lib.easy_strerror(rc));
    Py_RETURN_NONE;
}

static PyObject *Easy_receive(Easy *self, PyObject *args) {
    unsigned long long limit;
    int fd = -1;
    if (!PyArg_ParseTuple(args, "K|i:receive", &limit, &fd))
        return NULL;
    Easy_drop_body(self);
    self->limit = limit > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)limit;
    self->fd = fd;
    self->overflowed = 0;
    self->write_errno = 0;
    Py_RETURN_NONE;
}

static PyObject *Easy_post(Easy *self, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = lib.easy_setopt(self->h, CURLOPT_POSTFIELDSIZE_LARGE, (int64_t)view.len);
    if (!rc)
        rc = lib.easy_setopt(self->h, CURLOPT_POSTFIELDS, view.buf);
    if (rc) {
        PyBuffer_Release(&view);
        return raise_code(rc, lib.easy_strerror(rc));
    }
    Easy_drop_post(self);
    self->post = view;
    self->posting = 1;
    Py_RETURN_NONE;
}

static PyObject *Easy_body(Easy *self, PyObject *unused) {
    if (self->fd >= 0)
        Py_RETURN_NONE;
    Body *b = PyObject_New(Body, &BodyType);
    if (b == NULL)
        return NULL;
    b->buf = self->buf;
    b->len = (Py_ssize_t)self->len;
    b->cap = self->cap;
    self->buf = NULL;
    self->len = self->cap = 0;
    return (PyObject *)b;
}

static PyObject *Easy_getinfo(Easy *self, PyObject *arg) {
    int info = (int)PyLong_AsLong(arg);
    if (info == -1 && PyErr_Occurred())
        return NULL;
    int rc;
    switch (info & CURLINFO_TYPEMASK) {
    case CURLINFO_LONG: {
        long v = 0;
        if ((rc = lib.easy_getinfo(self->h, info, &v)))
            break;
        return PyLong_FromLong(v);
    }
    case CURLINFO_OFF_T: {
        int64_t v = 0;
        if ((rc = lib.easy_getinfo(self->h, info, &v)))
            break;
        return PyLong_FromLongLong(v);
    }
    case CURLINFO_DOUBLE: {
        double v = 0;
        if ((rc = lib.easy_getinfo(self->h, info, &v)))
            break;
        return PyFloat_FromDouble(v);
    }
    case CURLINFO_STRING: {
        char *v = NULL;
        if (info == CURLINFO_PRIVATE) {
            PyErr_SetString(PyExc_ValueError, "CURLINFO_PRIVATE is the handle's own");
            return NULL;
        }
        if ((rc = lib.easy_getinfo(self->h, info, &v)))
            break;
        if (v == NULL)
            Py_RETURN_NONE;
        return PyUnicode_DecodeUTF8(v, strlen(v), "surrogateescape");
    }
    default:
        PyErr_Format(PyExc_ValueError, "information %d is not readable here", info);
        return NULL;
    }
    return raise_code(rc, lib.easy_strerror(rc));
}

static PyObject *Easy_reset(Easy *self, PyObject *unused) {
    lib.easy_reset(self->h);
    if (self->headers != NULL) {
        lib.slist_free_all(self->headers);
        self->headers = NULL;
    }
    Easy_drop_post(self);
    Easy_drop_body(self);
    self->fd = -1;
    self->errbuf[0] = 0;
    if (Easy_prime(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Easy_error(Easy *self, PyObject *unused) {
    return PyUnicode_DecodeUTF8(self->errbuf, strnlen(self->errbuf, CURL_ERROR_SIZE), "replace");
}

static PyObject *Easy_get_overflowed(Easy *self, void *unused) { return PyBool_FromLong(self->overflowed); }
static PyObject *Easy_get_received(Easy *self, void *unused) { return PyLong_FromSize_t(self->len); }
static PyObject *Easy_get_write_errno(Easy *self, void *unused) { return PyLong_FromLong(self->write_errno); }

static PyMethodDef Easy_methods[] = {
    {"setopt", (PyCFunction)Easy_setopt, METH_VARARGS, "setopt(option, value)"},
    {"receive", (PyCFunction)Easy_receive, METH_VARARGS, "receive(limit, fd=-1): where the next body goes"},
    {"post", (PyCFunction)Easy_post, METH_O, "post(data): the request body (kept, not copied)"},
    {"body", (PyCFunction)Easy_body, METH_NOARGS, "the body received (a Body), None if written to a descriptor"},
    {"getinfo", (PyCFunction)Easy_getinfo, METH_O, "getinfo(info)"},
    {"reset", (PyCFunction)Easy_reset, METH_NOARGS, "every option back to its default"},
    {"error", (PyCFunction)Easy_error, METH_NOARGS, "libcurl's message about the last failure"},
    {NULL}};

static PyGetSetDef Easy_getset[] = {
    {"overflowed", (getter)Easy_get_overflowed, NULL, "the body went past the limit", NULL},
    {"received", (getter)Easy_get_received, NULL, "bytes of body received", NULL},
    {"write_errno", (getter)Easy_get_write_errno, NULL, "the errno that stopped the body's writing", NULL},
    {NULL}};

static PyTypeObject EasyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pycatar._curl.Easy",
    .tp_basicsize = sizeof(Easy),
    .tp_new = Easy_new,
    .tp_dealloc = (destructor)Easy_dealloc,
    .tp_methods = Easy_methods,
    .tp_getset = Easy_getset,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A libcurl easy handle.",
};

/* ------------------------------------------------------------------ Multi */

typedef struct {
    PyObject_HEAD
    CURLM *m;
    PyObject *members;  /* set of the Easy objects added (kept alive while libcurl uses them) */
} Multi;

static PyObject *Multi_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!lib.loaded) {
        PyErr_SetString(PyExc_RuntimeError, "libcurl is not loaded (call load() first)");
        return NULL;
    }
    Multi *self = (Multi *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->members = PySet_New(NULL);
    self->m = lib.multi_init();
    if (self->members == NULL || self->m == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Multi_close_handles(Multi *self) {
    if (self->m == NULL)
        return;
    if (self->members != NULL) {
        PyObject *it = PyObject_GetIter(self->members), *e;
        while (it != NULL && (e = PyIter_Next(it)) != NULL) {
            lib.multi_remove_handle(self->m, ((Easy *)e)->h);
            Py_DECREF(e);
        }
        Py_XDECREF(it);
        PyErr_Clear();
        PySet_Clear(self->members);
    }
    lib.multi_cleanup(self->m);
    self->m = NULL;
}

static void Multi_dealloc(Multi *self) {
    Multi_close_handles(self);
    Py_XDECREF(self->members);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int multi_open(Multi *self) {
    if (self->m == NULL) {
        PyErr_SetString(PyExc_ValueError, "the multi handle is closed");
        return 0;
    }
    return 1;
}

static PyObject *Multi_add(Multi *self, PyObject *e) {
    if (!PyObject_TypeCheck(e, &EasyType)) {
        PyErr_SetString(PyExc_TypeError, "add() takes an Easy");
        return NULL;
    }
    if (!multi_open(self))
        return NULL;
    int rc = lib.multi_add_handle(self->m, ((Easy *)e)->h);
    if (rc)
        return raise_code(rc, lib.multi_strerror(rc));
    if (PySet_Add(self->members, e) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Multi_remove(Multi *self, PyObject *e) {
    if (!PyObject_TypeCheck(e, &EasyType)) {
        PyErr_SetString(PyExc_TypeError, "remove() takes an Easy");
        return NULL;
    }
    if (!multi_open(self))
        return NULL;
    int rc = lib.multi_remove_handle(self->m, ((Easy *)e)->h);
    if (rc)
        return raise_code(rc, lib.multi_strerror(rc));
    if (PySet_Discard(self->members, e) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Multi_perform(Multi *self, PyObject *unused) {
    int running = 0, rc;
    if (!multi_open(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = lib.multi_perform(self->m, &running);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_code(rc, lib.multi_strerror(rc));
    return PyLong_FromLong(running);
}

static PyObject *Multi_info_read(Multi *self, PyObject *unused) {
    if (!multi_open(self))
        return NULL;
    PyObject *done = PyList_New(0);
    CURLMsg *msg;
    int left;
    while (done != NULL && (msg = lib.multi_info_read(self->m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        Easy *e = NULL;
        lib.easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&e);
        if (e == NULL)
            continue;
        PyObject *item = Py_BuildValue("(Oi)", (PyObject *)e, msg->data.result);
        if (item == NULL || PyList_Append(done, item) < 0)
            Py_CLEAR(done);
        Py_XDECREF(item);
    }
    return done;
}

static PyObject *Multi_poll(Multi *self, PyObject *arg) {
    int timeout = (int)PyLong_AsLong(arg), rc, n = 0;
    if (timeout == -1 && PyErr_Occurred())
        return NULL;
    if (!multi_open(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = lib.multi_poll(self->m, NULL, 0, timeout, &n);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_code(rc, lib.multi_strerror(rc));
    return PyLong_FromLong(n);
}

static PyObject *Multi_wakeup(Multi *self, PyObject *unused) {
    if (self->m != NULL)
        lib.multi_wakeup(self->m);
    Py_RETURN_NONE;
}

static PyObject *Multi_close(Multi *self, PyObject *unused) {
    Multi_close_handles(self);
    Py_RETURN_NONE;
}

static PyMethodDef Multi_methods[] = {
    {"add", (PyCFunction)Multi_add, METH_O, "add(easy)"},
    {"remove", (PyCFunction)Multi_remove, METH_O, "remove(easy)"},
    {"perform", (PyCFunction)Multi_perform, METH_NOARGS, "run the transfers: the number still running"},
    {"info_read", (PyCFunction)Multi_info_read, METH_NOARGS, "[(easy, result code)] of the transfers done"},
    {"poll", (PyCFunction)Multi_poll, METH_O, "poll(timeout_ms): wait for activity or wakeup()"},
    {"wakeup", (PyCFunction)Multi_wakeup, METH_NOARGS, "end a poll() now (any thread)"},
    {"close", (PyCFunction)Multi_close, METH_NOARGS, "remove every handle and free the multi handle"},
    {NULL}};

static PyTypeObject MultiType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pycatar._curl.Multi",
    .tp_basicsize = sizeof(Multi),
    .tp_new = Multi_new,
    .tp_dealloc = (destructor)Multi_dealloc,
    .tp_methods = Multi_methods,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A libcurl multi handle.",
};

/* ------------------------------------------------------------------ loading libcurl */

static PyObject *load(PyObject *mod, PyObject *args) {
    const char *name = "libcurl.so.4";
    if (!PyArg_ParseTuple(args, "|s:load", &name))
        return NULL;
    if (!lib.loaded) {
        const dl_symbol_t symbols[] = {
            DL_SYM(lib.global_init, "curl_global_init"),
            DL_SYM(lib.easy_init, "curl_easy_init"),
            DL_SYM(lib.easy_cleanup, "curl_easy_cleanup"),
            DL_SYM(lib.easy_setopt, "curl_easy_setopt"),
            DL_SYM(lib.easy_getinfo, "curl_easy_getinfo"),
            DL_SYM(lib.easy_reset, "curl_easy_reset"),
            DL_SYM(lib.easy_strerror, "curl_easy_strerror"),
            DL_SYM(lib.slist_append, "curl_slist_append"),
            DL_SYM(lib.slist_free_all, "curl_slist_free_all"),
            DL_SYM(lib.multi_init, "curl_multi_init"),
            DL_SYM(lib.multi_cleanup, "curl_multi_cleanup"),
            DL_SYM(lib.multi_add_handle, "curl_multi_add_handle"),
            DL_SYM(lib.multi_remove_handle, "curl_multi_remove_handle"),
            DL_SYM(lib.multi_perform, "curl_multi_perform"),
            DL_SYM(lib.multi_info_read, "curl_multi_info_read"),
            DL_SYM(lib.multi_poll, "curl_multi_poll"),
            DL_SYM(lib.multi_wakeup, "curl_multi_wakeup"),
            DL_SYM(lib.multi_strerror, "curl_multi_strerror"),
            DL_SYM(lib.version, "curl_version"),
        };
        char why[512];
        void *h = dl_bind(name, symbols, sizeof symbols / sizeof symbols[0], why, sizeof why);
        if (h == NULL) {
            PyErr_Format(PyExc_OSError, "%s%s", why, strstr(why, " has no ") ? " (libcurl 7.68 or later is needed)" : "");
            return NULL;
        }
        int rc = lib.global_init(CURL_GLOBAL_DEFAULT);
        if (rc) {
            dlclose(h);
            return raise_code(rc, "curl_global_init failed");
        }
        lib.loaded = 1;
    }
    return PyUnicode_FromString(lib.version());
}

static PyObject *strerror_(PyObject *mod, PyObject *arg) {
    int code = (int)PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    if (!lib.loaded) {
        PyErr_SetString(PyExc_RuntimeError, "libcurl is not loaded (call load() first)");
        return NULL;
    }
    return PyUnicode_FromString(lib.easy_strerror(code));
}

static PyMethodDef module_methods[] = {
    {"load", load, METH_VARARGS, "load(name='libcurl.so.4'): load libcurl (once); its version string"},
    {"strerror", strerror_, METH_O, "strerror(code): libcurl's text for a result code"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._curl",
                                    "libcurl's easy and multi interfaces, bodies received in C", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__curl(void) {
    if (PyType_Ready(&BodyType) < 0 || PyType_Ready(&EasyType) < 0 || PyType_Ready(&MultiType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    pthread_atfork(NULL, NULL, pool_after_fork);
    CurlError = PyErr_NewException("pycatar._curl.error", NULL, NULL);
    if (CurlError == NULL || PyModule_AddObjectRef(m, "error", CurlError) < 0 ||
        PyModule_AddObjectRef(m, "Easy", (PyObject *)&EasyType) < 0 ||
        PyModule_AddObjectRef(m, "Multi", (PyObject *)&MultiType) < 0 ||
        PyModule_AddObjectRef(m, "Body", (PyObject *)&BodyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    for (int i = 0; constants[i].name != NULL; i++)
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
