/*
 * Shared memory for the bulk regions (shm.ts): the one thing Node cannot do itself is map a
 * file. With it, a region's bytes are the same physical pages in the coordinator and in a worker, so
 * weights and gradients cross between the processes without read(2)/write(2) copies; the coordinator even
 * maps the regions inside its WebAssembly memory (MAP_FIXED over the arena's pages, optim/kernels.ts), so
 * its SIMD kernels read every rank's gradients and write the weights the workers read, in place.
 *
 * N-API only (ABI-stable across Node versions); built by tools/build-native.mjs at `npm ci`, optional:
 * without it the regions use pread/pwrite as before.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static napi_value fail(napi_env env, const char *what, int err) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value code, text, error;
  napi_create_string_utf8(env, err == ENOSPC ? "ENOSPC" : err == ENOMEM ? "ENOMEM" : err == EBADF ? "EBADF" : "ESHM", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  napi_throw(env, error);
  return NULL;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_type_error(env, NULL, "shm: wrong number of arguments: this is a bug");
    return 0;
  }
  return 1;
}

static int integer(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok || *out < 0) {
    napi_throw_type_error(env, NULL, "shm: a non-negative integer was expected: this is a bug");
    return 0;
  }
  return 1;
}

/* pageSize(): the unit of every mapping. */
static napi_value page_size(napi_env env, napi_callback_info info) {
  napi_value out;
  napi_create_int64(env, sysconf(_SC_PAGESIZE), &out);
  return out;
}

/*
 * reserve(fd, bytes): allocates the file's first `bytes` now. A page of a mapped tmpfs file that cannot be
 * allocated when first touched kills the process with SIGBUS; allocated here, a full /dev/shm is an ENOSPC
 * error at start instead.
 */
static napi_value reserve(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t fd, bytes;
  if (!args(env, info, 2, argv) || !integer(env, argv[0], &fd) || !integer(env, argv[1], &bytes)) return NULL;
  int err = posix_fallocate((int)fd, 0, (off_t)bytes);
  if (err) return fail(env, "posix_fallocate", err);
  return NULL;
}

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/* map(fd, bytes): an ArrayBuffer over the file's first `bytes`, shared with every process mapping it; unmapped when collected. */
static napi_value map(napi_env env, napi_callback_info info) {
  napi_value argv[2], buffer;
  int64_t fd, bytes;
  if (!args(env, info, 2, argv) || !integer(env, argv[0], &fd) || !integer(env, argv[1], &bytes)) return NULL;
  void *p = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
  if (p == MAP_FAILED) return fail(env, "mmap", errno);
  if (napi_create_external_arraybuffer(env, p, (size_t)bytes, unmap, (void *)(uintptr_t)bytes, &buffer) != napi_ok) {
    munmap(p, (size_t)bytes);
    return fail(env, "napi_create_external_arraybuffer", ENOMEM);
  }
  return buffer;
}

/*
 * mapInto(buffer, byteOffset, bytes, fd): the file's first `bytes` take the place of those bytes of the
 * buffer, an ArrayBuffer or a Uint8Array over all of a SharedArrayBuffer (a WebAssembly memory that never
 * grows: V8 changes its pages only when it grows or is freed).
 */
static napi_value map_into(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t offset, bytes, fd;
  void *data;
  size_t size;
  if (!args(env, info, 4, argv)) return NULL;
  /* A Uint8Array over the whole buffer stands for a SharedArrayBuffer (a shared WebAssembly memory), which
   * N-API before Node 22 cannot take as such; its data pointer is the buffer's. */
  bool typed = false;
  napi_typedarray_type type;
  napi_value backing;
  size_t view_offset = 0;
  if (napi_is_typedarray(env, argv[0], &typed) == napi_ok && typed) {
    if (napi_get_typedarray_info(env, argv[0], &type, &size, &data, &backing, &view_offset) != napi_ok || type != napi_uint8_array || view_offset != 0) {
      napi_throw_type_error(env, NULL, "shm.mapInto: a Uint8Array over a whole buffer was expected: this is a bug");
      return NULL;
    }
  } else if (napi_get_arraybuffer_info(env, argv[0], &data, &size) != napi_ok) {
    napi_throw_type_error(env, NULL, "shm.mapInto: an ArrayBuffer was expected: this is a bug");
    return NULL;
  }
  if (!integer(env, argv[1], &offset) || !integer(env, argv[2], &bytes) || !integer(env, argv[3], &fd)) return NULL;
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t at = (uintptr_t)data + (uintptr_t)offset;
  if (at % page || bytes % page || bytes == 0 || (uint64_t)(offset + bytes) > size) {
    napi_throw_range_error(env, NULL, "shm.mapInto: the range must be whole pages inside the buffer: this is a bug");
    return NULL;
  }
  if (mmap((void *)at, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, (int)fd, 0) == MAP_FAILED) return fail(env, "mmap", errno);
  return NULL;
}

NAPI_MODULE_INIT() {
  static const struct { const char *name; napi_callback f; } fns[] = {
    { "pageSize", page_size }, { "reserve", reserve }, { "map", map }, { "mapInto", map_into },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].f, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}
