// AF_VSOCK stream sockets, non-blocking. The multikernel transport is selected with
// setsockopt(AF_VSOCK, SO_VM_SOCKETS_TRANSPORT, VSOCK_TRANSPORT_MULTIKERNEL) before bind/connect.
// A socket created without it can only connect to CID 1 (VMADDR_CID_LOCAL, loopback): tests
// can use that and can never reach the host's hypervisor (CID 2) by accident. Sockets are
// FdHandles (fd_handle.h), and the transport choice is recorded on the handle.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "fd_handle.h"
#include "uapi/multikernel.h"

namespace mk {

namespace {

static_assert(AF_VSOCK == uapi::AF_VSOCK_, "AF_VSOCK");
using sockaddr_vm = uapi::sockaddr_vm_;

sockaddr_vm Address(uint32_t cid, uint32_t port) {
  sockaddr_vm addr;
  std::memset(&addr, 0, sizeof addr);
  addr.svm_family = uapi::AF_VSOCK_;
  addr.svm_cid = cid;
  addr.svm_port = port;
  return addr;
}

Napi::Object AddressObject(Napi::Env env, const sockaddr_vm& addr) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("cid", Napi::Number::New(env, addr.svm_cid));
  obj.Set("port", Napi::Number::New(env, addr.svm_port));
  return obj;
}

uint32_t ArgU32(Napi::Value value, const char* name) { return static_cast<uint32_t>(ArgInt(value, name, 0, UINT32_MAX)); }

}  // namespace

Napi::Value Addon::VsockSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool multikernel = ArgBool(info[0], "multikernel");
  int fd = socket(uapi::AF_VSOCK_, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket");
  if (multikernel) {
    int value = uapi::VSOCK_TRANSPORT_MULTIKERNEL;
    if (setsockopt(fd, uapi::AF_VSOCK_, uapi::SO_VM_SOCKETS_TRANSPORT, &value, sizeof value) < 0) {
      int err = errno;
      close(fd);
      throw ErrnoError(env, err, "setsockopt");
    }
  }
  return FdHandle::Create(env, *this, fd, multikernel);
}

Napi::Value Addon::VsockBind(const Napi::CallbackInfo& info) {
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  sockaddr_vm addr = Address(ArgU32(info[1], "cid"), ArgU32(info[2], "port"));
  if (bind(socket->fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) throw ErrnoError(info.Env(), errno, "bind");
  return info.Env().Undefined();
}

Napi::Value Addon::VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  uint32_t cid = ArgU32(info[1], "cid");
  uint32_t port = ArgU32(info[2], "port");
  // The transport is a property of the socket object, which only vsockSocket() creates: no fd
  // number reuse can make a loopback socket look like a multikernel one.
  if (cid != uapi::VMADDR_CID_LOCAL_ && !socket->multikernelVsock()) {
    throw RangeErrorWithCode(env, "A vsock socket without the multikernel transport may only connect to CID 1 "
                                  "(VMADDR_CID_LOCAL), got " + std::to_string(cid));
  }
  sockaddr_vm addr = Address(cid, port);
  for (;;) {
    if (connect(socket->fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return Napi::Boolean::New(env, true);
    if (errno == EINPROGRESS) return Napi::Boolean::New(env, false);
    if (errno != EINTR) throw ErrnoError(env, errno, "connect");
  }
}

Napi::Value Addon::VsockListen(const Napi::CallbackInfo& info) {
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  int backlog = static_cast<int>(ArgInt(info[1], "backlog", 0, 65535));
  if (listen(socket->fd(), backlog) < 0) throw ErrnoError(info.Env(), errno, "listen");
  return info.Env().Undefined();
}

Napi::Value Addon::VsockAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  sockaddr_vm addr;
  for (;;) {
    socklen_t len = sizeof addr;
    int conn = accept4(socket->fd(), reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn >= 0) {
      Napi::Object connection = FdHandle::Create(env, *this, conn);
      Napi::Object result = AddressObject(env, addr);
      result.Set("socket", connection);
      return result;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    if (errno != EINTR) throw ErrnoError(env, errno, "accept4");
  }
}

Napi::Value Addon::VsockLocalAddress(const Napi::CallbackInfo& info) {
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  sockaddr_vm addr;
  socklen_t len = sizeof addr;
  if (getsockname(socket->fd(), reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    throw ErrnoError(info.Env(), errno, "getsockname");
  }
  if (addr.svm_family != uapi::AF_VSOCK_) throw ErrnoError(info.Env(), EAFNOSUPPORT, "getsockname");
  return AddressObject(info.Env(), addr);
}

Napi::Value Addon::VsockRemoteAddress(const Napi::CallbackInfo& info) {
  FdHandle* socket = FdHandle::Arg(info[0], "socket");
  sockaddr_vm addr;
  socklen_t len = sizeof addr;
  if (getpeername(socket->fd(), reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    throw ErrnoError(info.Env(), errno, "getpeername");
  }
  if (addr.svm_family != uapi::AF_VSOCK_) throw ErrnoError(info.Env(), EAFNOSUPPORT, "getpeername");
  return AddressObject(info.Env(), addr);
}

}  // namespace mk
