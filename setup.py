# The C extension (the buzhash rolling loop) is declared here; all other metadata is in pyproject.toml.
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pycatar._chunker",
            sources=["src/pycatar/_chunker.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
