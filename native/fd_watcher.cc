// FdWatcher: readiness of one fd through uv_poll on this environment's loop (so it works in
// worker threads). The callback runs through MakeCallback with the AsyncContext captured at
// construction, so AsyncLocalStorage survives. The JS object is kept alive (Ref) while started.
// close() is idempotent: stop, then uv_close; the fd itself is never closed here (the owner
// closes it after closing the watcher, as libuv requires). Worker exit closes open watchers
// through an environment cleanup hook.
#include <node_api.h>
#include <uv.h>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

namespace {

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {
                           InstanceMethod("start", &FdWatcher::Start),
                           InstanceMethod("stop", &FdWatcher::Stop),
                           InstanceMethod("close", &FdWatcher::Close),
                       });
  }

  explicit FdWatcher(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<FdWatcher>(info), context_(info.Env(), "multikernel:FdWatcher") {
    Napi::Env env = info.Env();
    if (!info.IsConstructCall()) throw Napi::TypeError::New(env, "Class constructor FdWatcher cannot be invoked without 'new'");
    int fd = ArgFd(info[0], "fd");
    if (!info[1].IsFunction()) {
      throw TypeErrorWithCode(env, "The \"callback\" argument must be of type function", "ERR_INVALID_ARG_TYPE");
    }
    uv_loop_t* loop = nullptr;
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop));
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd);
    if (rc < 0) {
      delete handle_;
      handle_ = nullptr;
      throw ErrnoError(env, -rc, "uv_poll_init");
    }
    handle_->data = this;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    env_ = env;
    NAPI_THROW_IF_FAILED_VOID(env, napi_add_env_cleanup_hook(env, CleanupHook, this));
  }

  ~FdWatcher() override { CloseHandle(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int events = static_cast<int>(ArgInt(info[0], "events", 0, UV_READABLE | UV_WRITABLE | UV_DISCONNECT));
    if (handle_ == nullptr) throw ErrnoError(env, EBADF, "uv_poll_start");
    int rc = uv_poll_start(handle_, events, OnPoll);
    if (rc < 0) throw ErrnoError(env, -rc, "uv_poll_start");
    if (!started_) {
      Ref();
      started_ = true;
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPolling();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    if (started_) {
      started_ = false;
      Unref();
    }
  }

  void CloseHandle() {
    if (handle_ == nullptr) return;
    StopPolling();
    napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    uv_close(reinterpret_cast<uv_handle_t*>(handle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  // At environment teardown references are no longer safe to touch; only release the handle.
  static void CleanupHook(void* arg) {
    auto* self = static_cast<FdWatcher*>(arg);
    if (self->handle_ == nullptr) return;
    uv_poll_stop(self->handle_);
    uv_close(reinterpret_cast<uv_handle_t*>(self->handle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    self->handle_ = nullptr;
    self->started_ = false;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<FdWatcher*>(handle->data);
    napi_env env = self->env_;
    Napi::HandleScope scope(env);
    napi_value argv[2];
    napi_value result;
    // Raw Node-API calls: a throwing callback, or a worker being terminated (process.exit()
    // in the callback), must not end in a C++ exception that can no longer be turned into JS.
    if (napi_create_int32(env, status, &argv[0]) != napi_ok || napi_create_int32(env, events, &argv[1]) != napi_ok) {
      return;
    }
    if (napi_make_callback(env, self->context_, self->Value(), self->callback_.Value(), 2, argv, &result) == napi_ok) {
      return;
    }
    bool pending = false;
    napi_value error;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &error) == napi_ok) {
      // The callback threw: report it like any uncaught exception from an event.
      napi_fatal_exception(env, error);
    }
  }

  Napi::AsyncContext context_;
  Napi::FunctionReference callback_;
  napi_env env_ = nullptr;
  uv_poll_t* handle_ = nullptr;
  bool started_ = false;
};

}  // namespace

Napi::Function DefineFdWatcher(Napi::Env env) { return FdWatcher::Define(env); }

}  // namespace mk
