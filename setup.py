# The C extensions (the buzhash rolling loop; the catar decoder's record parsing; batch file creation and whole-file reads; libcurl, loaded at run time, with bodies received in C; zstd compression and SHA-2 digests of a batch of chunks by the system's libzstd and libcrypto, loaded at run time) are declared here; all other metadata is in pyproject.toml.
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pycatar._chunker",
            sources=["src/pycatar/_chunker.c"],
            extra_compile_args=["-O3", "-std=c99"],
        ),
        Extension(
            "pycatar._catar",
            sources=["src/pycatar/_catar.c"],
            extra_compile_args=["-O2", "-std=gnu99", "-Wall"],
        ),
        Extension(
            "pycatar._curl",
            sources=["src/pycatar/_curl.c"],
            depends=["src/pycatar/_dlbind.h"],
            extra_compile_args=["-O2", "-std=gnu99", "-Wall"],
            libraries=["dl", "pthread"],
        ),
        Extension(
            "pycatar._zstd",
            sources=["src/pycatar/_zstd.c"],
            depends=["src/pycatar/_dlbind.h"],
            extra_compile_args=["-O2", "-std=gnu99", "-Wall"],
            libraries=["dl"],
        ),
        Extension(
            "pycatar._sha",
            sources=["src/pycatar/_sha.c"],
            depends=["src/pycatar/_dlbind.h", "src/pycatar/_sha512lanes.h"],
            extra_compile_args=["-O2", "-std=gnu99", "-Wall"],
            libraries=["dl"],
        ),
        Extension(
            "pycatar._fileio",
            sources=["src/pycatar/_fileio.c"],
            extra_compile_args=["-O2", "-std=gnu99", "-Wall"],
        ),
    ]
)
