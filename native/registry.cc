#include "registry.h"

#include <napi.h>

namespace mk {

Registry::Registry(napi_env env) {
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop_));
  NAPI_THROW_IF_FAILED_VOID(env, napi_add_async_cleanup_hook(env, OnCleanup, this, &hook_));
}

Registry::~Registry() {
  // Only reached with the hook still registered when the addon failed to initialise.
  if (hook_ != nullptr) napi_remove_async_cleanup_hook(hook_);
}

void Registry::Add(Resource* resource) {
  resource->prev_ = nullptr;
  resource->next_ = head_;
  if (head_ != nullptr) head_->prev_ = resource;
  head_ = resource;
}

void Registry::Remove(Resource* resource) {
  if (resource->prev_ != nullptr) {
    resource->prev_->next_ = resource->next_;
  } else {
    head_ = resource->next_;
  }
  if (resource->next_ != nullptr) resource->next_->prev_ = resource->prev_;
  resource->prev_ = resource->next_ = nullptr;
  MaybeFinish();
}

void Registry::Close(uv_handle_t* handle, uv_close_cb onClosed) {
  closing_++;
  uv_close(handle, onClosed);
}

void Registry::Closed() {
  closing_--;
  MaybeFinish();
}

void Registry::OnCleanup(napi_async_cleanup_hook_handle hook, void* arg) {
  auto* self = static_cast<Registry*>(arg);
  self->hook_ = hook;
  self->tearingDown_ = true;
  // Each Teardown() removes its resource, so this ends.
  while (self->head_ != nullptr) self->head_->Teardown();
  self->MaybeFinish();
}

void Registry::MaybeFinish() {
  if (!tearingDown_ || head_ != nullptr || closing_ != 0 || hook_ == nullptr) return;
  napi_async_cleanup_hook_handle hook = hook_;
  hook_ = nullptr;
  // From here on Node may destroy the napi_env, this addon instance included.
  napi_remove_async_cleanup_hook(hook);
}

}  // namespace mk
