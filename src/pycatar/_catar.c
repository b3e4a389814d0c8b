/*
 * pycatar._catar: the catar decoder's per-entry record parsing, in C.
 *
 * pycatar.decoder reads the stream into buffers and calls this module on them; this module parses
 * and checks the records (spec/catar.md CATAR-10..CATAR-31, CATAR-43) and returns their fields.  It
 * holds no format knowledge of its own: record types, sizes, field offsets, limits and feature flag
 * bits come from pycatar.format, pycatar.flags and pycatar.validate through configure(), which
 * pycatar.decoder calls once at import.  Every error is the decoder's FormatError with the message
 * the decoder documents; every length read from the stream is checked against the buffer before use.
 *
 * The functions work on a buffer (bytes or any contiguous buffer) from index ``bpos`` on, whose byte
 * bpos is at stream offset ``off``.  When the records they need run past the end of the buffer they
 * return the number of bytes (from bpos) they need as an int, and the caller fills its buffer and
 * calls again; with ``eof`` true the buffer holds all the stream has left, and running past its end
 * is the truncation error instead.
 *
 * parse_entry(buf, bpos, off, eof, end, limit, af, at_root, strict, path): one ENTRY and its follow-up
 *   records, up to and including the PAYLOAD header, SYMLINK or DEVICE record, or up to (not
 *   including) the FILENAME or GOODBYE record that follows (or ``end``, the entry's extent end, -1:
 *   none).  ``limit``: the stream size (-1: unknown), for the payload check.  ``af``: the archive's
 *   feature flags, None before the first ENTRY.  Returns an int (bytes needed), None (``af`` is None:
 *   the caller checks the first ENTRY's feature flags and calls again with them), or (entry, bytes
 *   consumed): a pycatar.entry.Entry at ``path``, made here (make_entry).
 * parse_filename(buf, bpos, off, eof, end): a FILENAME record; the name (bytes) or an int.
 * parse_children(buf, bpos, off, eof, last_name, depth, dir_offset, prefix, limit, af, strict, hasher,
 *   max_n, make, payload_max): the next children of a directory (at ``dir_offset``) during iteration,
 *   each a FILENAME record and an entry (as parse_entry, with ``af`` known), at most ``max_n`` of them,
 *   up to and including a directory or a regular file with a payload (iteration goes on inside it).
 *   With MAKE_ENTRIES, a payload of at most ``payload_max`` bytes that the buffer holds whole is
 *   consumed with its entry instead (the batch goes on after it).  Returns False (the directory's
 *   GOODBYE record comes next: not consumed), an int (bytes needed), or (entries, bytes consumed, the
 *   last name, FILENAME offsets, name hashes: both u64 arrays as bytes, lines, payloads): ``payloads``
 *   is None when no payload was consumed, else a list beside ``entries``: a read-only memoryview of the
 *   buffer for an entry whose payload was, None for the others.  Names must sort after ``last_name``; ``depth`` (of the children) must not exceed MAX_DEPTH;
 *   paths are ``prefix`` + name.  An error after some children ends the batch before the failing
 *   record: the next call reports it.  ``hasher``: None for the goodbye hash, or a function of the
 *   name (tests provoke collisions with a weak one).  ``make``: 1 (MAKE_ENTRIES) an Entry for every
 *   child; 0 (MAKE_NONE) the entries list holds only a directory or a file with a payload that ends
 *   the batch (the records are checked all the same; no path is made for the others); 2 (MAKE_LINES)
 *   the same, and ``lines`` is the text ``casync list`` prints for every child of the batch (see
 *   list_line), else None.
 * siphash24(data, key): SipHash-2-4 (pycatar.goodbye.name_hash: the goodbye hash; parse_children uses it
 *   with the configured key).
 * check_goodbye(record, start, dir_offset, starts, hashes): a directory's GOODBYE record against its
 *   children (CATAR-43): ``starts`` (array 'Q') the children's FILENAME offsets followed by
 *   ``start``, ``hashes`` their name hashes.
 * The predicates id_ok, mtime_ok, device_ok, cstr_ok, user_name_ok, xattr_name_ok are the parser's
 * and, exported, pycatar.validate's (so the encoder's): one copy of each rule.
 * list_line(mode, path), ls_format_mode(mode), mtree_escape(value): the text of ``casync list`` (a
 *   line: the mode as ``ls -l`` shows it, the path escaped as in mtree files), pycatar.listing's, so
 *   that the lines parse_children makes (MAKE_LINES) and the listing's are one formatting.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_KINDS 32
#define MAX_FTYPES 16

typedef struct {
    uint64_t type;
    uint64_t limit;
    int fixed, rank, repeatable;
    char name[40];
} kind_t;

typedef struct {
    uint64_t ifmt, need;
} ftype_t;

static struct {
    int ready;
    int rules_ready; /* configure_rules() ran: the predicates can be used (validate.py does it at import) */
    PyObject *error, *acl_entry, *acl_default;
    /* record types */
    uint64_t t_entry, t_user, t_group, t_xattr, t_acl_user, t_acl_group, t_acl_group_obj, t_acl_default,
        t_acl_default_user, t_acl_default_group, t_fcaps, t_quota_projid, t_selinux, t_symlink, t_device,
        t_payload, t_filename, t_goodbye, t_tail_marker;
    /* sizes and limits */
    uint64_t hdr, entry_size, acl_fixed, filename_max, selinux_max, symlink_max, item, u64max;
    uint64_t max_depth, xattr_names_max, xattr_bytes_max, acl_named_max, acl_unset, entry_flag_bits;
    /* field offsets */
    Py_ssize_t o_size, o_type, o_ff, o_mode, o_flags, o_uid, o_gid, o_mtime, o_acl_id, o_acl_perms,
        o_gobj_perms, o_def_u, o_def_g, o_def_o, o_def_m, o_projid, o_major, o_minor, o_item_offset,
        o_item_size, o_item_hash, o_tail_entry, o_tail_size, o_tail_marker;
    /* feature flag bits */
    uint64_t f_uid16, f_uid32, f_names, f_sec, f_usec, f_nsec, f_2sec, f_ro, f_perms, f_symlinks, f_devices,
        f_subvolume, f_xattrs, f_acl, f_selinux, f_fcaps, f_projid;
    kind_t kinds[MAX_KINDS];
    int nkinds;
    ftype_t ftypes[MAX_FTYPES];
    int nftypes;
} C;

/* ------------------------------------------------------------------ helpers */

static inline uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* FormatError(message), the message formatted like printf */
static PyObject *fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *msg = malloc((size_t)n + 1);
    if (!msg)
        return PyErr_NoMemory();
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    PyObject *s = PyUnicode_DecodeUTF8(msg, n, "surrogateescape");
    free(msg);
    if (s) {
        PyErr_SetObject(C.error, s);
        Py_DECREF(s);
    }
    return NULL;
}

/* the decoder's _fail: "<message> (record at offset <at>)" */
#define FAIL_AT(at, fmt, ...) fail(fmt " (record at offset %llu)", ##__VA_ARGS__, (unsigned long long)(at))

static const kind_t *kind_of(uint64_t t) {
    for (int i = 0; i < C.nkinds; i++)
        if (C.kinds[i].type == t)
            return &C.kinds[i];
    return NULL;
}

/* the decoder's _type_name: the RecordType name, or "unknown (0x...)" */
static const char *type_name(uint64_t t, char *tmp, size_t n) {
    const kind_t *k = kind_of(t);
    if (k && k->name[0])
        return k->name;
    snprintf(tmp, n, "unknown (0x%016llx)", (unsigned long long)t);
    return tmp;
}

/* repr(os.fsdecode(b)) as a malloc'd UTF-8 string (NULL: error set) */
static char *fs_repr(const unsigned char *b, Py_ssize_t n) {
    PyObject *s = PyUnicode_DecodeFSDefaultAndSize((const char *)b, n);
    if (!s)
        return NULL;
    PyObject *r = PyObject_Repr(s);
    Py_DECREF(s);
    if (!r)
        return NULL;
    const char *u = PyUnicode_AsUTF8(r);
    char *out = u ? strdup(u) : NULL;
    Py_DECREF(r);
    if (u && !out)
        PyErr_NoMemory();
    return out;
}

static PyObject *fs_str(const unsigned char *b, Py_ssize_t n) {
    return PyUnicode_DecodeFSDefaultAndSize((const char *)b, n);
}

/* ------------------------------------------------------------------ predicates (pycatar.validate) */

static int id_ok(uint64_t v, uint64_t af) {
    if (af & C.f_uid16)
        return v < 0xFFFF;
    if (af & C.f_uid32)
        return v < 0xFFFFFFFFu && v != 0xFFFF;
    return v == 0;
}

static int mtime_ok(uint64_t t, uint64_t af, int strict) {
    if (t == C.u64max)
        return 0;
    if (af & C.f_nsec)
        return 1;
    if (af & C.f_usec)
        return t % (strict ? 1000000u : 1000u) == 0;
    if (af & C.f_sec)
        return t % 1000000000u == 0;
    if (af & C.f_2sec)
        return t % 2000000000u == 0;
    return t == 0;
}

static int device_ok(uint64_t major, uint64_t minor) { return major < (1u << 12) && minor < (1u << 20); }

static int cstr_ok(const unsigned char *b, Py_ssize_t n, uint64_t maximum) {
    return n >= 2 && (uint64_t)n <= maximum && b[n - 1] == 0 && !memchr(b, 0, (size_t)n - 1);
}

static int name_first(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int name_rest(unsigned char c) { return name_first(c) || (c >= '0' && c <= '9') || c == '-'; }

static int user_name_ok(const unsigned char *b, Py_ssize_t n, int strict) {
    if (n < 2 || n > 256 || b[n - 1] != 0)
        return 0;
    if (!name_first(b[0]) && (strict || !(b[0] >= '0' && b[0] <= '9')))
        return 0;
    for (Py_ssize_t i = 1; i < n - 1; i++)
        if (!name_rest(b[i]))
            return 0;
    if ((n == 5 && !memcmp(b, "root", 5)) || (n == 2 && b[0] == '0'))
        return 0;
    return 1;
}

static int xattr_name_ok(const unsigned char *b, Py_ssize_t n) {
    const unsigned char *dot = memchr(b, '.', (size_t)n);
    Py_ssize_t d = dot ? dot - b : -1;
    return 0 < d && d < n - 1 && n <= 255;
}

/* ------------------------------------------------------------------ buffers */

typedef struct {
    Py_buffer view;
    const unsigned char *p; /* the byte at bpos */
    Py_ssize_t avail;       /* bytes from bpos to the end of the buffer */
} span_t;

static int span_open(span_t *s, PyObject *buf, Py_ssize_t bpos) {
    if (PyObject_GetBuffer(buf, &s->view, PyBUF_SIMPLE) < 0)
        return -1;
    if (bpos < 0 || bpos > s->view.len) {
        PyBuffer_Release(&s->view);
        PyErr_SetString(PyExc_ValueError, "position outside the buffer");
        return -1;
    }
    s->p = (const unsigned char *)s->view.buf + bpos;
    s->avail = s->view.len - bpos;
    return 0;
}

static uint64_t arg_u64(PyObject *o, int *err) {
    uint64_t v = PyLong_AsUnsignedLongLong(o);
    if (v == (uint64_t)-1 && PyErr_Occurred())
        *err = 1;
    return v;
}

/* an optional offset: -1 or None mean none (returned as UINT64_MAX) */
static uint64_t arg_opt(PyObject *o, int *err) {
    if (o == Py_None)
        return UINT64_MAX;
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) {
        *err = 1;
        return 0;
    }
    return v < 0 ? UINT64_MAX : (uint64_t)v;
}

/* ------------------------------------------------------------------ ENTRY and its records */

static PyObject *check_mode(uint64_t m, uint64_t eflags, uint64_t af, uint64_t off) {
    const char *why = NULL;
    uint64_t t = m & S_IFMT, perms = m & 07777;
    const ftype_t *ft = NULL;
    for (int i = 0; i < C.nftypes; i++)
        if (C.ftypes[i].ifmt == t)
            ft = &C.ftypes[i];
    if (m & ~(uint64_t)0177777)
        why = "unknown bits";
    else if (!ft)
        why = "unknown file type";
    else if (ft->need && !(af & ft->need))
        why = "file type not enabled by the feature flags";
    else if (t != S_IFDIR && eflags & C.f_subvolume)
        why = "subvolume flag on a non-directory";
    else if (t == S_IFLNK) {
        if (perms != 0777)
            why = "symlinks have mode 0777";
    } else if (!(af & (C.f_perms | C.f_acl))) {
        int isdir = t == S_IFDIR;
        if (perms != (isdir ? 0777u : 0666u) && !(af & C.f_ro && perms == (isdir ? 0555u : 0444u)))
            why = "permission bits not representable with the feature flags";
    }
    if (why)
        return fail("ENTRY at offset %llu has invalid mode 0o%llo: %s", (unsigned long long)off,
                    (unsigned long long)m, why);
    return Py_None;
}

typedef struct {
    PyObject *user, *group, *xattrs, *acl[4], *acl_group_obj, *acl_default, *selinux, *fcaps, *projid;
    uint64_t major, minor;
    int have_device;
} meta_t;

static void meta_clear(meta_t *m) {
    Py_CLEAR(m->user);
    Py_CLEAR(m->group);
    Py_CLEAR(m->xattrs);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(m->acl[i]);
    Py_CLEAR(m->acl_group_obj);
    Py_CLEAR(m->acl_default);
    Py_CLEAR(m->selinux);
    Py_CLEAR(m->fcaps);
    Py_CLEAR(m->projid);
}

static PyObject *list_or_empty(PyObject *l) {
    if (l) {
        Py_INCREF(l);
        return l;
    }
    return PyList_New(0);
}

static PyObject *opt(PyObject *o) {
    if (!o)
        o = Py_None;
    Py_INCREF(o);
    return o;
}

/* ordering key of a named ACL entry: (id, has name, name, permissions) */
typedef struct {
    int set;
    uint64_t id, perms;
    int has_name;
    const unsigned char *name;
    Py_ssize_t name_len;
} acl_key_t;

static int acl_key_cmp(const acl_key_t *a, const acl_key_t *b) {
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    if (a->has_name != b->has_name)
        return a->has_name < b->has_name ? -1 : 1;
    Py_ssize_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, (size_t)n) : 0;
    if (c)
        return c;
    if (a->name_len != b->name_len)
        return a->name_len < b->name_len ? -1 : 1;
    if (a->perms != b->perms)
        return a->perms < b->perms ? -1 : 1;
    return 0;
}

#define TNAME(t) type_name((t), tn, sizeof tn)
#define fail_rc(...) (fail(__VA_ARGS__), -1)
#define FAIL_AT_RC(...) (FAIL_AT(__VA_ARGS__), -1)

/* ------------------------------------------------------------------ Entry objects */

/* pycatar.entry.Entry's fields, in the order make_entry takes their values; configure() checks them
 * against the class (Entry.__slots__), so the two cannot drift apart */
static const char *const entry_fields[] = {
    "path", "mode", "feature_flags", "flags", "uid", "gid", "mtime", "user", "group", "xattrs", "acl_user",
    "acl_group", "acl_group_obj", "acl_default", "acl_default_user", "acl_default_group", "selinux", "fcaps",
    "quota_projid", "size", "target", "rdev_major", "rdev_minor", "offset", "payload_offset"};
#define NFIELDS ((int)(sizeof entry_fields / sizeof entry_fields[0]))
static PyTypeObject *entry_type;
static Py_ssize_t entry_slot[NFIELDS];

/* An Entry with these field values (references stolen; NULL values: an error is set).  Entry is a
 * slotted class whose __init__ only stores its arguments: its slots are filled directly. */
static PyObject *make_entry(PyObject *values[NFIELDS]) {
    PyObject *e = NULL;
    int i;
    for (i = 0; i < NFIELDS; i++)
        if (!values[i])
            goto out;
    e = entry_type->tp_alloc(entry_type, 0);
    if (!e)
        goto out;
    for (i = 0; i < NFIELDS; i++) {
        *(PyObject **)((char *)e + entry_slot[i]) = values[i];
        values[i] = NULL;
    }
out:
    for (i = 0; i < NFIELDS; i++)
        Py_XDECREF(values[i]);
    return e;
}

typedef struct {
    PyObject *entry;     /* the Entry (new reference) */
    Py_ssize_t consumed; /* its records' bytes */
    uint64_t need;       /* bytes needed (status 0) */
    uint64_t mode;       /* the ENTRY's mode (status 1) */
    int stop;            /* a directory or a regular file with payload: iteration must stop after it */
    uint64_t psize;      /* the payload's size (after the PAYLOAD header, which ``consumed`` includes) */
} parsed_t;

/* An Entry's path: ``path`` (borrowed) when given, else made only when the Entry is: ``prefix`` (a str,
 * "" or a directory's path and "/") and the name's bytes, decoded like os.fsdecode. */
typedef struct {
    PyObject *path, *prefix;
    const unsigned char *name;
    Py_ssize_t name_len;
} path_t;

static PyObject *path_of(const path_t *pt) {
    if (pt->path)
        return Py_NewRef(pt->path);
    PyObject *comp = fs_str(pt->name, pt->name_len);
    if (!comp || !PyUnicode_GET_LENGTH(pt->prefix))
        return comp;
    PyObject *path = PyUnicode_Concat(pt->prefix, comp);
    Py_DECREF(comp);
    return path;
}

/* One entry's records at p (stream offset off0); ``pt``: the Entry's path.  Returns 1 (out->entry
 * and the rest set), 0 (out->need: the buffer is short), 2 (``have_af`` is 0: the caller checks the
 * ENTRY's feature flags first) or -1 (error set). */
static int parse_entry_span(const unsigned char *p, Py_ssize_t avail, uint64_t off0, int eof, uint64_t end,
                            uint64_t limit, int have_af, uint64_t af, PyObject *af_obj, int at_root, int strict,
                            int make, const path_t *pt, parsed_t *out) {
    char tn[64];
    const uint64_t hdr = C.hdr;
    if ((uint64_t)avail < hdr) {
        if (!eof)
            return (out->need = hdr, 0);
        return fail_rc("archive truncated at offset %llu: ENTRY record missing", (unsigned long long)off0);
    }
    uint64_t size = rd64(p + C.o_size), rtype = rd64(p + C.o_type);
    if (rtype != C.t_entry)
        return FAIL_AT_RC(off0, "expected ENTRY record, found %s", TNAME(rtype));
    if (size != C.entry_size)
        return FAIL_AT_RC(off0, "ENTRY record has size %llu, expected %llu", (unsigned long long)size,
                       (unsigned long long)C.entry_size);
    if ((uint64_t)avail < size) {
        if (!eof)
            return (out->need = size, 0);
        return fail_rc("archive truncated: ENTRY record at offset %llu needs %llu bytes, only %lld left",
                    (unsigned long long)off0, (unsigned long long)size, (long long)avail);
    }
    uint64_t ff = rd64(p + C.o_ff), mode = rd64(p + C.o_mode), eflags = rd64(p + C.o_flags),
             uid = rd64(p + C.o_uid), gid = rd64(p + C.o_gid), mtime = rd64(p + C.o_mtime);
    if (!have_af)
        return 2;
    if (ff != af)
        return fail_rc("ENTRY at offset %llu has feature flags 0x%llx, the archive's are 0x%llx", (unsigned long long)off0,
                    (unsigned long long)ff, (unsigned long long)af);
    if (!check_mode(mode, eflags, af, off0))
        return -1;
    if (eflags & ~(af & C.entry_flag_bits))
        return FAIL_AT_RC(off0, "ENTRY flags 0x%llx are not covered by the feature flags", (unsigned long long)eflags);
    if (!id_ok(uid, af))
        return fail_rc("record at offset %llu has invalid uid %llu", (unsigned long long)off0, (unsigned long long)uid);
    if (!id_ok(gid, af))
        return fail_rc("record at offset %llu has invalid gid %llu", (unsigned long long)off0, (unsigned long long)gid);
    if (!mtime_ok(mtime, af, strict))
        return fail_rc("ENTRY at offset %llu has an mtime (%llu) finer than the feature flags allow",
                    (unsigned long long)off0, (unsigned long long)mtime);

    uint64_t ftype = mode & S_IFMT;
    int is_reg = ftype == S_IFREG, is_dir = ftype == S_IFDIR, is_lnk = ftype == S_IFLNK,
        is_dev = ftype == S_IFBLK || ftype == S_IFCHR;
    int last_rank = 0, have_acl = 0, have_payload = 0, have_symlink = 0, have_dir_end = 0;
    meta_t m; /* field by field: a memset of the whole (a `rep stos`) cost a fifth of a simple entry's parse */
    m.user = m.group = m.xattrs = m.acl[0] = m.acl[1] = m.acl[2] = m.acl[3] = NULL;
    m.acl_group_obj = m.acl_default = m.selinux = m.fcaps = m.projid = NULL;
    m.major = m.minor = 0;
    m.have_device = 0;
    PyObject *target = NULL;
    int rc = -1;
    uint64_t psize = 0;
    const unsigned char *last_xattr = NULL;
    Py_ssize_t last_xattr_len = 0;
    acl_key_t last_acl[4]; /* of each list of named ACL entries, the last one (set: read one) */
    for (int i = 0; i < 4; i++)
        last_acl[i].set = 0;
    uint64_t xattr_names = 0, xattr_bytes = 0, acl_access = 0, acl_default = 0, default_mask = 0;
    Py_ssize_t cur = (Py_ssize_t)size; /* index of the next record (from p) */

    for (;;) {
        uint64_t at = off0 + (uint64_t)cur;
        if (end != UINT64_MAX && at == end)
            break;
        Py_ssize_t left = avail - cur;
        if ((uint64_t)left < hdr) {
            if (!eof) {
                out->need = (uint64_t)cur + hdr;
                rc = 0;
                goto out;
            }
            fail("archive truncated at offset %llu: entry at offset %llu is incomplete", (unsigned long long)at,
                 (unsigned long long)off0);
            goto out;
        }
        const unsigned char *r = p + cur;
        size = rd64(r + C.o_size);
        rtype = rd64(r + C.o_type);
        if (size < hdr || size == C.u64max) {
            FAIL_AT(at, "record header has invalid size %llu", (unsigned long long)size);
            goto out;
        }
        if (end != UINT64_MAX && rtype != C.t_payload && (at > end || size > end - at)) {
            FAIL_AT(at, "record overruns the extent given by its GOODBYE item");
            goto out;
        }
        if (rtype == C.t_filename || rtype == C.t_goodbye) {
            have_dir_end = 1;
            break;
        }
        if (rtype == C.t_entry) {
            FAIL_AT(at, "second ENTRY record inside one entry");
            goto out;
        }
        if (rtype == C.t_payload) {
            if (!is_reg) {
                FAIL_AT(at, "PAYLOAD record for a file that is not a regular file");
                goto out;
            }
            cur += (Py_ssize_t)hdr;
            psize = size - hdr;
            uint64_t po = off0 + (uint64_t)cur;
            if (limit != UINT64_MAX && (po > limit || psize > limit - po)) {
                fail("archive truncated: payload at offset %llu needs %llu bytes, only %lld left",
                     (unsigned long long)po, (unsigned long long)psize, (long long)(limit - po));
                goto out;
            }
            have_payload = 1;
            break;
        }
        const kind_t *k = kind_of(rtype);
        if (!k || !k->limit) {
            FAIL_AT(at, "unknown record type 0x%016llx", (unsigned long long)rtype);
            goto out;
        }
        if (k->fixed && size != k->limit) {
            FAIL_AT(at, "%s record has size %llu, expected %llu", k->name, (unsigned long long)size,
                    (unsigned long long)k->limit);
            goto out;
        }
        if (size > k->limit) {
            FAIL_AT(at, "%s record of size %llu exceeds the limit %llu", k->name, (unsigned long long)size,
                    (unsigned long long)k->limit);
            goto out;
        }
        if (rtype == C.t_symlink || rtype == C.t_device) {
            if (!(rtype == C.t_symlink ? is_lnk : is_dev)) {
                FAIL_AT(at, "%s record for a file of another type", k->name);
                goto out;
            }
        } else {
            if (k->rank < last_rank || (k->rank == last_rank && !k->repeatable)) {
                FAIL_AT(at, "%s record out of order or repeated", k->name);
                goto out;
            }
            last_rank = k->rank;
        }
        if ((uint64_t)left < size) {
            if (!eof) {
                out->need = (uint64_t)cur + size;
                rc = 0;
                goto out;
            }
            fail("archive truncated: %s record at offset %llu needs %llu bytes, only %lld left", k->name,
                 (unsigned long long)at, (unsigned long long)size, (long long)left);
            goto out;
        }
        cur += (Py_ssize_t)size;
        const unsigned char *body = r + hdr;
        Py_ssize_t blen = (Py_ssize_t)(size - hdr);

        if (rtype == C.t_user || rtype == C.t_group) {
            if (!(af & C.f_names)) {
                FAIL_AT(at, "%s record without the user-names feature", k->name);
                goto out;
            }
            if (!user_name_ok(body, blen, strict)) {
                FAIL_AT(at, "%s record holds an invalid name", k->name);
                goto out;
            }
            PyObject *s = fs_str(body, blen - 1);
            if (!s)
                goto out;
            if (rtype == C.t_user)
                m.user = s;
            else
                m.group = s;
        } else if (rtype == C.t_xattr) {
            if (!(af & C.f_xattrs)) {
                FAIL_AT(at, "XATTR record without the xattrs feature");
                goto out;
            }
            if (size < hdr + 4) {
                FAIL_AT(at, "XATTR record has invalid size %llu", (unsigned long long)size);
                goto out;
            }
            const unsigned char *nul = memchr(body, 0, (size_t)(blen < 256 ? blen : 256));
            if (!nul) {
                FAIL_AT(at, "XATTR name is not NUL-terminated within 256 bytes");
                goto out;
            }
            Py_ssize_t nlen = nul - body;
            if (!xattr_name_ok(body, nlen)) {
                char *rep = fs_repr(body, nlen);
                if (rep) {
                    FAIL_AT(at, "XATTR name %s is invalid", rep);
                    free(rep);
                }
                goto out;
            }
            if (last_xattr) {
                Py_ssize_t n = nlen < last_xattr_len ? nlen : last_xattr_len;
                int c = n ? memcmp(body, last_xattr, (size_t)n) : 0;
                if (c < 0 || (c == 0 && nlen <= last_xattr_len)) {
                    FAIL_AT(at, "XATTR records are not strictly ordered by name");
                    goto out;
                }
            }
            last_xattr = body;
            last_xattr_len = nlen;
            xattr_names += (uint64_t)nlen + 1;
            xattr_bytes += size - hdr;
            if (xattr_names > C.xattr_names_max || xattr_bytes > C.xattr_bytes_max) {
                FAIL_AT(at,
                        "the entry's xattrs exceed the limits of %llu bytes of names and %llu bytes in all "
                        "(CATAR-31)",
                        (unsigned long long)C.xattr_names_max, (unsigned long long)C.xattr_bytes_max);
                goto out;
            }
            if (!m.xattrs && !(m.xattrs = PyList_New(0)))
                goto out;
            PyObject *pair = Py_BuildValue("(y#y#)", (const char *)body, nlen, (const char *)nul + 1,
                                           blen - nlen - 1);
            if (!pair || PyList_Append(m.xattrs, pair) < 0) {
                Py_XDECREF(pair);
                goto out;
            }
            Py_DECREF(pair);
        } else if (rtype == C.t_acl_user || rtype == C.t_acl_group || rtype == C.t_acl_default_user ||
                   rtype == C.t_acl_default_group) {
            int li = rtype == C.t_acl_user ? 0 : rtype == C.t_acl_group ? 1 : rtype == C.t_acl_default_user ? 2 : 3;
            if (!(af & C.f_acl)) {
                FAIL_AT(at, "%s record without the acl feature", k->name);
                goto out;
            }
            if (size < C.acl_fixed) {
                FAIL_AT(at, "%s record has invalid size %llu", k->name, (unsigned long long)size);
                goto out;
            }
            uint64_t ident = rd64(r + C.o_acl_id), perms = rd64(r + C.o_acl_perms);
            acl_key_t key = {1, ident, perms, 0, (const unsigned char *)"", 0};
            if (size > C.acl_fixed) {
                const unsigned char *nb = r + C.acl_fixed;
                Py_ssize_t nl = (Py_ssize_t)(size - C.acl_fixed);
                if (!(af & C.f_names) || !user_name_ok(nb, nl, strict)) {
                    FAIL_AT(at, "%s record holds an invalid name", k->name);
                    goto out;
                }
                key.has_name = 1;
                key.name = nb;
                key.name_len = nl - 1;
            }
            if (!id_ok(ident, af)) {
                fail("record at offset %llu has invalid ACL id %llu", (unsigned long long)at, (unsigned long long)ident);
                goto out;
            }
            if (perms & ~(uint64_t)7) {
                FAIL_AT(at, "%s record has invalid permissions 0x%llx", k->name, (unsigned long long)perms);
                goto out;
            }
            if (li < 2)
                acl_access++;
            else
                acl_default++;
            if (acl_access > C.acl_named_max || acl_default > C.acl_named_max) {
                FAIL_AT(at, "the entry's ACL has more than %llu named entries (CATAR-31)",
                        (unsigned long long)C.acl_named_max);
                goto out;
            }
            if (last_acl[li].set && acl_key_cmp(&key, &last_acl[li]) <= 0) {
                FAIL_AT(at, "%s records are not strictly ordered", k->name);
                goto out;
            }
            last_acl[li] = key;
            PyObject *name = Py_None;
            Py_INCREF(name);
            if (key.has_name) {
                Py_DECREF(name);
                if (!(name = fs_str(key.name, key.name_len)))
                    goto out;
            }
            PyObject *ace = PyObject_CallFunction(C.acl_entry, "KKN", (unsigned long long)ident,
                                                  (unsigned long long)perms, name);
            if (!ace)
                goto out;
            if (!m.acl[li] && !(m.acl[li] = PyList_New(0))) {
                Py_DECREF(ace);
                goto out;
            }
            int rc = PyList_Append(m.acl[li], ace);
            Py_DECREF(ace);
            if (rc < 0)
                goto out;
            have_acl = 1;
        } else if (rtype == C.t_acl_group_obj) {
            if (!(af & C.f_acl)) {
                FAIL_AT(at, "ACL_GROUP_OBJ record without the acl feature");
                goto out;
            }
            uint64_t perms = rd64(r + C.o_gobj_perms);
            if (perms & ~(uint64_t)7) {
                FAIL_AT(at, "ACL_GROUP_OBJ record has invalid permissions");
                goto out;
            }
            Py_XSETREF(m.acl_group_obj, PyLong_FromUnsignedLongLong(perms));
            if (!m.acl_group_obj)
                goto out;
            have_acl = 1;
        } else if (rtype == C.t_acl_default) {
            if (!(af & C.f_acl)) {
                FAIL_AT(at, "ACL_DEFAULT record without the acl feature");
                goto out;
            }
            uint64_t u = rd64(r + C.o_def_u), g = rd64(r + C.o_def_g), o = rd64(r + C.o_def_o),
                     mk = rd64(r + C.o_def_m);
            if (u & ~(uint64_t)7 || g & ~(uint64_t)7 || o & ~(uint64_t)7 || (mk != C.acl_unset && mk & ~(uint64_t)7)) {
                FAIL_AT(at, "ACL_DEFAULT record has invalid permissions");
                goto out;
            }
            default_mask = mk;
            Py_XSETREF(m.acl_default, PyObject_CallFunction(C.acl_default, "KKKK", (unsigned long long)u,
                                                            (unsigned long long)g, (unsigned long long)o,
                                                            (unsigned long long)mk));
            if (!m.acl_default)
                goto out;
            have_acl = 1;
        } else if (rtype == C.t_selinux) {
            if (!(af & C.f_selinux)) {
                FAIL_AT(at, "SELINUX record without the selinux feature");
                goto out;
            }
            if (!cstr_ok(body, blen, C.selinux_max - hdr)) {
                FAIL_AT(at, "SELINUX label is empty or not a NUL-terminated string");
                goto out;
            }
            if (!(m.selinux = fs_str(body, blen - 1)))
                goto out;
        } else if (rtype == C.t_fcaps) {
            if (!(af & C.f_fcaps)) {
                FAIL_AT(at, "FCAPS record without the fcaps feature");
                goto out;
            }
            if (!(m.fcaps = PyBytes_FromStringAndSize((const char *)body, blen)))
                goto out;
        } else if (rtype == C.t_quota_projid) {
            if (!(af & C.f_projid)) {
                FAIL_AT(at, "QUOTA_PROJID record without the quota-projid feature");
                goto out;
            }
            uint64_t projid = rd64(r + C.o_projid);
            if (projid == 0 || projid > 0xFFFFFFFFu) {
                FAIL_AT(at, "QUOTA_PROJID record has invalid project id %llu", (unsigned long long)projid);
                goto out;
            }
            if (!(m.projid = PyLong_FromUnsignedLongLong(projid)))
                goto out;
        } else if (rtype == C.t_symlink) {
            if (!(af & C.f_symlinks)) {
                FAIL_AT(at, "SYMLINK record without the symlinks feature");
                goto out;
            }
            if (!cstr_ok(body, blen, C.symlink_max - hdr)) {
                FAIL_AT(at, "SYMLINK target is empty or not a NUL-terminated string");
                goto out;
            }
            if (!(target = fs_str(body, blen - 1)))
                goto out;
            have_symlink = 1;
            break;
        } else if (rtype == C.t_device) {
            if (!(af & C.f_devices)) {
                FAIL_AT(at, "DEVICE record without the device-nodes feature");
                goto out;
            }
            uint64_t major = rd64(r + C.o_major), minor = rd64(r + C.o_minor);
            if (!device_ok(major, minor)) {
                FAIL_AT(at, "DEVICE record has invalid numbers %llu:%llu", (unsigned long long)major,
                        (unsigned long long)minor);
                goto out;
            }
            m.major = major;
            m.minor = minor;
            m.have_device = 1;
            break;
        } else {
            PyErr_SetString(PyExc_SystemError, "_catar: a record type without a parser");
            goto out;
        }
    }

    /* completeness (CATAR-12, CATAR-13) */
    if (af & C.f_names && !(af & (C.f_uid16 | C.f_uid32)) && (!m.user || !m.group) && strict) {
        FAIL_AT(off0, "entry lacks USER/GROUP records although names are the only owner information");
        goto out;
    }
    if (is_reg && !have_payload) {
        FAIL_AT(off0, "regular file without PAYLOAD record");
        goto out;
    }
    if (is_dir && !have_dir_end) {
        FAIL_AT(off0, "directory without FILENAME or GOODBYE record");
        goto out;
    }
    if (is_lnk && !have_symlink) {
        FAIL_AT(off0, "symlink without SYMLINK record");
        goto out;
    }
    if (is_dev && !m.have_device) {
        FAIL_AT(off0, "device node without DEVICE record");
        goto out;
    }
    if (eflags && !(is_reg || is_dir)) {
        FAIL_AT(off0, "ENTRY flags set for a file that is neither regular file nor directory");
        goto out;
    }
    if (at_root && !is_dir) {
        FAIL_AT(off0, "the top-level entry is not a directory");
        goto out;
    }
    if (last_rank) { /* metadata records were read: CATAR-13 */
        const char *why = NULL;
        int named_default = m.acl[2] || m.acl[3];
        if (m.fcaps && !is_reg)
            why = "FCAPS record for a file that is not a regular file";
        else if (m.projid && !(is_reg || is_dir))
            why = "QUOTA_PROJID record for a file that is neither regular file nor directory";
        else if (is_lnk && (m.xattrs || have_acl))
            why = "xattrs or ACLs on a symlink";
        else if ((m.acl[0] || m.acl[1]) && !m.acl_group_obj)
            why = "named ACL entries without ACL_GROUP_OBJ record";
        else if (named_default && (!m.acl_default || default_mask == C.acl_unset))
            why = "named default ACL entries without a default ACL mask";
        else if ((named_default || m.acl_default) && !is_dir)
            why = "default ACL on a file that is not a directory";
        if (why) {
            FAIL_AT(off0, "%s", why);
            goto out;
        }
    }

    out->stop = is_dir || (have_payload && psize);
    out->mode = mode;
    out->psize = psize;
    if (!make && !out->stop)
        out->entry = Py_NewRef(Py_None); /* checked, not wanted */
    else {
        PyObject *values[NFIELDS] = {
            path_of(pt), PyLong_FromUnsignedLongLong(mode), Py_NewRef(af_obj),
            PyLong_FromUnsignedLongLong(eflags), PyLong_FromUnsignedLongLong(uid), PyLong_FromUnsignedLongLong(gid),
            PyLong_FromUnsignedLongLong(mtime), opt(m.user), opt(m.group), list_or_empty(m.xattrs),
            list_or_empty(m.acl[0]), list_or_empty(m.acl[1]), opt(m.acl_group_obj), opt(m.acl_default),
            list_or_empty(m.acl[2]), list_or_empty(m.acl[3]), opt(m.selinux), opt(m.fcaps), opt(m.projid),
            PyLong_FromUnsignedLongLong(psize), opt(target), PyLong_FromUnsignedLongLong(m.major),
            PyLong_FromUnsignedLongLong(m.minor), PyLong_FromUnsignedLongLong(off0),
            have_payload ? PyLong_FromUnsignedLongLong(off0 + (uint64_t)cur) : opt(NULL)};
        out->entry = make_entry(values);
    }
    if (!out->entry)
        goto out;
    out->consumed = cur;
    rc = 1;
out:
    meta_clear(&m);
    Py_XDECREF(target);
    return rc;
}

static PyObject *py_parse_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "parse_entry() takes 10 arguments");
        return NULL;
    }
    if (!C.ready) {
        PyErr_SetString(PyExc_RuntimeError, "_catar is not configured");
        return NULL;
    }
    Py_ssize_t bpos = PyLong_AsSsize_t(args[1]);
    if (bpos == -1 && PyErr_Occurred())
        return NULL;
    int err = 0, have_af = args[6] != Py_None;
    uint64_t off = arg_u64(args[2], &err), end = arg_opt(args[4], &err), limit = arg_opt(args[5], &err);
    uint64_t af = have_af ? arg_u64(args[6], &err) : 0;
    int eof = PyObject_IsTrue(args[3]), at_root = PyObject_IsTrue(args[7]), strict = PyObject_IsTrue(args[8]);
    if (err || eof < 0 || at_root < 0 || strict < 0)
        return NULL;
    span_t s;
    if (span_open(&s, args[0], bpos) < 0)
        return NULL;
    parsed_t pe;
    PyObject *r = NULL;
    path_t pt = {args[9], NULL, NULL, 0};
    int rc = parse_entry_span(s.p, s.avail, off, eof, end, limit, have_af, af, args[6], at_root, strict, 1, &pt, &pe);
    if (rc == 1)
        r = Py_BuildValue("(Nn)", pe.entry, pe.consumed);
    else if (rc == 0)
        r = PyLong_FromUnsignedLongLong(pe.need);
    else if (rc == 2) {
        r = Py_None;
        Py_INCREF(r);
    }
    PyBuffer_Release(&s.view);
    return r;
}

/* ------------------------------------------------------------------ FILENAME */

/* A FILENAME record at p (stream offset off): 1 and the name (*name, *n; record size *size), 0 with
 * *need set (the buffer is short), or -1 (error set). */
static int filename_at(const unsigned char *p, Py_ssize_t avail, uint64_t off, int eof, uint64_t end,
                       const unsigned char **name, Py_ssize_t *n, uint64_t *size_out, uint64_t *need) {
    char tn[64];
    unsigned long long o = (unsigned long long)off;
    if ((uint64_t)avail < C.hdr) {
        if (!eof) {
            *need = C.hdr;
            return 0;
        }
        fail("archive truncated at offset %llu: FILENAME header missing", o);
        return -1;
    }
    uint64_t size = rd64(p + C.o_size), rtype = rd64(p + C.o_type);
    if (rtype != C.t_filename) {
        fail("expected FILENAME record at offset %llu, found %s", o, TNAME(rtype));
        return -1;
    }
    if (size < C.hdr + 2 || size > C.filename_max) {
        fail("FILENAME record at offset %llu has invalid size %llu", o, (unsigned long long)size);
        return -1;
    }
    if (end != UINT64_MAX && (off > end || size > end - off)) {
        fail("FILENAME record at offset %llu overruns its GOODBYE item", o);
        return -1;
    }
    if ((uint64_t)avail < size) {
        if (!eof) {
            *need = size;
            return 0;
        }
        fail("archive truncated: FILENAME record at offset %llu needs %llu bytes, only %lld left", o,
             (unsigned long long)size, (long long)avail);
        return -1;
    }
    if (p[size - 1] != 0) {
        fail("FILENAME at offset %llu is not NUL-terminated", o);
        return -1;
    }
    const unsigned char *nm = p + C.hdr;
    Py_ssize_t nl = (Py_ssize_t)(size - C.hdr - 1);
    if (memchr(nm, 0, (size_t)nl) || memchr(nm, '/', (size_t)nl) || (nl == 1 && nm[0] == '.') ||
        (nl == 2 && nm[0] == '.' && nm[1] == '.')) {
        char *rep = fs_repr(nm, nl);
        if (rep) {
            fail("FILENAME at offset %llu is not a single path component: %s", o, rep);
            free(rep);
        }
        return -1;
    }
    *name = nm;
    *n = nl;
    *size_out = size;
    return 1;
}

static PyObject *py_parse_filename(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "parse_filename() takes 5 arguments");
        return NULL;
    }
    Py_ssize_t bpos = PyLong_AsSsize_t(args[1]);
    if (bpos == -1 && PyErr_Occurred())
        return NULL;
    int err = 0;
    uint64_t off = arg_u64(args[2], &err), end = arg_opt(args[4], &err);
    int eof = PyObject_IsTrue(args[3]);
    if (err || eof < 0)
        return NULL;
    span_t s;
    if (span_open(&s, args[0], bpos) < 0)
        return NULL;
    const unsigned char *name;
    Py_ssize_t n;
    uint64_t size, need;
    PyObject *r = NULL;
    int rc = filename_at(s.p, s.avail, off, eof, end, &name, &n, &size, &need);
    if (rc > 0)
        r = PyBytes_FromStringAndSize((const char *)name, n);
    else if (rc == 0)
        r = PyLong_FromUnsignedLongLong(need);
    PyBuffer_Release(&s.view);
    return r;
}

/* ------------------------------------------------------------------ SipHash-2-4 (the goodbye hash) */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                             \
    do {                                                                                                     \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                            \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                               \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                               \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                            \
    } while (0)

static uint64_t siphash24(const unsigned char *in, size_t n, const unsigned char key[16]) {
    uint64_t k0 = rd64(key), k1 = rd64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL, v2 = k0 ^ 0x6c7967656e657261ULL,
             v3 = k1 ^ 0x7465646279746573ULL;
    size_t full = n & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = rd64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < (n & 7); i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static unsigned char hash_key[16];

static PyObject *py_siphash24(PyObject *self, PyObject *args) {
    Py_buffer b, k;
    if (!PyArg_ParseTuple(args, "y*y*", &b, &k))
        return NULL;
    PyObject *r = NULL;
    if (k.len != 16)
        PyErr_SetString(PyExc_ValueError, "siphash24(): the key must have 16 bytes");
    else
        r = PyLong_FromUnsignedLongLong(siphash24(b.buf, (size_t)b.len, k.buf));
    PyBuffer_Release(&b);
    PyBuffer_Release(&k);
    return r;
}

/* ------------------------------------------------------------------ casync's list text (pycatar.listing's)
 *
 * The line ``casync list`` prints for an entry is its mode as ``ls -l`` shows it and its path, escaped as
 * in mtree files.  pycatar.listing formats every line with these functions (list_line, ls_format_mode,
 * mtree_escape); parse_children makes the lines of a batch with them (make == MAKE_LINES). */

/* casync's ls_format_mode: 10 characters into out; 0 for a mode of no known file type */
static int mode_text(uint64_t m, char *out) {
    char t;
    switch (m & S_IFMT) {
    case S_IFSOCK: t = 's'; break;
    case S_IFDIR: t = 'd'; break;
    case S_IFREG: t = '-'; break;
    case S_IFBLK: t = 'b'; break;
    case S_IFCHR: t = 'c'; break;
    case S_IFLNK: t = 'l'; break;
    case S_IFIFO: t = 'p'; break;
    default: return 0;
    }
    out[0] = t;
    out[1] = m & 0400 ? 'r' : '-';
    out[2] = m & 0200 ? 'w' : '-';
    out[3] = m & 04000 ? (m & 0100 ? 's' : 'S') : (m & 0100 ? 'x' : '-');
    out[4] = m & 040 ? 'r' : '-';
    out[5] = m & 020 ? 'w' : '-';
    out[6] = m & 02000 ? (m & 010 ? 's' : 'S') : (m & 010 ? 'x' : '-');
    out[7] = m & 04 ? 'r' : '-';
    out[8] = m & 02 ? 'w' : '-';
    out[9] = t == 'd' && m & 01000 ? (m & 01 ? 't' : 'T') : (m & 01 ? 'x' : '-'); /* sticky: directories only */
    return 1;
}

/* casync's mtree escaping of n bytes into out (room for 4 n): bytes up to the space, from 127 on, the
 * backslash and '#' become \ooo.  Returns the length written. */
static Py_ssize_t escape_into(const unsigned char *b, Py_ssize_t n, char *out) {
    char *o = out;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if (c <= 0x20 || c >= 0x7F || c == '\\' || c == '#') {
            o[0] = '\\';
            o[1] = (char)('0' + (c >> 6));
            o[2] = (char)('0' + ((c >> 3) & 7));
            o[3] = (char)('0' + (c & 7));
            o += 4;
        } else
            *o++ = (char)c;
    }
    return o - out;
}

/* a growing text buffer (ASCII) */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
} text_t;

static int text_room(text_t *t, Py_ssize_t n) {
    if (t->len + n <= t->cap)
        return 0;
    Py_ssize_t cap = t->cap ? 2 * t->cap : 1 << 16;
    if (cap < t->len + n)
        cap = t->len + n;
    char *p = realloc(t->p, (size_t)cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    t->p = p;
    t->cap = cap;
    return 0;
}

static PyObject *text_str(const char *p, Py_ssize_t n) { /* p: ASCII */
    PyObject *s = PyUnicode_New(n, 127);
    if (s)
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

/* the line of an entry: mode text, space, escaped prefix (already escaped), escaped name, newline; the
 * path "" (the root) is "." */
static int text_line(text_t *t, uint64_t mode, const char *prefix, Py_ssize_t prefix_len, const unsigned char *name,
                     Py_ssize_t name_len) {
    if (text_room(t, 12 + prefix_len + 4 * name_len) < 0)
        return -1;
    char *o = t->p + t->len;
    if (!mode_text(mode, o)) {
        PyErr_Format(PyExc_ValueError, "mode 0o%llo has no known file type", (unsigned long long)mode);
        return -1;
    }
    o[10] = ' ';
    o += 11;
    memcpy(o, prefix, (size_t)prefix_len);
    o += prefix_len;
    if (!prefix_len && !name_len)
        *o++ = '.';
    o += escape_into(name, name_len, o);
    *o++ = '\n';
    t->len = o - t->p;
    return 0;
}

/* the bytes of a str (os.fsencode) or of a bytes-like object, in *view (released by the caller) */
static int fs_bytes(PyObject *value, Py_buffer *view, PyObject **owner) {
    *owner = NULL;
    if (PyUnicode_Check(value)) {
        if (!(*owner = PyUnicode_EncodeFSDefault(value)))
            return -1;
        value = *owner;
    }
    if (PyObject_GetBuffer(value, view, PyBUF_SIMPLE) < 0) {
        Py_CLEAR(*owner);
        return -1;
    }
    return 0;
}

static int mode_arg(PyObject *o, uint64_t *mode) {
    uint64_t v;
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "a mode must be an int");
        return -1;
    }
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    *mode = v;
    return 0;
}

static PyObject *py_ls_format_mode(PyObject *self, PyObject *arg) {
    uint64_t mode;
    char out[10];
    if (mode_arg(arg, &mode) < 0)
        return NULL;
    if (!mode_text(mode, out))
        Py_RETURN_NONE;
    return text_str(out, 10);
}

static PyObject *py_mtree_escape(PyObject *self, PyObject *arg) {
    Py_buffer v;
    PyObject *owner, *r = NULL;
    if (fs_bytes(arg, &v, &owner) < 0)
        return NULL;
    char *out = PyMem_Malloc((size_t)v.len * 4 + 1);
    if (!out)
        PyErr_NoMemory();
    else {
        r = text_str(out, escape_into(v.buf, v.len, out));
        PyMem_Free(out);
    }
    PyBuffer_Release(&v);
    Py_XDECREF(owner);
    return r;
}

static PyObject *py_list_line(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t mode;
    Py_buffer v;
    PyObject *owner, *r = NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "list_line() takes 2 arguments");
        return NULL;
    }
    if (mode_arg(args[0], &mode) < 0 || fs_bytes(args[1], &v, &owner) < 0)
        return NULL;
    text_t t = {NULL, 0, 0};
    if (text_line(&t, mode, "", 0, v.buf, v.len) == 0)
        r = text_str(t.p, t.len);
    free(t.p);
    PyBuffer_Release(&v);
    Py_XDECREF(owner);
    return r;
}

/* ------------------------------------------------------------------ one child of a directory */

/* parse_children's ``make`` */
enum { MAKE_NONE = 0, MAKE_ENTRIES = 1, MAKE_LINES = 2 };

/* parse_children's payloads list: append the n-th child's payload, ``size`` bytes at ``at`` in ``buf``
 * (a read-only view), if ``take``, else None; the list (n None before the first payload) and the view
 * of ``buf`` are made when first needed.  Returns -1 with an exception set on failure. */
static int add_payload(PyObject **payloads, PyObject **view, PyObject *buf, Py_ssize_t n, int take,
                       Py_ssize_t at, uint64_t size) {
    PyObject *piece;
    if (!take)
        piece = Py_NewRef(Py_None);
    else {
        if (!*view && !(*view = PyMemoryView_FromObject(buf)))
            return -1;
        if (!(piece = PySequence_GetSlice(*view, at, at + (Py_ssize_t)size)))
            return -1;
    }
    if (!*payloads) {
        if (!(*payloads = PyList_New(n))) {
            Py_DECREF(piece);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            PyList_SET_ITEM(*payloads, i, Py_NewRef(Py_None));
    }
    int rc = PyList_Append(*payloads, piece);
    Py_DECREF(piece);
    return rc;
}

static PyObject *py_parse_children(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    char tn[64];
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "parse_children() takes 15 arguments");
        return NULL;
    }
    Py_ssize_t bpos = PyLong_AsSsize_t(args[1]), max_n = PyLong_AsSsize_t(args[12]),
               payload_max = PyLong_AsSsize_t(args[14]);
    long long depth = PyLong_AsLongLong(args[5]);
    if ((bpos == -1 || depth == -1 || max_n == -1 || payload_max == -1) && PyErr_Occurred())
        return NULL;
    int err = 0;
    uint64_t off = arg_u64(args[2], &err), dir_offset = arg_u64(args[6], &err), limit = arg_opt(args[8], &err),
             af = arg_u64(args[9], &err);
    int eof = PyObject_IsTrue(args[3]), strict = PyObject_IsTrue(args[10]);
    long make = PyLong_AsLong(args[13]);
    PyObject *last = args[4], *prefix = args[7], *hasher = args[11];
    if (err || eof < 0 || strict < 0 || (make == -1 && PyErr_Occurred()))
        return NULL;
    if ((last != Py_None && !PyBytes_Check(last)) || !PyUnicode_Check(prefix) || make < MAKE_NONE ||
        make > MAKE_LINES) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_children(): last_name must be bytes or None, prefix a str, make 0, 1 or 2");
        return NULL;
    }
    span_t s;
    if (span_open(&s, args[0], bpos) < 0)
        return NULL;
    text_t lines = {NULL, 0, 0};
    char *esc_prefix = NULL; /* the prefix as list lines show it */
    Py_ssize_t esc_prefix_len = 0;
    PyObject *r = NULL, *entries = PyList_New(0), *payloads = NULL, *view = NULL;
    uint64_t *starts = NULL, *hashes = NULL;
    Py_ssize_t n = 0, cap = 0, pos = 0;
    const unsigned char *last_name = last == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(last);
    Py_ssize_t last_len = last == Py_None ? 0 : PyBytes_GET_SIZE(last);
    uint64_t need = 0;
    int status = -1; /* of the step that ended the batch: 1 a stop, 0 need, 2 GOODBYE, -1 error */
    if (!entries)
        goto out;
    if (make == MAKE_LINES) {
        Py_buffer pv;
        PyObject *owner;
        if (fs_bytes(prefix, &pv, &owner) < 0)
            goto out;
        esc_prefix = malloc((size_t)pv.len * 4 + 1);
        if (esc_prefix)
            esc_prefix_len = escape_into(pv.buf, pv.len, esc_prefix);
        PyBuffer_Release(&pv);
        Py_DECREF(owner);
        if (!esc_prefix) {
            PyErr_NoMemory();
            goto out;
        }
    }
    for (;;) {
        const unsigned char *q = s.p + pos;
        Py_ssize_t avail = s.avail - pos;
        uint64_t at = off + (uint64_t)pos;
        unsigned long long o = (unsigned long long)at;
        if ((uint64_t)avail < C.hdr) {
            if (!eof) {
                need = C.hdr;
                status = 0;
            } else
                fail("archive truncated at offset %llu: directory at offset %llu has no GOODBYE record", o,
                     (unsigned long long)dir_offset);
            break;
        }
        uint64_t rtype = rd64(q + C.o_type);
        if (rtype == C.t_goodbye) {
            status = 2;
            break;
        }
        if (rtype != C.t_filename) {
            fail("unexpected %s record at offset %llu in the directory at offset %llu (expected FILENAME or GOODBYE)",
                 TNAME(rtype), o, (unsigned long long)dir_offset);
            break;
        }
        const unsigned char *name;
        Py_ssize_t nl;
        uint64_t fsize;
        int rc = filename_at(q, avail, at, eof, UINT64_MAX, &name, &nl, &fsize, &need);
        if (rc <= 0) {
            status = rc;
            break;
        }
        if (last_name) {
            Py_ssize_t k = nl < last_len ? nl : last_len;
            int c = k ? memcmp(name, last_name, (size_t)k) : 0;
            if (c < 0 || (c == 0 && nl <= last_len)) {
                char *rep = fs_repr(name, nl);
                if (rep) {
                    fail("file name %s at offset %llu is %s in its directory", rep, o,
                         c == 0 && nl == last_len ? "duplicate" : "out of order");
                    free(rep);
                }
                break;
            }
        }
        if ((uint64_t)depth > C.max_depth) {
            fail("archive nests deeper than %llu directories at offset %llu", (unsigned long long)C.max_depth, o);
            break;
        }
        uint64_t h;
        if (hasher == Py_None)
            h = siphash24(name, (size_t)nl, hash_key);
        else {
            PyObject *hv = PyObject_CallFunction(hasher, "y#", (const char *)name, nl);
            if (!hv)
                break;
            h = PyLong_AsUnsignedLongLong(hv);
            Py_DECREF(hv);
            if (PyErr_Occurred())
                break;
        }
        parsed_t pe;
        path_t pt = {NULL, prefix, name, nl};
        rc = parse_entry_span(q + fsize, avail - (Py_ssize_t)fsize, at + fsize, eof, UINT64_MAX, limit, 1, af, args[9],
                              0, strict, make == MAKE_ENTRIES, &pt, &pe);
        if (rc != 1) {
            if (rc == 0) {
                need = pe.need + fsize;
                status = 0;
            }
            break;
        }
        if (make == MAKE_LINES && text_line(&lines, pe.mode, esc_prefix, esc_prefix_len, name, nl) < 0) {
            Py_DECREF(pe.entry);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            uint64_t *s2 = realloc(starts, (size_t)cap * 8), *h2 = s2 ? realloc(hashes, (size_t)cap * 8) : NULL;
            if (s2)
                starts = s2;
            if (h2)
                hashes = h2;
            if (!s2 || !h2) {
                Py_DECREF(pe.entry);
                PyErr_NoMemory();
                break;
            }
        }
        Py_ssize_t body = pos + (Py_ssize_t)fsize + pe.consumed; /* where a payload starts in the span */
        int take = make == MAKE_ENTRIES && pe.stop && (pe.mode & S_IFMT) == S_IFREG &&
                   pe.psize <= (uint64_t)payload_max && pe.psize <= (uint64_t)(s.avail - body);
        rc = take || payloads ? add_payload(&payloads, &view, args[0], n, take, bpos + body, pe.psize) : 0;
        if (rc == 0 && pe.entry != Py_None && PyList_Append(entries, pe.entry) < 0) {
            rc = -1;
            if (payloads) /* keep the lists in step */
                PyList_SetSlice(payloads, n, n + 1, NULL);
        }
        Py_DECREF(pe.entry);
        if (rc < 0)
            break;
        starts[n] = at;
        hashes[n] = h;
        n++;
        last_name = name;
        last_len = nl;
        pos = body + (take ? (Py_ssize_t)pe.psize : 0);
        if ((pe.stop && !take) || n >= max_n) {
            status = 1;
            break;
        }
    }
    if (!n) { /* nothing parsed: what ended the batch is the answer */
        if (status == 0)
            r = PyLong_FromUnsignedLongLong(need);
        else if (status == 2) {
            r = Py_False;
            Py_INCREF(r);
        }
        goto out;
    }
    /* the entries parsed go out; an error after them comes again on the next call, at its record */
    if (status < 0)
        PyErr_Clear();
    {
        PyObject *ln = PyBytes_FromStringAndSize((const char *)last_name, last_len),
                 *sb = PyBytes_FromStringAndSize((const char *)starts, n * 8),
                 *hb = PyBytes_FromStringAndSize((const char *)hashes, n * 8),
                 *text = make == MAKE_LINES ? text_str(lines.p, lines.len) : Py_NewRef(Py_None);
        if (ln && sb && hb && text)
            r = Py_BuildValue("(OnOOOOO)", entries, pos, ln, sb, hb, text, payloads ? payloads : Py_None);
        Py_XDECREF(ln);
        Py_XDECREF(sb);
        Py_XDECREF(hb);
        Py_XDECREF(text);
    }
out:
    free(starts);
    free(hashes);
    free(lines.p);
    free(esc_prefix);
    Py_XDECREF(entries);
    Py_XDECREF(payloads);
    Py_XDECREF(view);
    PyBuffer_Release(&s.view);
    return r;
}

/* ------------------------------------------------------------------ GOODBYE */

/* a - b for u64 values, as Python prints the (maybe negative) difference */
static void diff_text(uint64_t a, uint64_t b, char *out, size_t n) {
    if (a >= b)
        snprintf(out, n, "%llu", (unsigned long long)(a - b));
    else
        snprintf(out, n, "-%llu", (unsigned long long)(b - a));
}

static int u64_array(PyObject *o, Py_buffer *v) {
    if (PyObject_GetBuffer(o, v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (v->itemsize != 8 || !v->format || strcmp(v->format, "Q")) {
        PyBuffer_Release(v);
        PyErr_SetString(PyExc_TypeError, "expected an array('Q')");
        return -1;
    }
    return 0;
}

/* bisect_left(a, x, 0, n) for n >= 1, without a branch to mispredict at each step (the items of a GOODBYE
 * table come in hash order: every search goes somewhere else) */
static Py_ssize_t lower_bound(const uint64_t *a, Py_ssize_t n, uint64_t x) {
    const uint64_t *base = a;
    while (n > 1) {
        Py_ssize_t half = n / 2;
        base = base[half] < x ? base + half : base;
        n -= half;
    }
    return (base - a) + (*base < x);
}

static PyObject *py_check_goodbye(PyObject *self, PyObject *args) {
    Py_buffer rec, sv, hv;
    unsigned long long start, dir_offset;
    PyObject *starts_obj, *hashes_obj;
    if (!PyArg_ParseTuple(args, "y*KKOO", &rec, &start, &dir_offset, &starts_obj, &hashes_obj))
        return NULL;
    if (u64_array(starts_obj, &sv) < 0) {
        PyBuffer_Release(&rec);
        return NULL;
    }
    if (u64_array(hashes_obj, &hv) < 0) {
        PyBuffer_Release(&rec);
        PyBuffer_Release(&sv);
        return NULL;
    }
    PyObject *r = NULL;
    const unsigned char *d = rec.buf;
    Py_ssize_t n = hv.len / 8;
    const uint64_t *starts = sv.buf, *hashes = hv.buf;
    uint64_t size = (uint64_t)rec.len;
    if (size < C.hdr + C.item || (size - C.hdr) % C.item || (uint64_t)n != (size - C.hdr) / C.item - 1 ||
        sv.len / 8 != (n ? n + 1 : 0)) {
        PyErr_SetString(PyExc_ValueError, "check_goodbye(): record, starts and hashes do not agree");
        goto out;
    }
    const unsigned char *tail = d + size - C.item;
    uint64_t entry_offset = rd64(tail + C.o_tail_entry), tail_size = rd64(tail + C.o_tail_size),
             marker = rd64(tail + C.o_tail_marker);
    if (marker != C.t_tail_marker) {
        fail("GOODBYE record at offset %llu lacks the tail marker", start);
        goto out;
    }
    if (tail_size != size) {
        fail("GOODBYE tail at offset %llu repeats size %llu, record has %llu", start, (unsigned long long)tail_size,
             (unsigned long long)size);
        goto out;
    }
    if (start < dir_offset || entry_offset != start - dir_offset) {
        char txt[32];
        diff_text(start, entry_offset, txt, sizeof txt);
        fail("GOODBYE tail at offset %llu points to offset %s, the directory starts at %llu", start, txt, dir_offset);
        goto out;
    }
    if (n) {
        /* an in-order walk of the implicit search tree visits the items sorted by hash */
        unsigned char *seen = calloc((size_t)n, 1);
        Py_ssize_t stack[130];
        int sp = 0, bad = 0;
        Py_ssize_t i = 0;
        uint64_t prev = 0;
        if (!seen) {
            PyErr_NoMemory();
            goto out;
        }
        for (;;) {
            while (i < n && sp < 130) {
                stack[sp++] = i;
                i = 2 * i + 1;
            }
            if (!sp)
                break;
            i = stack[--sp];
            const unsigned char *it = d + C.hdr + (uint64_t)i * C.item;
            uint64_t offset = rd64(it + C.o_item_offset), item_size = rd64(it + C.o_item_size),
                     h = rd64(it + C.o_item_hash);
            uint64_t child = start - offset;
            Py_ssize_t lo = lower_bound(starts, n, child);
            if (offset > start || h < prev || lo == n || starts[lo] != child || seen[lo] || hashes[lo] != h ||
                starts[lo + 1] - child != item_size) {
                bad = 1;
                break;
            }
            seen[lo] = 1;
            prev = h;
            i = 2 * i + 2;
        }
        free(seen);
        if (bad) {
            fail("GOODBYE table at offset %llu does not match the directory's entries", start);
            goto out;
        }
    }
    r = Py_None;
    Py_INCREF(r);
out:
    PyBuffer_Release(&rec);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&hv);
    return r;
}

/* ------------------------------------------------------------------ the predicates: pycatar.validate's rules
 * (the encoder checks entries with them before writing, CATAR-60; the parser uses them as they are) */

static int rules_ready(void) {
    if (!C.rules_ready)
        PyErr_SetString(PyExc_RuntimeError, "_catar: configure_rules() first");
    return C.rules_ready;
}

static int u64_of(PyObject *o, uint64_t *v) { /* 0: not a u64 */
    int overflow = 0;
    if (!PyLong_Check(o))
        return 0;
    long long s = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow < 0 || (!overflow && s < 0))
        return 0;
    if (!overflow) {
        *v = (uint64_t)s;
        return 1;
    }
    *v = PyLong_AsUnsignedLongLong(o);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static PyObject *py_id_ok(PyObject *self, PyObject *args) {
    PyObject *v;
    unsigned long long af;
    uint64_t x;
    if (!PyArg_ParseTuple(args, "OK", &v, &af) || !rules_ready())
        return NULL;
    return PyBool_FromLong(u64_of(v, &x) && id_ok(x, af));
}

static PyObject *py_mtime_ok(PyObject *self, PyObject *args) {
    PyObject *v;
    unsigned long long af;
    int strict = 0;
    uint64_t x;
    if (!PyArg_ParseTuple(args, "OK|p", &v, &af, &strict) || !rules_ready())
        return NULL;
    return PyBool_FromLong(u64_of(v, &x) && mtime_ok(x, af, strict));
}

static PyObject *py_device_ok(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    uint64_t x, y;
    if (!PyArg_ParseTuple(args, "OO", &a, &b))
        return NULL;
    return PyBool_FromLong(u64_of(a, &x) && u64_of(b, &y) && device_ok(x, y));
}

static PyObject *py_cstr_ok(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned long long maximum;
    if (!PyArg_ParseTuple(args, "y*K", &b, &maximum))
        return NULL;
    int ok = cstr_ok(b.buf, b.len, maximum);
    PyBuffer_Release(&b);
    return PyBool_FromLong(ok);
}

static PyObject *py_user_name_ok(PyObject *self, PyObject *args) {
    Py_buffer b;
    int strict = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &b, &strict))
        return NULL;
    int ok = user_name_ok(b.buf, b.len, strict);
    PyBuffer_Release(&b);
    return PyBool_FromLong(ok);
}

static PyObject *py_xattr_name_ok(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b))
        return NULL;
    int ok = xattr_name_ok(b.buf, b.len);
    PyBuffer_Release(&b);
    return PyBool_FromLong(ok);
}

/* ------------------------------------------------------------------ configuration */

static int get_u64(PyObject *d, const char *key, uint64_t *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "_catar.configure(): %s missing", key);
        return -1;
    }
    *out = PyLong_AsUnsignedLongLong(v);
    return PyErr_Occurred() ? -1 : 0;
}

static int get_off(PyObject *d, const char *key, Py_ssize_t *out) {
    uint64_t v;
    if (get_u64(d, key, &v) < 0)
        return -1;
    *out = (Py_ssize_t)v;
    return 0;
}

static int get_obj(PyObject *d, const char *key, PyObject **out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "_catar.configure(): %s missing", key);
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(*out, v);
    return 0;
}

#define U(key, field) (get_u64(d, key, &C.field) < 0)
#define O(key, field) (get_off(d, key, &C.field) < 0)

static PyObject *py_configure_rules(PyObject *self, PyObject *d) {
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "configure_rules() takes a dict");
        return NULL;
    }
    C.rules_ready = 0;
    if (U("u64_max", u64max) || U("WITH_16BIT_UIDS", f_uid16) || U("WITH_32BIT_UIDS", f_uid32) ||
        U("WITH_SEC_TIME", f_sec) || U("WITH_USEC_TIME", f_usec) || U("WITH_NSEC_TIME", f_nsec) ||
        U("WITH_2SEC_TIME", f_2sec))
        return NULL;
    C.rules_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *py_configure(PyObject *self, PyObject *d) {
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes a dict");
        return NULL;
    }
    C.ready = 0;
    if (get_obj(d, "error", &C.error) < 0 || get_obj(d, "acl_entry", &C.acl_entry) < 0 ||
        get_obj(d, "acl_default", &C.acl_default) < 0)
        return NULL;
    if (U("ENTRY", t_entry) || U("USER", t_user) || U("GROUP", t_group) || U("XATTR", t_xattr) ||
        U("ACL_USER", t_acl_user) || U("ACL_GROUP", t_acl_group) || U("ACL_GROUP_OBJ", t_acl_group_obj) ||
        U("ACL_DEFAULT", t_acl_default) || U("ACL_DEFAULT_USER", t_acl_default_user) ||
        U("ACL_DEFAULT_GROUP", t_acl_default_group) || U("FCAPS", t_fcaps) || U("QUOTA_PROJID", t_quota_projid) ||
        U("SELINUX", t_selinux) || U("SYMLINK", t_symlink) || U("DEVICE", t_device) || U("PAYLOAD", t_payload) ||
        U("FILENAME", t_filename) || U("GOODBYE", t_goodbye) || U("GOODBYE_TAIL_MARKER", t_tail_marker))
        return NULL;
    if (U("header_size", hdr) || U("entry_size", entry_size) || U("acl_fixed", acl_fixed) ||
        U("filename_max", filename_max) || U("selinux_max", selinux_max) || U("symlink_max", symlink_max) ||
        U("item_size", item) || U("xattr_names_max", xattr_names_max) || U("max_depth", max_depth) ||
        U("xattr_bytes_max", xattr_bytes_max) || U("acl_named_max", acl_named_max) || U("acl_unset", acl_unset) ||
        U("entry_flag_bits", entry_flag_bits))
        return NULL;
    if (O("Header.size", o_size) || O("Header.type", o_type) || O("Entry.feature_flags", o_ff) ||
        O("Entry.mode", o_mode) || O("Entry.flags", o_flags) || O("Entry.uid", o_uid) || O("Entry.gid", o_gid) ||
        O("Entry.mtime", o_mtime) || O("ACLUser.uid", o_acl_id) || O("ACLUser.permissions", o_acl_perms) ||
        O("ACLGroupObj.permissions", o_gobj_perms) || O("ACLDefault.user_obj_permissions", o_def_u) ||
        O("ACLDefault.group_obj_permissions", o_def_g) || O("ACLDefault.other_permissions", o_def_o) ||
        O("ACLDefault.mask_permissions", o_def_m) || O("QuotaProjID.projid", o_projid) ||
        O("Device.major", o_major) || O("Device.minor", o_minor) || O("GoodbyeItem.offset", o_item_offset) ||
        O("GoodbyeItem.size", o_item_size) || O("GoodbyeItem.hash", o_item_hash) ||
        O("GoodbyeTail.entry_offset", o_tail_entry) || O("GoodbyeTail.size", o_tail_size) ||
        O("GoodbyeTail.marker", o_tail_marker))
        return NULL;
    if (!C.rules_ready) {
        PyErr_SetString(PyExc_RuntimeError, "_catar.configure(): configure_rules() first");
        return NULL;
    }
    if (U("WITH_USER_NAMES", f_names) || U("WITH_READ_ONLY", f_ro) || U("WITH_PERMISSIONS", f_perms) ||
        U("WITH_SYMLINKS", f_symlinks) || U("WITH_DEVICE_NODES", f_devices) || U("WITH_SUBVOLUME", f_subvolume) ||
        U("WITH_XATTRS", f_xattrs) || U("WITH_ACL", f_acl) || U("WITH_SELINUX", f_selinux) ||
        U("WITH_FCAPS", f_fcaps) || U("WITH_QUOTA_PROJID", f_projid))
        return NULL;
    /* kinds: [(type, name, size limit, size fixed, rank, repeatable)]; limit 0: not an entry's record;
     * rank: the position in the order CATAR-11 prescribes (0: SYMLINK, DEVICE) */
    PyObject *kinds = PyDict_GetItemString(d, "kinds"), *ftypes = PyDict_GetItemString(d, "file_types");
    if (!kinds || !PyList_Check(kinds) || PyList_GET_SIZE(kinds) > MAX_KINDS || !ftypes || !PyList_Check(ftypes) ||
        PyList_GET_SIZE(ftypes) > MAX_FTYPES) {
        PyErr_SetString(PyExc_ValueError, "_catar.configure(): bad kinds or file_types");
        return NULL;
    }
    C.nkinds = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kinds); i++) {
        kind_t *k = &C.kinds[i];
        const char *name;
        unsigned long long type, limit;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(kinds, i), "KsKpip", &type, &name, &limit, &k->fixed, &k->rank,
                              &k->repeatable))
            return NULL;
        k->type = type;
        k->limit = limit;
        snprintf(k->name, sizeof k->name, "%s", name);
        C.nkinds = (int)i + 1;
    }
    Py_buffer key;
    PyObject *key_obj = PyDict_GetItemString(d, "hash_key");
    if (!key_obj || PyObject_GetBuffer(key_obj, &key, PyBUF_SIMPLE) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "_catar.configure(): hash_key missing");
        return NULL;
    }
    if (key.len != (Py_ssize_t)sizeof hash_key) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "_catar.configure(): the hash key must have 16 bytes");
        return NULL;
    }
    memcpy(hash_key, key.buf, sizeof hash_key);
    PyBuffer_Release(&key);
    PyObject *etype = PyDict_GetItemString(d, "entry"), *efields = PyDict_GetItemString(d, "entry_fields");
    if (!etype || !PyType_Check(etype) || !efields || !PyList_Check(efields) || PyList_GET_SIZE(efields) != NFIELDS) {
        PyErr_SetString(PyExc_ValueError, "_catar.configure(): entry and entry_fields must match make_entry's fields");
        return NULL;
    }
    for (int i = 0; i < NFIELDS; i++) {
        PyObject *f = PyList_GET_ITEM(efields, i);
        const char *fname = PyUnicode_Check(f) ? PyUnicode_AsUTF8(f) : NULL;
        if (!fname || strcmp(fname, entry_fields[i])) {
            PyErr_Format(PyExc_ValueError, "_catar.configure(): Entry field %d is %R, make_entry has %s", i, f,
                         entry_fields[i]);
            return NULL;
        }
        PyObject *descr = PyObject_GetAttr(etype, f);
        if (!descr)
            return NULL;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok)
            entry_slot[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "_catar.configure(): Entry.%s is not a slot", fname);
            return NULL;
        }
    }
    Py_INCREF(etype);
    Py_XSETREF(entry_type, (PyTypeObject *)etype);
    C.nftypes = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ftypes); i++) {
        unsigned long long ifmt, need;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(ftypes, i), "KK", &ifmt, &need))
            return NULL;
        C.ftypes[i].ifmt = ifmt;
        C.ftypes[i].need = need;
        C.nftypes = (int)i + 1;
    }
    if (PyErr_Occurred())
        return NULL;
    C.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure_rules", py_configure_rules, METH_O,
     "configure_rules(constants: dict): the bits and bounds the predicates need (pycatar.validate gives them)."},
    {"configure", py_configure, METH_O, "configure(constants: dict): the format's declarations (see the source)."},
    {"parse_entry", (PyCFunction)(void (*)(void))py_parse_entry, METH_FASTCALL,
     "parse_entry(buf, bpos, off, eof, end, limit, af, at_root, strict, path): one entry's records (see the source)."},
    {"parse_filename", (PyCFunction)(void (*)(void))py_parse_filename, METH_FASTCALL,
     "parse_filename(buf, bpos, off, eof, end) -> bytes | int: a FILENAME record (see the source)."},
    {"parse_children", (PyCFunction)(void (*)(void))py_parse_children, METH_FASTCALL,
     "parse_children(buf, bpos, off, eof, last_name, depth, dir_offset, prefix, limit, af, strict, hasher, "
     "max_n, make): the next children of a directory (see the source)."},
    {"ls_format_mode", py_ls_format_mode, METH_O,
     "ls_format_mode(mode) -> str | None: the mode as casync's list shows it (None: no known file type)."},
    {"mtree_escape", py_mtree_escape, METH_O,
     "mtree_escape(value: str | bytes) -> str: casync's escaping of names and paths (a str is os.fsencode'd)."},
    {"list_line", (PyCFunction)(void (*)(void))py_list_line, METH_FASTCALL,
     "list_line(mode, path: str) -> str: the line of casync list for an entry (the root's path, \"\", is \".\")."},
    {"siphash24", py_siphash24, METH_VARARGS, "siphash24(data, key) -> int: SipHash-2-4, read little-endian."},
    {"check_goodbye", py_check_goodbye, METH_VARARGS,
     "check_goodbye(record, start, dir_offset, starts, hashes): a GOODBYE record against the children seen."},
    {"id_ok", py_id_ok, METH_VARARGS, "id_ok(v, feature_flags): the parser's uid/gid rule."},
    {"mtime_ok", py_mtime_ok, METH_VARARGS, "mtime_ok(t, feature_flags, strict=False): the parser's mtime rule."},
    {"device_ok", py_device_ok, METH_VARARGS, "device_ok(major, minor): the parser's device number rule."},
    {"cstr_ok", py_cstr_ok, METH_VARARGS, "cstr_ok(body, maximum): the parser's C string rule."},
    {"user_name_ok", py_user_name_ok, METH_VARARGS, "user_name_ok(body, strict=False): the parser's name rule."},
    {"xattr_name_ok", py_xattr_name_ok, METH_VARARGS, "xattr_name_ok(name): the parser's xattr name rule."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._catar",
                                    "The catar decoder's record parsing and checks, in C (configured by pycatar.decoder).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__catar(void) { return PyModule_Create(&module); }
