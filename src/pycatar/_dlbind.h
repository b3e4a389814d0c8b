/*
 * Binding a system library at run time, the one way pycatar's C modules do it (_curl: libcurl,
 * _zstd: libzstd, _sha: libcrypto): no headers are needed to build, and a machine without the
 * library can still do everything else.
 *
 * dl_bind(name, symbols, n, err, errlen) dlopens ``name`` and looks up each symbol into its slot.
 * Returns the handle, or NULL with the reason in ``err`` ("cannot load NAME: ..." or "NAME has no
 * SYMBOL"), the library closed again.  A table entry is DL_SYM(lib.field, "symbol").
 */
#ifndef PYCATAR_DLBIND_H
#define PYCATAR_DLBIND_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *symbol;
    void **slot; /* a function pointer's storage (POSIX: data and function pointers convert) */
} dl_symbol_t;

#define DL_SYM(field, symbol) {symbol, (void **)&(field)}

static void *dl_bind(const char *name, const dl_symbol_t *symbols, size_t n, char *err, size_t errlen) {
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load %s: %s", name, why ? why : "unknown error");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((*symbols[i].slot = dlsym(h, symbols[i].symbol)) == NULL) {
            snprintf(err, errlen, "%s has no %s", name, symbols[i].symbol);
            dlclose(h);
            return NULL;
        }
    }
    return h;
}

#endif
