"""Functions from source: runtimes (an image plus faasd's wrapper), code layers and deploy-time checks.

A runtime is an imported image with one more layer, faasd's wrapper for its language
(``handlers/runtimes/<language>/``). A source function's version is that runtime's layers, held
in the layer store, plus one small layer of its own code: it is imported like any image, so
versions, rollback, limits and logs work as for image functions. Whatever runs the code before
it is deployed (installing its dependencies, compiling it, loading the entry) runs in a runc
container of the runtime.
"""
