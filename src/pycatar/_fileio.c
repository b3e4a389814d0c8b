/*
 * pycatar._fileio: file I/O done in C with the GIL released, for the places where Python's
 * per-call overhead and GIL hand-overs dominate: creating many small files (extraction) and reading
 * and writing chunk files (the store).
 *
 * read_file(path, limit) reads a whole file (not following a final symlink) in one call: the bytes,
 * None if it does not exist (ENOENT, ENOTDIR, or ELOOP: a symlink), or (step, errno) on failure --
 * step 0 open, 1 read (EISDIR/EINVAL: a directory or another file that is not a regular file; it is
 * opened with O_NONBLOCK, so a FIFO never blocks), 2 the file holds more than ``limit`` bytes (errno 0).
 * read_files(paths, limits) does it for each of a batch of paths, each with its limit, the GIL
 * released once.
 *
 * install_file(tmp, final, data, mode) writes a new file once and for all (the chunk store): creates
 * ``tmp`` exclusively with ``mode``, writes ``data``, closes it and renames it to ``final`` without
 * replacing it (renameat2 RENAME_NOREPLACE: one call; where the file system cannot, hard-links it to
 * ``final`` and removes ``tmp``).  Returns 1 if ``final`` now holds the data, 0 if ``final`` existed
 * already, or (step, errno) on failure -- step 0 create (nothing was created), 1 write or close
 * (``tmp`` removed), 2 link (``tmp`` left in place, complete, for the caller's fallback).
 * install_files(jobs, mode) does it for each (tmp, final, data) of a batch, the GIL released once
 * (a store write of small chunks would otherwise hand the GIL over twice a chunk).
 *
 * write_files(jobs) creates a batch of regular files, each under its temporary name, writes its
 * payload (leaving all-zero 4 KiB blocks as holes when asked), sets owner, mode and mtime, checks
 * the mtime stuck, and renames it into place -- all with the GIL released, so worker threads can
 * create files while the main thread decodes the archive.  The Python extractor decides which
 * files qualify (no xattrs, ACL entries, capabilities, labels or chattr flags to restore, a parent
 * directory it created itself) and what each job asks for; this module only performs the calls.
 *
 * A job is a 12-tuple whose fields the module lists, in order, as JOB_FIELDS (the one description:
 * pycatar.extract builds its FileJob named tuple from it):
 *   dir_fd, tmp (bytes), name (bytes), pieces (sequence of buffers), size, open_mode,
 *   uid, gid, mode, mtime_ns, granularity_ns, sparse
 * where uid/gid -1 means "leave the owner", mode -1 "leave the mode" and granularity_ns 0 "leave the
 * mtime" (mtime_ns is signed: negative before 1970).  The batch stops at the first failure; the
 * failed job's temporary file is removed.  A job with an empty ``tmp`` finishes a node made
 * already (a directory, once its children are in place): ``dir_fd`` is the node's own descriptor,
 * which gets owner, mode and mtime, the check, and is closed (also on failure); nothing is created,
 * written or renamed.
 *
 * Returns (jobs_done, hole_bytes, failed_index, step, errno); failed_index is -1 on success.  The
 * step is an index into STEPS, which says in words what failed ("create", "write", ...); at step
 * STEP_VERIFY with errno 0 the file system rounded the mtime.
 *
 * finish(fd, dir_fd, tmp, name, uid, gid, mode, mtime_ns, granularity_ns, first, last) runs the
 * steps STEP_INSPECT..STEP_CLOSE of a job (owner, mode, mtime, rename, mtime check, close: the one
 * description, finish_steps, which the batch's jobs run too) from ``first`` to ``last`` on any node:
 * pycatar.extract finishes every other node with it, a range at a time, with the steps only it
 * knows (ACLs, xattrs, capabilities, label, chattr) in between.  Returns None, or (step, errno).
 *
 * send_files(sock, files, item, offset) sends chunk files to a non-blocking socket as SERVE-5's batch
 * answer frames them: for each (fd, size) of ``files`` the size as 8 bytes little-endian (all ones
 * for an fd of -1: absent), then the file's first ``size`` bytes by sendfile (no copy through user
 * memory), until the socket would block.  (item, offset) is where the last call stopped (offset
 * counts the frame's 8 size bytes); returns (item, offset, errno): errno 0 when every frame is out,
 * EAGAIN when the socket is full (call again once it is writable), ENODATA when a file holds fewer
 * than ``size`` bytes (it shrank: the framing cannot be kept), or the send's error.  GIL released.
 *
 * make_dirs(paths, mode) makes a batch of directories (a chunk store's), the GIL released once: for
 * each path 0, or the errno of its mkdir (EEXIST: there already).
 *
 * fs_type(fd) is fstatfs()'s f_type of the file system ``fd`` lives on (the encoder asks for every
 * directory and file on another device than its parent's): one call, no libc loaded through ctypes.
 *
 * A regular file is made the same way everywhere: create(name, mode, dir_fd) creates it under its
 * temporary name (create_at: exclusively, never through a symlink), and the type Payload writes its
 * bytes (the payload writer: pwrite at increasing offsets, all-zero blocks left as holes when
 * asked, the hole rule of next_data_run) -- the very functions a batch job runs, for the files an
 * extraction writes itself (large ones, or with xattrs, ACLs, ...) and for blob outputs.
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/types.h>
#include <unistd.h>

#define HOLE_BLOCK 4096

/* the steps of creating a file, in the order they run */
enum { STEP_CREATE, STEP_WRITE, STEP_INSPECT, STEP_OWNER, STEP_MODE, STEP_MTIME, STEP_RENAME,
       STEP_VERIFY, STEP_CLOSE, NSTEPS };

/* what each step does, for error messages ("Failed to <step> 'path'"), in the enum's order */
static const char *const step_names[NSTEPS] = {
    "create", "write", "inspect", "set the owner of", "set the mode of", "set the modification time of",
    "move into place", "verify the modification time of", "write"};

static const char *const job_fields[] = {
    "dir_fd", "tmp", "name", "pieces", "size", "open_mode", "uid", "gid", "mode", "mtime_ns",
    "granularity_ns", "sparse"};
#define NFIELDS ((Py_ssize_t)(sizeof job_fields / sizeof job_fields[0]))

typedef struct {
    int dir_fd;
    const char *tmp;
    const char *name;
    Py_buffer *pieces;
    Py_ssize_t npieces;
    long long size;
    int open_mode;
    long long uid, gid, mode, mtime_ns, granularity_ns;
    int sparse;
} Job;

/* pwrite() all of it; *end tracks the end of what was written so far. */
static int write_at(int fd, const char *p, size_t n, off_t off, off_t *end) {
    if (n > 0 && off + (off_t)n > *end)
        *end = off + (off_t)n;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += k;
    }
    return 0;
}

static int is_zero(const char *p, size_t n) {
    static const char zeros[HOLE_BLOCK];
    while (n >= HOLE_BLOCK) {
        if (memcmp(p, zeros, HOLE_BLOCK) != 0)
            return 0;
        p += HOLE_BLOCK;
        n -= HOLE_BLOCK;
    }
    return n == 0 || memcmp(p, zeros, n) == 0;
}

/*
 * The hole rule, written here once (the payload writer below follows it):
 * ``p[0:n]`` starts on a HOLE_BLOCK boundary of the file; every block of it (the last one may be
 * shorter: the end of the file) that holds only zeros becomes a hole, the rest is data.
 * next_data_run() finds the next run of data blocks at or after *pos: it returns 0 when there is
 * none, else sets [*start, *end) and moves *pos to *end.
 */
static int next_data_run(const char *p, size_t n, size_t *pos, size_t *start, size_t *end) {
    size_t b = *pos;
    while (b < n) {
        size_t len = n - b < HOLE_BLOCK ? n - b : HOLE_BLOCK;
        if (!is_zero(p + b, len))
            break;
        b += len;
    }
    if (b >= n) {
        *pos = n;
        return 0;
    }
    *start = b;
    while (b < n) {
        size_t len = n - b < HOLE_BLOCK ? n - b : HOLE_BLOCK;
        if (is_zero(p + b, len))
            break;
        b += len;
    }
    *end = *pos = b;
    return 1;
}

/* Write ``p[0:n]`` at ``off`` (a block boundary) by the hole rule: data runs written, holes skipped. */
static int write_sparse(int fd, const char *p, size_t n, off_t off, off_t *written_end, long long *holes) {
    size_t pos = 0, start, end, data = 0;
    while (next_data_run(p, n, &pos, &start, &end)) {
        if (write_at(fd, p + start, end - start, off + (off_t)start, written_end) < 0)
            return -1;
        data += end - start;
    }
    *holes += (long long)(n - data);
    return 0;
}

/*
 * The payload writer (the one description of writing a file's bytes, for the batch's jobs and, as
 * the type Payload, for pycatar's other writers: files an extraction writes itself, blob outputs):
 * it appends bytes to ``fd`` at increasing offsets from ``base`` with pwrite, so the descriptor's
 * own position never matters.  With ``sparse``, the bytes go by the hole rule over blocks counted
 * from ``base``; a block spanning several appends is kept back in ``carry`` until it is complete
 * (or the file ends).  payload_settle() puts everything appended into the file (the kept-back
 * bytes written as they are, the file extended over a pending hole), so it can be read back; the
 * rest of a block it wrote part of is then written as data too.  payload_finish() ends the file:
 * the last, partial block by the rule, the file extended to its whole size.
 */
typedef struct {
    int fd, sparse;
    off_t pos;            /* the file offset of the first byte not yet written or skipped */
    off_t written_end;    /* the end of the bytes written (or of the file, once extended) */
    long long size;       /* bytes appended */
    long long holes;      /* bytes left as holes */
    size_t ncarry, nput;  /* bytes of the kept-back block, and how many of them settle() wrote */
    char carry[HOLE_BLOCK];
} Payload;

static void payload_init(Payload *w, int fd, int sparse, off_t base) {
    w->fd = fd;
    w->sparse = sparse;
    w->pos = w->written_end = base;
    w->size = w->holes = 0;
    w->ncarry = w->nput = 0;
}

/* The kept-back block, ``len`` bytes: by the rule, or as data where settle() wrote part of it. */
static int payload_block(Payload *w, size_t len) {
    int r = w->nput ? write_at(w->fd, w->carry + w->nput, len - w->nput, w->pos + (off_t)w->nput, &w->written_end)
                    : write_sparse(w->fd, w->carry, len, w->pos, &w->written_end, &w->holes);
    if (r < 0)
        return -1;
    w->pos += (off_t)len;
    w->ncarry = w->nput = 0;
    return 0;
}

/* Append ``p[0:n]``.  ``last``: these are the file's final bytes (nothing is appended after them), so
 * its last, partial block goes by the rule at once, with the data run before it: one pwrite where a
 * small file took two (its whole blocks, then its tail at payload_finish). */
static int payload_append(Payload *w, const char *p, size_t n, int last) {
    w->size += (long long)n;
    if (!w->sparse) {
        if (write_at(w->fd, p, n, w->pos, &w->written_end) < 0)
            return -1;
        w->pos += (off_t)n;
        return 0;
    }
    if (w->ncarry) { /* complete the block started by earlier appends */
        size_t k = HOLE_BLOCK - w->ncarry < n ? HOLE_BLOCK - w->ncarry : n;
        memcpy(w->carry + w->ncarry, p, k);
        w->ncarry += k;
        p += k;
        n -= k;
        if (w->ncarry < HOLE_BLOCK)
            return 0;
        if (payload_block(w, HOLE_BLOCK) < 0)
            return -1;
    }
    size_t whole = last ? n : n - n % HOLE_BLOCK;
    if (write_sparse(w->fd, p, whole, w->pos, &w->written_end, &w->holes) < 0)
        return -1;
    w->pos += (off_t)whole;
    memcpy(w->carry, p + whole, n - whole);
    w->ncarry = n - whole;
    return 0;
}

static int payload_write(Payload *w, const char *p, size_t n) {
    return payload_append(w, p, n, 0);
}

/* Make the file reach ``end``, extending it over a hole there. */
static int payload_extend(Payload *w, off_t end) {
    if (end > w->written_end) {
        if (ftruncate(w->fd, end) < 0)
            return -1;
        w->written_end = end;
    }
    return 0;
}

static int payload_settle(Payload *w) {
    if (w->ncarry > w->nput) {
        if (write_at(w->fd, w->carry + w->nput, w->ncarry - w->nput, w->pos + (off_t)w->nput, &w->written_end) < 0)
            return -1;
        w->nput = w->ncarry;
    }
    return payload_extend(w, w->pos + (off_t)w->ncarry);
}

static int payload_finish(Payload *w) {
    if (w->ncarry && payload_block(w, w->ncarry) < 0)
        return -1;
    return payload_extend(w, w->pos);
}

/* Create ``name`` in ``dir_fd``: a new regular file (never an existing one, nor through a symlink). */
static int create_at(int dir_fd, const char *name, int mode) {
    int fd;
    do
        fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/*
 * What finishes a node once it exists (the one description of these steps, for the batch's jobs and
 * for pycatar.extract's other nodes through finish()): ``fd`` is the node's descriptor, or -1 for a
 * node reached as ``cur`` in ``dir_fd`` without following a final symlink (symlinks, devices,
 * FIFOs, sockets); ``tmp`` NULL or "" means the node needs no rename.
 */
typedef struct {
    int fd, dir_fd;
    const char *tmp, *name;
    long long uid, gid, mode, mtime_ns, granularity_ns;
} Finish;

static int node_stat(const Finish *f, const char *cur, struct stat *st) {
    return f->fd >= 0 ? fstat(f->fd, st) : fstatat(f->dir_fd, cur, st, AT_SYMLINK_NOFOLLOW);
}

/*
 * Run the finishing steps ``first``..``last`` (STEP_INSPECT..STEP_CLOSE) in their order: owner and
 * mode (each only where it differs; uid -1 and mode -1 leave them), mtime (granularity_ns 0 leaves
 * it), rename ``tmp`` to ``name``, check the mtime stuck at the granularity (errno 0 if rounded),
 * close ``fd``.  Returns -1 with *step and errno set on failure; closes or removes nothing then.
 * pycatar.extract runs them in pieces, with the ACL, xattr, capability and label steps between
 * STEP_MODE and STEP_MTIME and the chattr/FAT steps between STEP_RENAME and STEP_VERIFY (casync's
 * order); a batch job runs them all at once.
 */
static int finish_steps(const Finish *f, int first, int last, int *step) {
    struct stat st;
    int rename = f->tmp != NULL && f->tmp[0] != 0;
    const char *cur = rename ? f->tmp : f->name;
    if (first <= STEP_MODE && last >= STEP_INSPECT && (f->uid >= 0 || f->mode >= 0)) {
        *step = STEP_INSPECT;
        if (node_stat(f, cur, &st) < 0)
            return -1;
        if (f->uid >= 0 && ((long long)st.st_uid != f->uid || (long long)st.st_gid != f->gid)) {
            *step = STEP_OWNER;
            if ((f->fd >= 0 ? fchown(f->fd, (uid_t)f->uid, (gid_t)f->gid)
                            : fchownat(f->dir_fd, cur, (uid_t)f->uid, (gid_t)f->gid, AT_SYMLINK_NOFOLLOW)) < 0)
                return -1;
            *step = STEP_INSPECT;
            if (node_stat(f, cur, &st) < 0) /* a chown may clear set-id bits */
                return -1;
        }
        if (f->mode >= 0 && (long long)(st.st_mode & 07777) != f->mode) {
            *step = STEP_MODE;
            if ((f->fd >= 0 ? fchmod(f->fd, (mode_t)f->mode) : fchmodat(f->dir_fd, cur, (mode_t)f->mode, 0)) < 0)
                return -1;
        }
    }
    if (first <= STEP_MTIME && last >= STEP_MTIME && f->granularity_ns > 0) {
        struct timespec ts[2];
        ts[0].tv_sec = 0;
        ts[0].tv_nsec = UTIME_OMIT;
        long long ns = f->mtime_ns % 1000000000LL;  /* floor division: times before 1970 are negative */
        ts[1].tv_sec = (time_t)(f->mtime_ns / 1000000000LL - (ns < 0));
        ts[1].tv_nsec = (long)(ns < 0 ? ns + 1000000000LL : ns);
        *step = STEP_MTIME;
        if ((f->fd >= 0 ? futimens(f->fd, ts) : utimensat(f->dir_fd, cur, ts, AT_SYMLINK_NOFOLLOW)) < 0)
            return -1;
    }
    if (first <= STEP_RENAME && last >= STEP_RENAME && rename) {
        *step = STEP_RENAME;
        if (renameat(f->dir_fd, f->tmp, f->dir_fd, f->name) < 0)
            return -1;
        cur = f->name;
    }
    if (first <= STEP_VERIFY && last >= STEP_VERIFY && f->granularity_ns > 0) {
        *step = STEP_VERIFY;
        if (node_stat(f, cur, &st) < 0)
            return -1;
        long long got = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        if (got / f->granularity_ns != f->mtime_ns / f->granularity_ns) {
            errno = 0;
            return -1;
        }
    }
    if (last >= STEP_CLOSE && f->fd >= 0) {
        *step = STEP_CLOSE;
        if (close(f->fd) < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

/* One batch job; returns -1 (step in *step, errno set) on failure, the file closed and, unless it
 * was renamed already, its temporary name removed. */
static int do_job(const Job *j, long long *holes, int *step) {
    int fd;
    int finish_only = j->tmp[0] == 0; /* a node created already: dir_fd is the node itself */
    if (finish_only) {
        fd = j->dir_fd;
    } else {
        *step = STEP_CREATE;
        fd = create_at(j->dir_fd, j->tmp, j->open_mode);
        if (fd < 0)
            return -1;
        *step = STEP_WRITE;
        Payload w;
        payload_init(&w, fd, j->sparse, 0);
        for (Py_ssize_t i = 0; i < j->npieces; i++)
            if (payload_append(&w, j->pieces[i].buf, (size_t)j->pieces[i].len, i == j->npieces - 1) < 0)
                goto fail;
        if (payload_finish(&w) < 0)
            goto fail;
        *holes += w.holes;
    }
    Finish f = {fd, finish_only ? -1 : j->dir_fd, finish_only ? NULL : j->tmp, finish_only ? NULL : j->name,
                j->uid, j->gid, j->mode, j->mtime_ns, j->granularity_ns};
    if (finish_steps(&f, STEP_INSPECT, STEP_CLOSE, step) < 0) {
        if (*step == STEP_CLOSE)
            return -1;
        goto fail;
    }
    return 0;
fail: {
        int e = errno;
        close(fd);
        if (!finish_only && *step <= STEP_RENAME)
            unlinkat(j->dir_fd, j->tmp, 0);
        errno = e;
        return -1;
    }
}

static long long as_ll(PyObject *o, int *bad) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        *bad = 1;
    return v;
}

static void release(Job *jobs, Py_ssize_t njobs) {
    for (Py_ssize_t i = 0; i < njobs; i++) {
        for (Py_ssize_t k = 0; k < jobs[i].npieces; k++)
            PyBuffer_Release(&jobs[i].pieces[k]);
        PyMem_Free(jobs[i].pieces);
    }
    PyMem_Free(jobs);
}

static PyObject *write_files(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "write_files() takes a sequence of jobs");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Job *jobs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Job));
    if (!jobs) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Py_ssize_t ready = 0;
    for (; ready < n; ready++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, ready);
        Job *j = &jobs[ready];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != NFIELDS) {
            PyErr_SetString(PyExc_TypeError, "a job is a tuple of the JOB_FIELDS");
            goto error;
        }
        int bad = 0;
        j->dir_fd = (int)as_ll(PyTuple_GET_ITEM(t, 0), &bad);
        PyObject *tmp = PyTuple_GET_ITEM(t, 1), *name = PyTuple_GET_ITEM(t, 2);
        if (!PyBytes_Check(tmp) || !PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "job names must be bytes");
            goto error;
        }
        j->tmp = PyBytes_AS_STRING(tmp); /* the tuple keeps them alive */
        j->name = PyBytes_AS_STRING(name);
        if ((size_t)PyBytes_GET_SIZE(tmp) != strlen(j->tmp) || (size_t)PyBytes_GET_SIZE(name) != strlen(j->name)) {
            PyErr_SetString(PyExc_ValueError, "embedded NUL byte in a file name");
            goto error;
        }
        PyObject *pieces = PySequence_Fast(PyTuple_GET_ITEM(t, 3), "job pieces must be a sequence");
        if (!pieces)
            goto error;
        Py_ssize_t np = PySequence_Fast_GET_SIZE(pieces);
        j->pieces = PyMem_Calloc(np ? (size_t)np : 1, sizeof(Py_buffer));
        if (!j->pieces) {
            Py_DECREF(pieces);
            PyErr_NoMemory();
            goto error;
        }
        long long total = 0;
        for (; j->npieces < np; j->npieces++) {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(pieces, j->npieces), &j->pieces[j->npieces],
                                   PyBUF_C_CONTIGUOUS) < 0) {
                Py_DECREF(pieces);
                ready++; /* release what this job holds */
                goto error;
            }
            total += j->pieces[j->npieces].len;
        }
        Py_DECREF(pieces);
        j->size = as_ll(PyTuple_GET_ITEM(t, 4), &bad);
        j->open_mode = (int)as_ll(PyTuple_GET_ITEM(t, 5), &bad);
        j->uid = as_ll(PyTuple_GET_ITEM(t, 6), &bad);
        j->gid = as_ll(PyTuple_GET_ITEM(t, 7), &bad);
        j->mode = as_ll(PyTuple_GET_ITEM(t, 8), &bad);
        j->mtime_ns = as_ll(PyTuple_GET_ITEM(t, 9), &bad);
        j->granularity_ns = as_ll(PyTuple_GET_ITEM(t, 10), &bad);
        j->sparse = PyObject_IsTrue(PyTuple_GET_ITEM(t, 11));
        if (bad || j->sparse < 0) {
            ready++;
            goto error;
        }
        if (total != j->size) {
            PyErr_SetString(PyExc_ValueError, "job pieces do not add up to its size");
            ready++;
            goto error;
        }
    }

    long long holes = 0;
    Py_ssize_t done = 0, failed = -1;
    int step = 0, err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; done < n; done++) {
        if (do_job(&jobs[done], &holes, &step) < 0) {
            failed = done;
            err = errno;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    release(jobs, n);
    Py_DECREF(seq);
    return Py_BuildValue("(nLnii)", done, holes, failed, step, err);

error:
    release(jobs, ready);
    Py_DECREF(seq);
    return NULL;
}

/* finish(fd, dir_fd, tmp, name, uid, gid, mode, mtime_ns, granularity_ns, first, last): see finish_steps */
static PyObject *finish(PyObject *self, PyObject *args) {
    Finish f;
    PyObject *tmp_obj, *name_obj, *tmp_b = NULL, *name_b = NULL, *result = NULL;
    int first, last, step = STEP_INSPECT, r, err = 0;
    if (!PyArg_ParseTuple(args, "iiOOLLLLLii", &f.fd, &f.dir_fd, &tmp_obj, &name_obj, &f.uid, &f.gid, &f.mode,
                          &f.mtime_ns, &f.granularity_ns, &first, &last))
        return NULL;
    if ((tmp_obj != Py_None && !PyUnicode_FSConverter(tmp_obj, &tmp_b)) ||
        (name_obj != Py_None && !PyUnicode_FSConverter(name_obj, &name_b)))
        goto done;
    f.tmp = tmp_b ? PyBytes_AS_STRING(tmp_b) : NULL; /* (PyUnicode_FSConverter refuses embedded NULs) */
    f.name = name_b ? PyBytes_AS_STRING(name_b) : NULL;
    if (f.name == NULL && (f.fd < 0 || (f.tmp && f.tmp[0]))) {
        PyErr_SetString(PyExc_ValueError, "finish(): a node without a descriptor or with a rename needs its name");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    r = finish_steps(&f, first, last, &step);
    if (r < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    result = r < 0 ? Py_BuildValue("(ii)", step, err) : Py_NewRef(Py_None);
done:
    Py_XDECREF(tmp_b);
    Py_XDECREF(name_b);
    return result;
}

/* What read_file found for one path (read without the GIL). */
typedef struct {
    char *buf; /* malloc'd */
    size_t len;
    int err, step, missing;
} rres_t;

static void read_one(const char *path, Py_ssize_t limit, rres_t *r) {
    struct stat st;
    size_t cap = 0;
    int fd;
    memset(r, 0, sizeof *r);
    do
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK); /* a FIFO never blocks */
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        r->err = errno;
        r->missing = r->err == ENOENT || r->err == ENOTDIR || r->err == ELOOP;
        return;
    }
    r->step = 1;
    if (fstat(fd, &st) < 0) {
        r->err = errno;
    } else if (!S_ISREG(st.st_mode)) {
        r->err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL; /* a FIFO, device or socket: not a file to read */
    } else if (st.st_size > limit) {
        r->step = 2;
    } else {
        cap = (size_t)st.st_size + 1; /* one more, to notice a file that grows */
        r->buf = malloc(cap);
        if (!r->buf)
            r->err = ENOMEM;
        while (r->buf && !r->err) {
            ssize_t k = read(fd, r->buf + r->len, cap - r->len);
            if (k < 0) {
                if (errno != EINTR)
                    r->err = errno;
                continue;
            }
            if (k == 0)
                break;
            r->len += (size_t)k;
            if (r->len == cap) {
                if (r->len > (size_t)limit) {
                    r->step = 2;
                    break;
                }
                size_t ncap = cap * 2 > (size_t)limit + 1 ? (size_t)limit + 1 : cap * 2;
                char *nbuf = realloc(r->buf, ncap);
                if (!nbuf) {
                    r->err = ENOMEM;
                    break;
                }
                r->buf = nbuf;
                cap = ncap;
            }
        }
    }
    close(fd);
}

/* read_file's answer for r (and r's buffer freed). */
static PyObject *read_result(rres_t *r) {
    PyObject *result;
    if (r->missing)
        result = Py_NewRef(Py_None);
    else if (r->err || r->step == 2)
        result = Py_BuildValue("(ii)", r->step, r->err);
    else
        result = PyBytes_FromStringAndSize(r->buf ? r->buf : "", (Py_ssize_t)r->len);
    free(r->buf);
    r->buf = NULL;
    return result;
}

static PyObject *read_file(PyObject *self, PyObject *args) {
    PyObject *path_obj;
    Py_ssize_t limit;
    rres_t r;
    if (!PyArg_ParseTuple(args, "O&n", PyUnicode_FSConverter, &path_obj, &limit))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    read_one(PyBytes_AS_STRING(path_obj), limit, &r); /* (PyUnicode_FSConverter refuses embedded NULs) */
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    return read_result(&r);
}

/* read_files(paths, limits) -> [result]: read_file of each path with its limit, the GIL released once. */
static PyObject *read_files(PyObject *self, PyObject *args) {
    PyObject *paths_arg, *limits_arg;
    if (!PyArg_ParseTuple(args, "OO", &paths_arg, &limits_arg))
        return NULL;
    PyObject *paths = PySequence_Fast(paths_arg, "read_files() needs a sequence of paths");
    if (!paths)
        return NULL;
    PyObject *limits = PySequence_Fast(limits_arg, "read_files() needs a sequence of limits");
    if (!limits) {
        Py_DECREF(paths);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(paths), got = 0;
    PyObject **names = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    Py_ssize_t *lims = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    rres_t *res = PyMem_Calloc(n ? n : 1, sizeof(rres_t));
    PyObject *result = NULL;
    if (!names || !lims || !res) {
        PyErr_NoMemory();
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(limits) != n) {
        PyErr_SetString(PyExc_ValueError, "read_files(): as many limits as paths");
        goto done;
    }
    for (; got < n; got++) {
        lims[got] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(limits, got));
        if (lims[got] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "read_files(): a limit is negative");
            goto done;
        }
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(paths, got), &names[got]))
            goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        read_one(PyBytes_AS_STRING(names[i]), lims[i], &res[i]);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = read_result(&res[i]);
        if (!item || !result) {
            Py_XDECREF(item);
            Py_CLEAR(result);
        } else {
            PyList_SET_ITEM(result, i, item);
        }
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        Py_XDECREF(names[i]);
    if (!result && res)
        for (Py_ssize_t i = 0; i < n; i++)
            free(res[i].buf);
    PyMem_Free(names);
    PyMem_Free(lims);
    PyMem_Free(res);
    Py_DECREF(paths);
    Py_DECREF(limits);
    return result;
}

/* install_file's steps for one file, without the GIL: 1 installed, 0 ``final`` existed, -1 failed
 * (*step, *err set as install_file returns them). */
static int install_one(const char *tmp, const char *final, const char *p, size_t left, int mode, int *step,
                       int *err) {
    int result = 1;
    *step = 0;
    *err = 0;
    int fd = create_at(AT_FDCWD, tmp, mode);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    *step = 1;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            break;
        }
        p += k;
        left -= (size_t)k;
    }
    if (close(fd) < 0 && !*err && errno != EINTR)
        *err = errno;
    if (*err) {
        unlink(tmp);
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0) {
        /* installed */
    } else if (errno == EEXIST) {
        result = 0;
        unlink(tmp);
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        *err = errno;
        *step = 2;
    } else if (link(tmp, final) < 0) { /* no RENAME_NOREPLACE here */
        if (errno == EEXIST) {
            result = 0;
            unlink(tmp);
        } else {
            *err = errno;
            *step = 2;
        }
    } else {
        unlink(tmp);
    }
    return *err ? -1 : result;
}

static PyObject *install_result(int r, int step, int err) {
    if (r < 0)
        return Py_BuildValue("(ii)", step, err);
    return PyLong_FromLong(r);
}

static PyObject *install_file(PyObject *self, PyObject *args) {
    PyObject *tmp_obj, *final_obj;
    Py_buffer data;
    int mode, step, err, r;
    if (!PyArg_ParseTuple(args, "O&O&y*i", PyUnicode_FSConverter, &tmp_obj, PyUnicode_FSConverter,
                          &final_obj, &data, &mode))
        return NULL;
    const char *tmp = PyBytes_AS_STRING(tmp_obj), *final = PyBytes_AS_STRING(final_obj); /* (no NULs: FSConverter) */
    Py_BEGIN_ALLOW_THREADS
    r = install_one(tmp, final, data.buf, (size_t)data.len, mode, &step, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(tmp_obj);
    Py_DECREF(final_obj);
    PyBuffer_Release(&data);
    return install_result(r, step, err);
}

/* install_files(jobs, mode) -> [result]: install_file of each (tmp, final, data) of ``jobs``, the GIL
 * released once for all of them; a failed job does not stop the others. */
static PyObject *install_files(PyObject *self, PyObject *args) {
    PyObject *jobs_arg;
    int mode;
    if (!PyArg_ParseTuple(args, "Oi", &jobs_arg, &mode))
        return NULL;
    PyObject *jobs = PySequence_Fast(jobs_arg, "install_files() needs a sequence of (tmp, final, data)");
    if (!jobs)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(jobs), got = 0;
    PyObject **names = PyMem_Calloc(2 * (size_t)(n ? n : 1), sizeof(PyObject *));
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    int *res = PyMem_Calloc(3 * (size_t)(n ? n : 1), sizeof(int));
    PyObject *result = NULL;
    if (!names || !views || !res) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *job = PySequence_Fast_GET_ITEM(jobs, got);
        PyObject *tmp_arg, *final_arg, *data_arg;
        if (!PyTuple_Check(job) || !PyArg_UnpackTuple(job, "job", 3, 3, &tmp_arg, &final_arg, &data_arg))
            goto bad_job;
        if (!PyUnicode_FSConverter(tmp_arg, &names[2 * got]))
            goto done;
        if (!PyUnicode_FSConverter(final_arg, &names[2 * got + 1]) ||
            PyObject_GetBuffer(data_arg, &views[got], PyBUF_SIMPLE) < 0) {
            Py_CLEAR(names[2 * got]);
            Py_CLEAR(names[2 * got + 1]);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        res[3 * i] = install_one(PyBytes_AS_STRING(names[2 * i]), PyBytes_AS_STRING(names[2 * i + 1]),
                                 views[i].buf, (size_t)views[i].len, mode, &res[3 * i + 1], &res[3 * i + 2]);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        PyObject *r = install_result(res[3 * i], res[3 * i + 1], res[3 * i + 2]);
        if (!r)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, r);
    }
    goto done;
bad_job:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "install_files(): each job is a tuple (tmp, final, data)");
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        Py_XDECREF(names[2 * i]);
        Py_XDECREF(names[2 * i + 1]);
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(names);
    PyMem_Free(views);
    PyMem_Free(res);
    Py_DECREF(jobs);
    return result;
}

/* create(name, mode, dir_fd=None) -> fd: see create_at; raises OSError (FileExistsError: taken) */
static PyObject *create(PyObject *self, PyObject *args) {
    PyObject *name_arg, *name_obj, *dir_obj = Py_None;
    int mode, dir_fd = AT_FDCWD, fd;
    if (!PyArg_ParseTuple(args, "Oi|O", &name_arg, &mode, &dir_obj) || !PyUnicode_FSConverter(name_arg, &name_obj))
        return NULL; /* (the converter refuses a NUL byte) */
    const char *name = PyBytes_AS_STRING(name_obj);
    if (dir_obj != Py_None) {
        long v = PyLong_AsLong(dir_obj);
        if (v < 0 || v > INT_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "create(): dir_fd must be a descriptor");
            Py_DECREF(name_obj);
            return NULL;
        }
        dir_fd = (int)v;
    }
    Py_BEGIN_ALLOW_THREADS
    fd = create_at(dir_fd, name, mode);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_arg);
        Py_DECREF(name_obj);
        return NULL;
    }
    Py_DECREF(name_obj);
    return PyLong_FromLong(fd);
}

/*
 * make_dir(dir_fd, name, mode, create) -> (existed, fd, errno): with ``create``, mkdirat(name, mode)
 * (EEXIST: existed is 1; any other failure raises OSError); then the directory opened (O_DIRECTORY,
 * never through a symlink): fd, or -1 and the errno of the open.  The GIL is *kept*: these are two
 * short calls made by the extraction's decoding thread for each directory, and releasing the GIL
 * around them cost that thread far more, waiting to get it back from the threads fetching chunks
 * (a directory tree's mkdir and open took 5-8 times their CPU time in wall time), than holding it
 * costs the others.
 */
static PyObject *make_dir(PyObject *self, PyObject *args) {
    PyObject *name_arg, *name_obj;
    int dir_fd, mode, make, existed = 0, fd, err = 0;
    if (!PyArg_ParseTuple(args, "iOip", &dir_fd, &name_arg, &mode, &make) ||
        !PyUnicode_FSConverter(name_arg, &name_obj))
        return NULL; /* (the converter refuses a NUL byte) */
    const char *name = PyBytes_AS_STRING(name_obj);
    if (make && mkdirat(dir_fd, name, (mode_t)mode) < 0) {
        if (errno != EEXIST) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name_arg);
            Py_DECREF(name_obj);
            return NULL;
        }
        existed = 1;
    }
    do
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        err = errno;
    Py_DECREF(name_obj);
    return Py_BuildValue("(iii)", existed, fd, err);
}

/*
 * make_dirs(paths, mode) -> [errno]: mkdir each path with ``mode``, the GIL released once for all of
 * them (a chunk store makes a directory for nearly every new chunk of a fresh store: one release per
 * mkdir left its writers waiting to get the GIL back thousands of times).  For each path: 0 if it
 * was made, else the errno (EEXIST: it was there already).
 */
static PyObject *make_dirs(PyObject *self, PyObject *args) {
    PyObject *paths_arg;
    int mode;
    if (!PyArg_ParseTuple(args, "Oi", &paths_arg, &mode))
        return NULL;
    PyObject *paths = PySequence_Fast(paths_arg, "make_dirs() needs a sequence of paths");
    if (!paths)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(paths), got = 0;
    PyObject **names = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    int *errs = PyMem_Calloc(n ? n : 1, sizeof(int));
    PyObject *result = NULL;
    if (!names || !errs) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++)
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(paths, got), &names[got]))
            goto done; /* (the converter refuses a NUL byte) */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        errs[i] = mkdir(PyBytes_AS_STRING(names[i]), (mode_t)mode) < 0 ? errno : 0;
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        PyObject *e = PyLong_FromLong(errs[i]);
        if (!e)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, e);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        Py_XDECREF(names[i]);
    PyMem_Free(names);
    PyMem_Free(errs);
    Py_DECREF(paths);
    return result;
}

/* The type Payload: a payload writer (see payload_init) for Python callers, GIL released for I/O. */
typedef struct {
    PyObject_HEAD
    Payload w;
    int busy; /* a call is writing with the GIL released: another one must not touch ``w`` */
} PayloadObject;

static PyObject *payload_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"fd", "sparse", "offset", NULL};
    int fd, sparse;
    long long base = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ip|L", kwlist, &fd, &sparse, &base))
        return NULL;
    if (fd < 0 || base < 0) {
        PyErr_SetString(PyExc_ValueError, "Payload(): a descriptor and an offset >= 0");
        return NULL;
    }
    PayloadObject *o = (PayloadObject *)type->tp_alloc(type, 0);
    if (o)
        payload_init(&o->w, fd, sparse, (off_t)base);
    return (PyObject *)o;
}

/* Run one of the writer's steps on ``data`` (NULL for settle/finish) with the GIL released. */
static PyObject *payload_call(PayloadObject *o, int (*step)(Payload *), Py_buffer *data) {
    int r, err = 0;
    if (o->busy) {
        if (data)
            PyBuffer_Release(data);
        PyErr_SetString(PyExc_RuntimeError, "Payload: called from two threads at once");
        return NULL;
    }
    Payload *w = &o->w;
    if (data && w->sparse && w->ncarry + (size_t)data->len < HOLE_BLOCK) {
        r = payload_write(w, data->buf, (size_t)data->len); /* kept back whole: no I/O */
    } else {
        o->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        r = data ? payload_write(w, data->buf, (size_t)data->len) : step(w);
        if (r < 0)
            err = errno;
        Py_END_ALLOW_THREADS
        o->busy = 0;
    }
    if (data)
        PyBuffer_Release(data);
    if (r < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *payload_write_m(PayloadObject *o, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    return payload_call(o, NULL, &data);
}

/* write_many(list): the buffers appended in order, the GIL released once for all of them (a
 * writer that collects a few chunks and writes them together waits for the GIL once per batch, not
 * once per chunk, while other threads decode). */
static PyObject *payload_write_many_m(PayloadObject *o, PyObject *arg) {
    if (!PyList_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "Payload.write_many(): a list of buffers");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg), got = 0;
    Py_buffer *views = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (views == NULL)
        return PyErr_NoMemory();
    PyObject *items = PyList_AsTuple(arg); /* the list may change while the GIL is released */
    PyObject *result = NULL;
    if (items == NULL)
        goto done;
    for (; got < n; got++)
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(items, got), &views[got], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
    if (o->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Payload: called from two threads at once");
        goto done;
    }
    int r = 0, err = 0;
    o->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && r == 0; i++)
        if ((r = payload_write(&o->w, views[i].buf, (size_t)views[i].len)) < 0)
            err = errno;
    Py_END_ALLOW_THREADS
    o->busy = 0;
    if (r < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_XDECREF(items);
    return result;
}

static PyObject *payload_settle_m(PayloadObject *o, PyObject *unused) { return payload_call(o, payload_settle, NULL); }

static PyObject *payload_finish_m(PayloadObject *o, PyObject *unused) { return payload_call(o, payload_finish, NULL); }

static PyObject *payload_skip_m(PayloadObject *o, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Payload *w = &o->w;
    if (n < 0 || w->ncarry || o->busy) {
        PyErr_SetString(PyExc_ValueError, "Payload.skip(): n >= 0, at the end of a block, nothing kept back");
        return NULL;
    }
    w->pos += (off_t)n;
    w->size += n;
    if (w->pos > w->written_end)
        w->written_end = w->pos;
    Py_RETURN_NONE;
}

static PyObject *payload_get(PayloadObject *o, void *which) {
    const Payload *w = &o->w;
    switch ((int)(intptr_t)which) {
    case 0: return PyLong_FromLongLong(w->size);
    case 1: return PyLong_FromLongLong(w->holes);
    case 2: return PyLong_FromLongLong((long long)w->pos + (long long)w->ncarry);
    default: return PyBool_FromLong(w->sparse);
    }
}

static PyMethodDef payload_methods[] = {
    {"write", (PyCFunction)payload_write_m, METH_O,
     "write(data): append the bytes of a buffer (not copied), by the hole rule if sparse."},
    {"write_many", (PyCFunction)payload_write_many_m, METH_O,
     "write_many(buffers): append the bytes of each buffer of a list in turn (not copied), the GIL "
     "released once for all of them."},
    {"settle", (PyCFunction)payload_settle_m, METH_NOARGS,
     "settle(): put every byte appended so far into the file (kept-back bytes written, a hole at the "
     "end made by extending the file), so that it can be read back."},
    {"finish", (PyCFunction)payload_finish_m, METH_NOARGS,
     "finish(): the end of the file: the last, partial block by the hole rule, the file extended to "
     "its whole size."},
    {"skip", (PyCFunction)payload_skip_m, METH_O,
     "skip(n): n bytes were put at the end of the file some other way (a clone): count them and move "
     "past them.  Only at the end of a block (nothing kept back)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef payload_getset[] = {
    {"size", (getter)payload_get, NULL, "bytes appended", (void *)0},
    {"holes", (getter)payload_get, NULL, "bytes left as holes", (void *)1},
    {"offset", (getter)payload_get, NULL, "the file offset of the next byte appended", (void *)2},
    {"sparse", (getter)payload_get, NULL, "whether all-zero blocks become holes", (void *)3},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PayloadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pycatar._fileio.Payload",
    .tp_basicsize = sizeof(PayloadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Payload(fd, sparse, offset=0): appends a file's bytes to the descriptor ``fd`` from "
              "``offset`` on with pwrite (its file position is left alone); with ``sparse`` every "
              "all-zero block of 4 KiB, counted from ``offset`` (the last may be shorter), "
              "becomes a hole.  The batch writer's jobs write their files with the same code.  Raises "
              "OSError.",
    .tp_new = payload_new,
    .tp_methods = payload_methods,
    .tp_getset = payload_getset,
};

static PyObject *fs_type(PyObject *self, PyObject *arg) {
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    struct statfs sfs;
    int r;
    do
        r = fstatfs(fd, &sfs);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLong((unsigned long)sfs.f_type & 0xFFFFFFFFUL);
}

/* send_files(sock, files, item, offset): see the module comment */
static PyObject *send_files(PyObject *self, PyObject *args) {
    int sock;
    PyObject *files;
    Py_ssize_t item;
    long long offset;
    if (!PyArg_ParseTuple(args, "iOnL", &sock, &files, &item, &offset))
        return NULL;
    PyObject *seq = PySequence_Fast(files, "files must be a sequence of (fd, size)");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (item < 0 || item > n || offset < 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "position outside the files");
        return NULL;
    }
    int *fds = PyMem_Malloc(sizeof(int) * (size_t)(n ? n : 1));
    long long *sizes = PyMem_Malloc(sizeof(long long) * (size_t)(n ? n : 1));
    if (!fds || !sizes) {
        PyMem_Free(fds);
        PyMem_Free(sizes);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 ||
            (fds[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0)), PyErr_Occurred()) ||
            (sizes[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 1)), PyErr_Occurred()) || sizes[i] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "files must be (fd, size) pairs with sizes >= 0");
            PyMem_Free(fds);
            PyMem_Free(sizes);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (item < n && !err) {
        long long body = fds[item] < 0 ? 0 : sizes[item];
        if (offset < 8) { /* the frame's size field (joined with the bytes that follow, if any) */
            unsigned char head[8];
            unsigned long long v = fds[item] < 0 ? ~0ULL : (unsigned long long)sizes[item];
            for (int b = 0; b < 8; b++)
                head[b] = (unsigned char)(v >> (8 * b));
            ssize_t w = send(sock, head + offset, (size_t)(8 - offset), MSG_NOSIGNAL | (body ? MSG_MORE : 0));
            if (w < 0) {
                if (errno != EINTR)
                    err = errno == EWOULDBLOCK ? EAGAIN : errno;
                continue;
            }
            offset += w;
        } else if (offset - 8 < body) {
            off_t at = (off_t)(offset - 8);
            long long left = body - at;
            ssize_t w = sendfile(sock, fds[item], &at, (size_t)(left > (1LL << 30) ? (1LL << 30) : left));
            if (w < 0) {
                if (errno != EINTR)
                    err = errno == EWOULDBLOCK ? EAGAIN : errno;
                continue;
            }
            if (w == 0) {
                err = ENODATA; /* the file ends before its size */
                continue;
            }
            offset += w;
        }
        if (offset == 8 + body) {
            item++;
            offset = 0;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(fds);
    PyMem_Free(sizes);
    return Py_BuildValue("(nLi)", item, offset, err);
}

static PyMethodDef methods[] = {
    {"create", create, METH_VARARGS,
     "create(name, mode, dir_fd=None) -> fd: create a new regular file exclusively, never through a "
     "symlink, open for writing, GIL released; raises OSError (FileExistsError if the name is taken)."},
    {"read_file", read_file, METH_VARARGS,
     "read_file(path, limit) -> bytes | None | (step, errno): a whole file, GIL released (see the "
     "module source)."},
    {"read_files", read_files, METH_VARARGS,
     "read_files(paths, limits) -> [bytes | None | (step, errno)]: read_file of each path with its "
     "limit, the GIL released once."},
    {"install_files", install_files, METH_VARARGS,
     "install_files(jobs, mode) -> [1 | 0 | (step, errno)]: install_file of each (tmp, final, data), "
     "the GIL released once for all of them."},
    {"install_file", install_file, METH_VARARGS,
     "install_file(tmp, final, data, mode) -> 1 | 0 | (step, errno): write a file under a temporary "
     "name and rename (or hard-link) it into place without replacing anything, GIL released (see the module "
     "source)."},
    {"finish", finish, METH_VARARGS,
     "finish(fd, dir_fd, tmp, name, uid, gid, mode, mtime_ns, granularity_ns, first, last) -> None | "
     "(step, errno): run the finishing steps first..last of a node (see finish_steps in the module "
     "source), GIL released."},
    {"make_dir", make_dir, METH_VARARGS,
     "make_dir(dir_fd, name, mode, create) -> (existed, fd, errno): make (if ``create``) and open a "
     "directory, GIL kept (see the module source); raises OSError if mkdir fails but for EEXIST."},
    {"make_dirs", make_dirs, METH_VARARGS,
     "make_dirs(paths, mode) -> [errno]: mkdir each path, the GIL released once; for each 0 (made) or "
     "the errno (EEXIST: there already)."},
    {"fs_type", fs_type, METH_O,
     "fs_type(fd) -> int: the type (statfs f_type, 32 bits) of the file system ``fd`` lives on; "
     "raises OSError."},
    {"send_files", send_files, METH_VARARGS,
     "send_files(sock, files, item, offset) -> (item, offset, errno): send (fd, size) chunk files to a "
     "non-blocking socket in SERVE-5's framing until it would block, GIL released (see the module source)."},
    {"write_files", write_files, METH_O,
     "write_files(jobs) -> (done, hole_bytes, failed_index, step, errno): create regular files "
     "(see the module source for the job layout), GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pycatar._fileio",
                                    "File I/O in C with the GIL released: file creation and payload writing (one file or a batch), whole-file reads, chunk file installs, chunk files sent to a socket, file system types.",
                                    -1, methods};

static PyObject *names_tuple(const char *const *names, Py_ssize_t n) {
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static int add_ref(PyObject *m, const char *name, PyObject *value) { /* steals value */
    if (!value || PyModule_AddObject(m, name, value) < 0) {
        Py_XDECREF(value);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__fileio(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyType_Ready(&PayloadType) < 0 || add_ref(m, "Payload", Py_NewRef((PyObject *)&PayloadType)) < 0 ||
        add_ref(m, "JOB_FIELDS", names_tuple(job_fields, NFIELDS)) < 0 ||
        add_ref(m, "STEPS", names_tuple(step_names, NSTEPS)) < 0 ||
        PyModule_AddIntConstant(m, "STEP_CREATE", STEP_CREATE) < 0 ||
        PyModule_AddIntConstant(m, "STEP_VERIFY", STEP_VERIFY) < 0 ||
        PyModule_AddIntConstant(m, "STEP_INSPECT", STEP_INSPECT) < 0 ||
        PyModule_AddIntConstant(m, "STEP_MODE", STEP_MODE) < 0 ||
        PyModule_AddIntConstant(m, "STEP_MTIME", STEP_MTIME) < 0 ||
        PyModule_AddIntConstant(m, "STEP_RENAME", STEP_RENAME) < 0 ||
        PyModule_AddIntConstant(m, "STEP_CLOSE", STEP_CLOSE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
