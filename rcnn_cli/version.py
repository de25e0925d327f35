"""The package's version, in a module of its own: the package root imports the API lazily, so a module below
the API that read the version from the root (export's metadata) would close an import circle."""

__version__ = "0.1.0"
