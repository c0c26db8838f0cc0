/* Context for the binding-overhead benchmark (bench/binding.ts): where the addon's time goes.
 * A bare Node-API module (no node-addon-api, no argument checks) with three functions:
 *   noop()     returns at once: what a JS -> C -> JS call costs by itself;
 *   sys()      one getppid(2): a system call made from JS, one call at a time;
 *   loop(n)    n getppid(2) calls in a C loop inside the same process.
 * sys() minus loop()'s per-call time is what running JS between system calls adds; when it is
 * much more than noop(), the call itself is cheap and the time goes into running again after
 * each system call (caches and TLB refilled: on a host with page-table isolation and no PCID,
 * every system call flushes the TLB). Built by the benchmark with cc -shared; loaded with
 * process.dlopen. */
#include <node_api.h>
#include <sys/syscall.h>
#include <unistd.h>

static napi_value Noop(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  return NULL;
}

static napi_value Sys(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  syscall(SYS_getppid);
  return NULL;
}

static napi_value Loop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "loop(n): n must be a number");
    return NULL;
  }
  for (int32_t i = 0; i < n; i++) syscall(SYS_getppid);
  return NULL;
}

NAPI_MODULE_INIT() {
  static const struct { const char *name; napi_callback fn; } fns[] = {{"noop", Noop}, {"sys", Sys}, {"loop", Loop}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) return NULL;
  }
  return exports;
}
