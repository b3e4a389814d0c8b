/*
 * floor: the file system work a case cannot avoid, done in C with as few system calls as a correct
 * tool can make, timed on one core (the CPU time of this thread: user + system).  bench.py compiles
 * it with the system's C compiler and adds its figures to the chunk work of each case's lower bound.
 *
 *   floor read TREE           walk TREE as a make must: open each directory, read its entries, stat
 *                             each entry, read every regular file whole, read every symlink.
 *   floor create TREE DEST    first load TREE into memory (not timed), then create it below DEST
 *                             (which must not exist) as an extraction must: each directory made and
 *                             opened; each file created under a temporary name with its mode, its
 *                             payload written, its mtime set, renamed into place and closed; each
 *                             symlink made under a temporary name, its mtime set, renamed; each
 *                             directory's mtime set after its children.
 *   floor chunks DEST N SIZE  store N chunk files of SIZE bytes as a chunk store must: in 4096
 *                             subdirectories (made once each), each file created under a temporary
 *                             name, written, closed and renamed into place.
 *
 * Prints the seconds of CPU time the timed part took.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *name) {
    fprintf(stderr, "floor: %s %s: %s\n", what, name, strerror(errno));
    exit(1);
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char buf[1 << 20];

/* ----------------------------------------------------------------------------- read */

static void read_tree(int dfd) {
    DIR *d = fdopendir(dfd);
    if (!d)
        die("fdopendir", "");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            die("stat", e->d_name);
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                die("open", e->d_name);
            read_tree(sub);
        } else if (S_ISREG(st.st_mode)) {
            int fd = openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                die("open", e->d_name);
            while (read(fd, buf, sizeof buf) > 0)
                ;
            close(fd);
        } else if (S_ISLNK(st.st_mode)) {
            readlinkat(dfd, e->d_name, buf, sizeof buf);
        }
    }
    closedir(d);
}

/* ----------------------------------------------------------------------------- create */

typedef struct Node {
    char *name;
    mode_t mode;
    struct timespec mtime;
    char *data; /* file payload or symlink target */
    size_t size;
    struct Node *child, *next; /* directories: first child; siblings */
} Node;

static Node *load(int dfd, const char *name, const struct stat *st) {
    Node *n = calloc(1, sizeof *n);
    n->name = strdup(name);
    n->mode = st->st_mode;
    n->mtime = st->st_mtim;
    if (S_ISREG(st->st_mode)) {
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            die("open", name);
        n->data = malloc(st->st_size ? (size_t)st->st_size : 1);
        ssize_t k;
        while (n->size < (size_t)st->st_size && (k = read(fd, n->data + n->size, (size_t)st->st_size - n->size)) > 0)
            n->size += (size_t)k;
        close(fd);
    } else if (S_ISLNK(st->st_mode)) {
        n->data = calloc(1, 4097);
        readlinkat(dfd, name, n->data, 4096);
    } else if (S_ISDIR(st->st_mode)) {
        int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
            die("open", name);
        DIR *d = fdopendir(sub);
        struct dirent *e;
        Node **tail = &n->child;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            struct stat cst;
            if (fstatat(sub, e->d_name, &cst, AT_SYMLINK_NOFOLLOW) < 0)
                die("stat", e->d_name);
            if (!S_ISDIR(cst.st_mode) && !S_ISREG(cst.st_mode) && !S_ISLNK(cst.st_mode))
                continue;
            *tail = load(sub, e->d_name, &cst);
            tail = &(*tail)->next;
        }
        closedir(d);
    }
    return n;
}

static unsigned long counter;

static void create(int dfd, const Node *n) {
    char tmp[300];
    if (S_ISDIR(n->mode)) {
        if (mkdirat(dfd, n->name, 0700) < 0)
            die("mkdir", n->name);
        int fd = openat(dfd, n->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            die("open", n->name);
        for (const Node *c = n->child; c; c = c->next)
            create(fd, c);
        struct timespec ts[2] = {{0, UTIME_OMIT}, n->mtime};
        if (fchmod(fd, n->mode & 07777) < 0 || futimens(fd, ts) < 0)
            die("finish", n->name);
        close(fd);
        return;
    }
    snprintf(tmp, sizeof tmp, ".#%.200s%016lx", n->name, counter++);
    if (S_ISREG(n->mode)) {
        int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, n->mode & 07777);
        if (fd < 0)
            die("create", tmp);
        size_t off = 0;
        while (off < n->size) {
            ssize_t k = write(fd, n->data + off, n->size - off);
            if (k <= 0)
                die("write", tmp);
            off += (size_t)k;
        }
        struct timespec ts[2] = {{0, UTIME_OMIT}, n->mtime};
        if (futimens(fd, ts) < 0 || renameat(dfd, tmp, dfd, n->name) < 0)
            die("finish", n->name);
        close(fd);
    } else {
        struct timespec ts[2] = {{0, UTIME_OMIT}, n->mtime};
        if (symlinkat(n->data, dfd, tmp) < 0 || utimensat(dfd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0 ||
            renameat(dfd, tmp, dfd, n->name) < 0)
            die("symlink", n->name);
    }
}

/* ----------------------------------------------------------------------------- chunks */

static void chunks(const char *dest, long count, long size) {
    char path[64], tmp[64];
    static char made[4096];
    memset(buf, 'x', sizeof buf);
    if (mkdir(dest, 0777) < 0)
        die("mkdir", dest);
    int dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        die("open", dest);
    for (long i = 0; i < count; i++) {
        unsigned sub = (unsigned)(i * 2654435761u) % 4096;
        snprintf(path, sizeof path, "%03x", sub);
        if (!made[sub]) {
            if (mkdirat(dfd, path, 0777) < 0 && errno != EEXIST)
                die("mkdir", path);
            made[sub] = 1;
        }
        snprintf(tmp, sizeof tmp, "%03x/%016lx.tmp", sub, (unsigned long)i);
        int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0)
            die("create", tmp);
        for (long left = size; left > 0;) {
            ssize_t k = write(fd, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
            if (k <= 0)
                die("write", tmp);
            left -= k;
        }
        close(fd);
        snprintf(path, sizeof path, "%03x/%016lx.cacnk", sub, (unsigned long)i);
        if (renameat(dfd, tmp, dfd, path) < 0)
            die("rename", path);
    }
    close(dfd);
}

int main(int argc, char **argv) {
    double t0;
    if (argc == 3 && !strcmp(argv[1], "read")) {
        int fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            die("open", argv[2]);
        t0 = cpu_now();
        read_tree(fd);
    } else if (argc == 4 && !strcmp(argv[1], "create")) {
        struct stat st;
        if (lstat(argv[2], &st) < 0)
            die("stat", argv[2]);
        Node *root = load(AT_FDCWD, argv[2], &st);
        free(root->name);
        root->name = argv[3];
        umask(0);
        t0 = cpu_now();
        create(AT_FDCWD, root);
    } else if (argc == 5 && !strcmp(argv[1], "chunks")) {
        t0 = cpu_now();
        chunks(argv[2], atol(argv[3]), atol(argv[4]));
    } else {
        fprintf(stderr, "usage: floor read TREE | create TREE DEST | chunks DEST N SIZE\n");
        return 2;
    }
    printf("%.6f\n", cpu_now() - t0);
    return 0;
}
