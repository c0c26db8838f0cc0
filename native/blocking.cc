#include "blocking.h"

#include "addon.h"
#include "errors.h"

namespace mk {

BlockingCall::BlockingCall() {
  uv_mutex_init(&mutex_);
  uv_cond_init(&cond_);
}

BlockingCall::~BlockingCall() {
  uv_cond_destroy(&cond_);
  uv_mutex_destroy(&mutex_);
}

Napi::Promise BlockingCall::Start(Napi::Env env, Addon& addon, BlockingCall* call, const char* resourceName) {
  napi_value promise;
  napi_value resource;
  napi_value name;
  napi_status status = napi_create_promise(env, &call->deferred_, &promise);
  if (status == napi_ok) status = napi_create_object(env, &resource);
  if (status == napi_ok) status = napi_create_string_utf8(env, resourceName, NAPI_AUTO_LENGTH, &name);
  if (status == napi_ok) status = napi_create_reference(env, resource, 1, &call->resource_);
  if (status == napi_ok) status = napi_async_init(env, resource, name, &call->context_);
  if (status != napi_ok) {
    if (call->resource_ != nullptr) napi_delete_reference(env, call->resource_);
    delete call;  // nothing native was started yet
    NAPI_THROW_IF_FAILED(env, status, Napi::Promise());
  }
  call->env_ = env;
  call->registry_ = &addon.registry;
  uv_async_init(addon.registry.Loop(), &call->async_, OnDone);
  call->async_.data = call;
  addon.registry.Add(call);
  int rc = uv_thread_create(&call->thread_, ThreadMain, call);
  if (rc < 0) {
    // No thread (EAGAIN: the system is out of threads): the call fails at once.
    addon.registry.Remove(call);
    addon.registry.Close(reinterpret_cast<uv_handle_t*>(&call->async_), OnClosed);
    call->ReleaseContext();
    napi_reject_deferred(env, call->deferred_, ErrnoError(env, -rc, "uv_thread_create").Value());
  }
  return Napi::Promise(env, promise);
}

void BlockingCall::ThreadMain(void* arg) {
  auto* call = static_cast<BlockingCall*>(arg);
  call->Run();
  uv_async_send(&call->async_);
}

void BlockingCall::Cancel() {
  uv_mutex_lock(&mutex_);
  cancelled_ = true;
  uv_cond_signal(&cond_);
  uv_mutex_unlock(&mutex_);
}

bool BlockingCall::Cancelled() {
  uv_mutex_lock(&mutex_);
  bool cancelled = cancelled_;
  uv_mutex_unlock(&mutex_);
  return cancelled;
}

void BlockingCall::SleepUnlessCancelled(uint64_t ns) {
  uv_mutex_lock(&mutex_);
  // A spurious wakeup only shortens one sleep of a polling wait.
  if (!cancelled_) uv_cond_timedwait(&cond_, &mutex_, ns);
  uv_mutex_unlock(&mutex_);
}

void BlockingCall::OnDone(uv_async_t* async) {
  auto* call = static_cast<BlockingCall*>(async->data);
  uv_thread_join(&call->thread_);  // Run() has returned: the thread is only exiting
  call->registry_->Remove(call);
  call->registry_->Close(reinterpret_cast<uv_handle_t*>(&call->async_), OnClosed);
  call->Settle();  // the call itself is freed by OnClosed, on a later loop iteration
}

void BlockingCall::Settle() {
  // Raw Node-API calls that report failure instead of throwing: nothing may throw out of a uv
  // callback (std::terminate), whatever state the environment is in.
  napi_handle_scope handleScope;
  if (napi_open_handle_scope(env_, &handleScope) != napi_ok) {
    ReleaseContext();
    return;
  }
  napi_value resource;
  napi_callback_scope callbackScope;
  if (napi_get_reference_value(env_, resource_, &resource) == napi_ok && resource != nullptr &&
      napi_open_callback_scope(env_, resource, context_, &callbackScope) == napi_ok) {
    Napi::Env env(env_);
    try {
      napi_resolve_deferred(env_, deferred_, Result(env));
    } catch (const Napi::Error& e) {
      napi_reject_deferred(env_, deferred_, e.Value());
    } catch (...) {
      // nothing else is thrown here; never let it out of the uv callback
    }
    // Closing the scope runs the microtasks the settlement queued.
    napi_close_callback_scope(env_, callbackScope);
  }
  napi_close_handle_scope(env_, handleScope);
  ReleaseContext();
}

void BlockingCall::ReleaseContext() {
  // Neither call runs JavaScript: both are allowed while the environment is torn down.
  if (context_ != nullptr) napi_async_destroy(env_, context_);
  if (resource_ != nullptr) napi_delete_reference(env_, resource_);
  context_ = nullptr;
  resource_ = nullptr;
}

void BlockingCall::Teardown() {
  Cancel();
  // A cancelled wait returns within one poll step; a halt in the kernel takes as long as the
  // kernel does (at most 30 s), and the thread must not outlive this library.
  uv_thread_join(&thread_);
  // No JavaScript now: the promise stays pending and goes away with the environment. Its async
  // context and the reference to its resource are Node-API allocations that the environment does
  // not free (LeakSanitizer found 80 bytes per call torn down while in flight): released here.
  // The napi_deferred (8 bytes) cannot be: Node-API frees it only when the promise is settled,
  // which needs JavaScript (scripts/sanitize/lsan.supp).
  ReleaseContext();
  registry_->Close(reinterpret_cast<uv_handle_t*>(&async_), OnClosed);
  registry_->Remove(this);
}

void BlockingCall::OnClosed(uv_handle_t* handle) {
  auto* call = static_cast<BlockingCall*>(handle->data);
  Registry* registry = call->registry_;
  delete call;
  registry->Closed();
}

}  // namespace mk
