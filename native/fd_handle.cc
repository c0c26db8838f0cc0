#include "fd_handle.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

namespace {

// Marks the JS objects that are FdHandles of this library (napi_type_tag_object), so that no
// other object, not even one with FdHandle.prototype, is ever unwrapped as one.
const napi_type_tag kFdHandleTag = {0x6d756c74696b6572ULL, 0x6e656c4664486e64ULL};

struct Span {
  uint8_t* data;
  size_t length;
};

// buffer[offset, offset + length) of a Uint8Array (Buffer included), from info[0..2].
Span ArgSpan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value value = info[0];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw TypeErrorWithCode(env, "The \"buffer\" argument must be an instance of Uint8Array", "ERR_INVALID_ARG_TYPE");
  }
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  size_t size = array.ElementLength();
  size_t offset = static_cast<size_t>(ArgInt(info[1], "offset", 0, static_cast<int64_t>(size)));
  size_t length = static_cast<size_t>(ArgInt(info[2], "length", 0, static_cast<int64_t>(size - offset)));
  return Span{array.Data() + offset, length};
}

}  // namespace

int DupCloexec(int fd) { return static_cast<int>(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0)); }

Napi::Function FdHandle::Define(Napi::Env env) {
  return DefineClass(env, "FdHandle",
                     {
                         InstanceAccessor<&FdHandle::GetFd>("fd"),
                         InstanceMethod<&FdHandle::Read>("read"),
                         InstanceMethod<&FdHandle::Write>("write"),
                         InstanceMethod<&FdHandle::ShutdownWrite>("shutdownWrite"),
                         InstanceMethod<&FdHandle::SocketError>("socketError"),
                         InstanceMethod<&FdHandle::Watch>("watch"),
                         InstanceMethod<&FdHandle::Unwatch>("unwatch"),
                         InstanceMethod<&FdHandle::Close>("close"),
                     });
}

FdHandle::FdHandle(const Napi::CallbackInfo& info)
    // The handle itself is the async resource: Node 20 holds a resource weakly, and a fresh object
    // (node-addon-api's default) could be collected while watching, losing the caller's
    // AsyncLocalStorage store; the handle is strongly referenced for as long as a watch is active.
    : Napi::ObjectWrap<FdHandle>(info), context_(info.Env(), "multikernel:FdHandle", info.This().As<Napi::Object>()) {
  Napi::Env env = info.Env();
  // Only Create() constructs handles: it raises the addon's flag around the one construction it
  // makes, which JavaScript cannot do. (It used to pass the addon instance as a napi External:
  // node allocates 40 bytes of bookkeeping per External and frees them only when V8 collects it,
  // which never happens for the handles still alive when a worker ends; LeakSanitizer found
  // those bytes leaked per handle on every worker teardown.)
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon == nullptr || !addon->creatingFdHandle) {
    throw Napi::TypeError::New(env, "Illegal constructor: FdHandles come from the addon's functions");
  }
  addon->creatingFdHandle = false;
  NAPI_THROW_IF_FAILED_VOID(env, napi_type_tag_object(env, info.This(), &kFdHandleTag));
  registry_ = &addon->registry;
}

Napi::Object FdHandle::Create(Napi::Env env, Addon& addon, int fd, bool multikernelVsock) {
  Napi::Object object;
  addon.creatingFdHandle = true;
  try {
    object = addon.fdHandleClass.New({});
  } catch (...) {
    addon.creatingFdHandle = false;
    close(fd);
    throw;
  }
  addon.creatingFdHandle = false;
  FdHandle* self = Unwrap(object);
  self->fd_ = fd;
  self->multikernelVsock_ = multikernelVsock;
  self->registry_->Add(self);
  return object;
}

FdHandle* FdHandle::Arg(Napi::Value value, const char* name) {
  Napi::Env env = value.Env();
  bool tagged = false;
  if (value.IsObject()) NAPI_THROW_IF_FAILED(env, napi_check_object_type_tag(env, value, &kFdHandleTag, &tagged), nullptr);
  if (!tagged) {
    throw TypeErrorWithCode(env, std::string("The \"") + name + "\" argument must be an FdHandle", "ERR_INVALID_ARG_TYPE");
  }
  return Unwrap(value.As<Napi::Object>());
}

FdHandle::~FdHandle() { CloseNow(false); }

void FdHandle::Teardown() { CloseNow(false); }

Napi::Value FdHandle::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value FdHandle::Read(const Napi::CallbackInfo& info) {
  Span span = ArgSpan(info);
  for (;;) {
    ssize_t n = read(fd_, span.data, span.length);
    if (n >= 0) return Napi::Number::New(info.Env(), static_cast<double>(n));
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "read");
  }
}

Napi::Value FdHandle::Write(const Napi::CallbackInfo& info) {
  Span span = ArgSpan(info);
  for (;;) {
    ssize_t n = write(fd_, span.data, span.length);
    if (n >= 0) return Napi::Number::New(info.Env(), static_cast<double>(n));
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "write");
  }
}

Napi::Value FdHandle::ShutdownWrite(const Napi::CallbackInfo& info) {
  if (shutdown(fd_, SHUT_WR) < 0) throw ErrnoError(info.Env(), errno, "shutdown");
  return info.Env().Undefined();
}

Napi::Value FdHandle::SocketError(const Napi::CallbackInfo& info) {
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &value, &len) < 0) throw ErrnoError(info.Env(), errno, "getsockopt");
  return Napi::Number::New(info.Env(), value);
}

Napi::Value FdHandle::Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int events = static_cast<int>(ArgInt(info[0], "events", 1, UV_READABLE | UV_WRITABLE | UV_DISCONNECT));
  if (!info[1].IsFunction()) {
    throw TypeErrorWithCode(env, "The \"callback\" argument must be of type function", "ERR_INVALID_ARG_TYPE");
  }
  if (fd_ < 0) throw ErrnoError(env, EBADF, "uv_poll_start");
  if (poll_ == nullptr) {
    auto* poll = new Poll;
    int rc = uv_poll_init(registry_->Loop(), &poll->handle, fd_);
    if (rc < 0) {
      delete poll;  // uv_poll_init registered nothing when it failed
      throw ErrnoError(env, -rc, "uv_poll_init");
    }
    poll->handle.data = this;
    poll->registry = registry_;
    poll_ = poll;
  }
  // A new reference each time rather than a comparison: napi_strict_equals refuses to run while
  // the worker is being terminated, and this must not fail then.
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  int rc = uv_poll_start(&poll_->handle, events, OnPoll);
  if (rc < 0) throw ErrnoError(env, -rc, "uv_poll_start");
  if (!watching_) {
    napi_reference_ref(env, JsReference(), nullptr);
    watching_ = true;
  }
  return env.Undefined();
}

Napi::Value FdHandle::Unwatch(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr) uv_poll_stop(&poll_->handle);
  StopWatching(true);
  return info.Env().Undefined();
}

Napi::Value FdHandle::Close(const Napi::CallbackInfo& info) {
  bool wasOpen = fd_ >= 0;
  int err = CloseNow(true);
  if (wasOpen) callback_.Reset();  // let the stream behind the callback be collected
  // Linux releases the fd even when close(2) fails, so the handle is closed either way.
  if (err != 0) throw ErrnoError(info.Env(), err, "close");
  return info.Env().Undefined();
}

napi_ref FdHandle::JsReference() const { return static_cast<const Napi::ObjectWrap<FdHandle>&>(*this); }

void FdHandle::StopWatching(bool unref) {
  if (!watching_) return;
  watching_ = false;
  // Raw Node-API, which reports instead of throwing: this also runs in uv callbacks.
  if (unref) napi_reference_unref(Env(), JsReference(), nullptr);
}

int FdHandle::CloseNow(bool unref) {
  if (fd_ < 0) return 0;
  if (poll_ != nullptr) {
    // uv_close stops the poll (and drops the fd from epoll) before the fd is closed below.
    registry_->Close(reinterpret_cast<uv_handle_t*>(&poll_->handle), OnPollClosed);
    poll_ = nullptr;
  }
  StopWatching(unref);
  int err = 0;
  // EINTR from close(2) still releases the fd on Linux: never retried.
  if (close(fd_) < 0 && errno != EINTR) err = errno;
  fd_ = -1;
  registry_->Remove(this);
  return err;
}

void FdHandle::OnPollClosed(uv_handle_t* handle) {
  auto* poll = reinterpret_cast<Poll*>(handle);
  Registry* registry = poll->registry;
  delete poll;
  registry->Closed();
}

void FdHandle::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<FdHandle*>(handle->data);
  napi_env env = self->Env();
  // Raw Node-API calls: a throwing callback, or a worker being terminated (process.exit() in the
  // callback), must not end in a C++ exception that can no longer be turned into JS.
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value argv[2];
  napi_value receiver;
  napi_value callback;
  napi_value result;
  if (napi_get_reference_value(env, self->callback_, &callback) == napi_ok &&
      napi_get_reference_value(env, self->JsReference(), &receiver) == napi_ok &&
      napi_create_int32(env, status, &argv[0]) == napi_ok && napi_create_int32(env, events, &argv[1]) == napi_ok) {
    // libuv stopped the poll when it reports an error: the handle no longer needs to be kept alive
    // (the receiver, on the stack now, keeps it alive during the call).
    if (status < 0) self->StopWatching(true);
    if (napi_make_callback(env, self->context_, receiver, callback, 2, argv, &result) != napi_ok) {
      bool pending = false;
      napi_value error;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
          napi_get_and_clear_last_exception(env, &error) == napi_ok) {
        // The callback threw: report it like any uncaught exception from an event.
        napi_fatal_exception(env, error);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

Napi::Value Addon::DupFd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  int dup = DupCloexec(fd);
  if (dup < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return FdHandle::Create(info.Env(), *this, dup);
}

// lseek(fd, 0, SEEK_END). On /dev/kmsg this moves the reader past every record logged so far
// (Documentation/ABI/testing/dev-kmsg: "SEEK_END ... skips all records"), so that it reads only
// what is logged from now on; node:fs has no lseek.
Napi::Value Addon::SeekEnd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  off_t offset = lseek(fd, 0, SEEK_END);
  if (offset < 0) throw ErrnoError(info.Env(), errno, "lseek");
  return Napi::Number::New(info.Env(), static_cast<double>(offset));
}

}  // namespace mk
