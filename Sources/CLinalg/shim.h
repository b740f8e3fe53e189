#ifndef CLINALG_SHIM_H
#define CLINALG_SHIM_H
// Debian: cblas.h comes from libopenblas-dev (multiarch include dir), lapacke.h from liblapacke-dev.
#include <cblas.h>
#include <lapacke.h>
// mallopt: keep large tensor buffers in the heap rather than mmap/munmap on every allocation.
#include <malloc.h>
#endif
