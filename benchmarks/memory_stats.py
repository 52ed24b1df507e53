"""Memory of one training step: what the math needs, what a step allocates, page faults, RSS.

* ``math_needs``: bytes of the arrays a reference step cannot do without, from the shapes.
* ``traced_training``: tracemalloc (to which NumPy reports every array buffer) from the moment
  the optimizer state and the step are built: the footprint's peak (state, workspaces kept
  between steps, temporaries), what is retained between steps, and the peak of one step's own
  allocations after warm-up. The interpreter and the imports are not counted.
* ``count_numpy_allocations``: NumPy data buffers allocated per step and their total size, through
  a counting NumPy memory handler (NEP 49, ``PyDataMem_SetHandler``) installed with ctypes for
  the measured steps only; None where that is unavailable.
* ``page_faults_per_step``: ``getrusage`` minor / major page-fault deltas per step.
* ``peak_rss_bytes``: the process's high-water resident set (``ru_maxrss``): process-wide, it
  includes the interpreter, every import and every contender run so far.
* ``explicit_sampling_bytes``: what sampling one weight matrix per example would cost instead.
"""
import ctypes
import resource
import sys
import tracemalloc

import numpy as np

__all__ = ["math_needs", "explicit_sampling_bytes", "traced_training", "count_numpy_allocations",
           "page_faults_per_step", "peak_rss_bytes"]


def math_needs(sizes, batch, dtype, estimator="lrt"):
    """Bytes of the arrays a step of ``estimator`` cannot do without, by component.

    P = sum over layers of (2 in*out + out) scalars (two kernel-shaped params and a bias: the
    same count for every estimator of ``reference_step.ESTIMATORS``).

    Returns:
      dict: params, grads, adam_m, adam_v (P each); activations (every layer's input and the
      logits, batch * (sizes[0] + ... + sizes[-1])); then what the estimator's gradient needs
      besides: "lrt", "vd", "svd": squares (every layer's input squared, batch * (sizes[0] +
      ... + sizes[-2])); "reparameterization": sampled_kernels (one W per layer, sum in*out);
      "flipout": perturbations (eps * scale per layer, sum in*out) and signed_inputs (x *
      sign_in, batch * (sizes[0] + ... + sizes[-2])); total (their sum); per_step (grads,
      activations and the estimator's arrays: the part a step must allocate itself, params and
      moments persisting).
    Raises:
      ValueError: an unknown estimator.
    """
    item = np.dtype(dtype).itemsize
    kernels = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    n_params = 2 * kernels + sum(sizes[1:])
    inputs = batch * sum(sizes[:-1])
    out = {key: n_params * item for key in ("params", "grads", "adam_m", "adam_v")}
    out["activations"] = batch * sum(sizes) * item
    if estimator in ("lrt", "vd", "svd"):
        extra = {"squares": inputs * item}
    elif estimator == "reparameterization":
        extra = {"sampled_kernels": kernels * item}
    elif estimator == "flipout":
        extra = {"perturbations": kernels * item, "signed_inputs": inputs * item}
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    out.update(extra)
    out["total"] = sum(out.values())
    out["per_step"] = out["grads"] + out["activations"] + sum(extra.values())
    return out


def explicit_sampling_bytes(sizes, batch, dtype, copies=3):
    """Bytes of explicit per-example weight sampling (one kernel per example, no LRT).

    noise: batch * sum(in * out) * itemsize for the standard normals alone. A step also holds the
    sampled kernels W = loc + scale * noise and, in the backward pass, dL/dW, both of that size:
    ``copies`` = 3 arrays of the noise's size at the least.

    Returns:
      (noise bytes, copies * noise bytes).
    """
    noise = batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    noise *= np.dtype(dtype).itemsize
    return noise, copies * noise


def traced_training(build, warmup=3, steps=3):
    """Builds a step and runs it under tracemalloc; returns (run, stats).

    ``build()`` creates the optimizer state and the step and returns the zero-argument ``run``;
    tracing starts just before it, so imports, the interpreter and data made earlier (the
    initial params, the minibatch) are not counted, while the state (params copy, Adam moments),
    any workspace a step keeps, and every temporary are.

    Returns:
      run, and a dict of bytes: ``footprint_peak`` (peak traced over building, ``warmup`` and
      ``steps`` steps), ``retained`` (traced after the last step: what persists between steps),
      ``step_peak`` (the largest peak of one step's own allocations above its starting point,
      over the ``steps`` steps after warm-up).
    Raises:
      RuntimeError: tracemalloc is already tracing.
    """
    if tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc is already tracing; stop it before measuring a step")
    tracemalloc.start()
    try:
        run = build()
        for _ in range(warmup):
            run()
        footprint_peak = tracemalloc.get_traced_memory()[1]
        step_peak = 0
        for _ in range(steps):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            run()
            peak = tracemalloc.get_traced_memory()[1]
            step_peak = max(step_peak, peak - before)
            footprint_peak = max(footprint_peak, peak)
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return run, {"footprint_peak": footprint_peak, "retained": retained, "step_peak": step_peak}


def page_faults_per_step(run, steps=10):
    """(minor, major) page faults per step: ``getrusage`` deltas over ``steps`` steps."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return ((after.ru_minflt - before.ru_minflt) / steps,
            (after.ru_majflt - before.ru_majflt) / steps)


def peak_rss_bytes():
    """The process's peak resident set size in bytes (``ru_maxrss``; KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ----------------------------------------------------------------- counting NumPy's allocations
_MALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_CALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
_REALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _Allocator(ctypes.Structure):
    # PyDataMemAllocator (numpy/ndarraytypes.h, NumPy >= 1.22)
    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", _MALLOC), ("calloc", _CALLOC),
                ("realloc", _REALLOC), ("free", _FREE)]


class _Handler(ctypes.Structure):
    # PyDataMem_Handler: char name[127]; uint8_t version; PyDataMemAllocator allocator
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8),
                ("allocator", _Allocator)]


class _CountingHandler:
    """A NumPy data-memory handler that forwards to libc and counts. Created once, never freed:
    arrays allocated through it free through it, however long they live."""
    _SET_HANDLER_SLOT = 304  # PyDataMem_SetHandler in NumPy's C-API table (append-only)

    def __init__(self):
        try:
            from numpy._core import multiarray
        except ImportError:  # NumPy < 2
            from numpy.core import multiarray
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                      ctypes.c_char_p]
        table = ctypes.cast(get_pointer(multiarray._ARRAY_API, None),
                            ctypes.POINTER(ctypes.c_void_p))
        self._set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(
            table[self._SET_HANDLER_SLOT])
        libc = ctypes.CDLL(None)
        c_malloc, c_calloc, c_realloc, c_free = libc.malloc, libc.calloc, libc.realloc, libc.free
        c_malloc.restype, c_malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        c_calloc.restype, c_calloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]
        c_realloc.restype, c_realloc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]
        c_free.restype, c_free.argtypes = None, [ctypes.c_void_p]
        self.count, self.nbytes = 0, 0

        def malloc(ctx, size):
            self.count += 1
            self.nbytes += size
            return c_malloc(size)

        def calloc(ctx, nelem, elsize):
            self.count += 1
            self.nbytes += nelem * elsize
            return c_calloc(nelem, elsize)

        def realloc(ctx, ptr, size):
            self.count += 1
            self.nbytes += size
            return c_realloc(ptr, size)

        def free(ctx, ptr, size):
            c_free(ptr)

        self._callbacks = (_MALLOC(malloc), _CALLOC(calloc), _REALLOC(realloc), _FREE(free))
        self._struct = _Handler(b"lrtdense_benchmark_counting", 1,
                                _Allocator(None, *self._callbacks))
        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self.capsule = new_capsule(ctypes.addressof(self._struct), b"mem_handler", None)

    def measure(self, run, steps):
        self.count, self.nbytes = 0, 0
        previous = self._set_handler(self.capsule)
        try:
            for _ in range(steps):
                run()
        finally:
            self._set_handler(previous)
        return self.count / steps, self.nbytes / steps


_HANDLER = []  # the one _CountingHandler, kept alive for the life of the process


def count_numpy_allocations(run, steps=3):
    """(NumPy buffers allocated per step, bytes allocated per step), or None when NumPy's memory
    handler API is unavailable (NumPy < 1.22, or no ctypes access to it)."""
    try:
        if not _HANDLER:
            _HANDLER.append(_CountingHandler())
    except (AttributeError, ImportError, OSError, TypeError, ValueError):
        return None
    return _HANDLER[0].measure(run, steps)
