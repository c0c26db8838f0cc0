// A system call that may block for long (a flock wait, a graceful halt that the kernel lets
// take 30 s, an image load) runs on a thread of its own, never on libuv's shared pool: the pool
// has 4 threads by default and every fs call of the process queues on it, so parked waits there
// starve the very code that would end them. The thread reports back with uv_async_send on the
// environment's loop, where the promise settles inside a callback scope (microtasks run, async
// context kept). Environment teardown cancels the call, joins its thread and settles nothing:
// no completion ever reaches a torn-down environment.
#pragma once

#include <napi.h>
#include <uv.h>

#include "registry.h"

namespace mk {

class Addon;

class BlockingCall : public Resource {
 public:
  ~BlockingCall() override;

  // Starts `call` (which it now owns) on its own thread and returns its promise.
  static Napi::Promise Start(Napi::Env env, Addon& addon, BlockingCall* call, const char* resourceName);

  // Asks Run() to stop early; only calls that wait in SleepUnlessCancelled() can.
  void Cancel();

 protected:
  BlockingCall();

  // On the call's own thread.
  virtual void Run() = 0;
  // On the loop thread, with JavaScript allowed: the value to resolve with, or throw to reject.
  virtual Napi::Value Result(Napi::Env env) = 0;

  bool Cancelled();
  // Sleeps for `ns` nanoseconds, or less when the call is cancelled meanwhile.
  void SleepUnlessCancelled(uint64_t ns);

  void Teardown() override;

 private:
  static void ThreadMain(void* arg);
  static void OnDone(uv_async_t* async);
  static void OnClosed(uv_handle_t* handle);
  void Settle();
  // napi_async_destroy + napi_delete_reference of the call's async context (idempotent).
  void ReleaseContext();

  Registry* registry_ = nullptr;
  napi_env env_ = nullptr;
  napi_deferred deferred_ = nullptr;
  napi_async_context context_ = nullptr;
  // Node 20 holds an async resource weakly: without this reference a collection during a long
  // wait loses the resource and, with it, the AsyncLocalStorage store of the caller.
  napi_ref resource_ = nullptr;
  uv_thread_t thread_;
  uv_async_t async_;
  uv_mutex_t mutex_;
  uv_cond_t cond_;
  bool cancelled_ = false;  // guarded by mutex_
};

}  // namespace mk
