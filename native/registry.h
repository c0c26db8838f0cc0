// Every native object that outlives one call (fd handles with their uv_poll, blocking calls with
// their thread and uv_async) is a Resource in its addon instance's Registry, so that the end of
// the environment (a worker's exit or terminate(), the end of the main thread) can release it.
//
// Why an *async* cleanup hook: Node runs environment cleanup hooks, later destroys the napi_env
// (running the finalizers of our JS objects and deleting the addon instance) and finally unloads
// this library. A uv_close() callback started by a plain cleanup hook only runs after all that
// (Node does not spin the loop for handles it does not know), so it would call into freed memory
// or unloaded code: the SIGSEGV of issue 16. While an async cleanup hook is pending, Node keeps
// running the loop and keeps the napi_env (and so the library) alive; the Registry reports the
// hook done only once every resource is released and every close callback has run.
#pragma once

#include <node_api.h>
#include <uv.h>

namespace mk {

class Registry;

class Resource {
 public:
  virtual ~Resource() = default;
  // The environment is going away: release everything now (threads joined, fds closed, uv
  // handles closing through Registry::Close), call no JavaScript, then leave the registry.
  virtual void Teardown() = 0;

 private:
  friend class Registry;
  Resource* prev_ = nullptr;
  Resource* next_ = nullptr;
};

class Registry {
 public:
  // Registers the async cleanup hook (throws when Node-API refuses).
  explicit Registry(napi_env env);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  void Add(Resource* resource);
  void Remove(Resource* resource);
  // uv_close() that teardown waits for; `onClosed` must end by calling Closed().
  void Close(uv_handle_t* handle, uv_close_cb onClosed);
  void Closed();
  uv_loop_t* Loop() const { return loop_; }

 private:
  static void OnCleanup(napi_async_cleanup_hook_handle hook, void* arg);
  void MaybeFinish();

  uv_loop_t* loop_ = nullptr;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  Resource* head_ = nullptr;
  int closing_ = 0;  // uv handles whose close callback has not run yet
  bool tearingDown_ = false;
};

}  // namespace mk
