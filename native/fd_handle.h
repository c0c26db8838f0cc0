// FdHandle: an fd owned by the addon, with its readiness watch (uv_poll on this environment's
// loop, so it works in worker threads). Sockets, accepted connections and devices are FdHandles;
// JavaScript never holds their bare numbers, so nothing can close the fd behind the handle's back
// and a stale number can never reach a system call. close() is idempotent and ordered as libuv
// requires: stop the poll, close the uv handle, then close the fd. The environment's teardown
// does the same for every handle still open (see registry.h), and so does the finalizer of a
// handle that was dropped without close().
#pragma once

#include <napi.h>
#include <uv.h>

#include "registry.h"

namespace mk {

class Addon;

// fcntl(fd, F_DUPFD_CLOEXEC, 0): the duplicate, or -1 with errno set. Through syscall(2): with
// node-gyp's _FILE_OFFSET_BITS=64, glibc 2.28+ headers would bind fcntl to fcntl64@GLIBC_2.28,
// and the addon otherwise needs nothing newer than glibc 2.14.
int DupCloexec(int fd);

class FdHandle : public Napi::ObjectWrap<FdHandle>, public Resource {
 public:
  static Napi::Function Define(Napi::Env env);
  // A new handle that owns `fd` from now on (the fd is closed when this throws).
  static Napi::Object Create(Napi::Env env, Addon& addon, int fd, bool multikernelVsock = false);
  // The FdHandle passed as argument `name`, or a TypeError.
  static FdHandle* Arg(Napi::Value value, const char* name);

  explicit FdHandle(const Napi::CallbackInfo& info);
  ~FdHandle() override;

  // -1 once closed (system calls on it then fail with EBADF).
  int fd() const { return fd_; }
  // A vsock socket created with the multikernel transport selected (vsock.cc's CID guard).
  bool multikernelVsock() const { return multikernelVsock_; }

  void Teardown() override;

 private:
  struct Poll {
    uv_poll_t handle;  // first: the close callback gets a pointer to it
    Registry* registry;
  };

  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value ShutdownWrite(const Napi::CallbackInfo& info);
  Napi::Value SocketError(const Napi::CallbackInfo& info);
  Napi::Value Watch(const Napi::CallbackInfo& info);
  Napi::Value Unwatch(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // Releases poll handle and fd; returns close(2)'s errno or 0. `unref` is false where the
  // JS reference must not be touched (teardown, finalizer).
  int CloseNow(bool unref);
  // The reference that ObjectWrap keeps to the JS object (Ref()'d while watching).
  napi_ref JsReference() const;
  void StopWatching(bool unref);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnPollClosed(uv_handle_t* handle);

  Registry* registry_ = nullptr;
  int fd_ = -1;
  bool multikernelVsock_ = false;
  Poll* poll_ = nullptr;
  bool watching_ = false;  // the JS object is referenced while watching
  Napi::FunctionReference callback_;
  Napi::AsyncContext context_;
};

}  // namespace mk
