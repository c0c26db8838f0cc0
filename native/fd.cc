// Plain fd operations for non-blocking fds: the byte-stream side of FdDuplex and vsock.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

namespace {

struct Span {
  uint8_t* data;
  size_t length;
};

// buffer[offset, offset + length) of a Uint8Array (Buffer included).
Span ArgSpan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value value = info[1];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw TypeErrorWithCode(env, "The \"buffer\" argument must be an instance of Uint8Array", "ERR_INVALID_ARG_TYPE");
  }
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  size_t size = array.ElementLength();
  size_t offset = static_cast<size_t>(ArgInt(info[2], "offset", 0, static_cast<int64_t>(size)));
  size_t length = static_cast<size_t>(ArgInt(info[3], "length", 0, static_cast<int64_t>(size - offset)));
  return Span{array.Data() + offset, length};
}

}  // namespace

Napi::Value Addon::Socketpair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
    throw ErrnoError(env, errno, "socketpair");
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, fds[0]));
  result.Set(1u, Napi::Number::New(env, fds[1]));
  return result;
}

Napi::Value Addon::SocketError(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &len) < 0) throw ErrnoError(info.Env(), errno, "getsockopt");
  return Napi::Number::New(info.Env(), value);
}

Napi::Value Addon::Read(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  Span span = ArgSpan(info);
  for (;;) {
    ssize_t n = read(fd, span.data, span.length);
    if (n >= 0) return Napi::Number::New(info.Env(), static_cast<double>(n));
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "read");
  }
}

Napi::Value Addon::Write(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  Span span = ArgSpan(info);
  for (;;) {
    ssize_t n = write(fd, span.data, span.length);
    if (n >= 0) return Napi::Number::New(info.Env(), static_cast<double>(n));
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "write");
  }
}

Napi::Value Addon::ShutdownWrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  if (shutdown(fd, SHUT_WR) < 0) throw ErrnoError(info.Env(), errno, "shutdown");
  return info.Env().Undefined();
}

Napi::Value Addon::Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  // Forget the transport choice whatever close() says: after close(2) the number is free.
  multikernelVsockFds_.erase(fd);
  // Linux releases the fd even when close(2) fails with EINTR, so it is never retried.
  if (close(fd) < 0 && errno != EINTR) throw ErrnoError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

}  // namespace mk
