// sd_notify(3): one datagram to $NOTIFY_SOCKET, a path ("/run/...") or an abstract socket
// ("@name"). Sent with MSG_DONTWAIT so a stuck supervisor can never block the event loop.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

namespace {

// Largest datagram we send; systemd reads at most a few KiB per notification.
constexpr size_t kStateMax = 4096;

}  // namespace

Napi::Value Addon::SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string state = ArgString(info[0], "state", kStateMax);

  char target[sizeof(sockaddr_un::sun_path) + 1];
  size_t targetLen = sizeof target;
  int rc = uv_os_getenv("NOTIFY_SOCKET", target, &targetLen);
  if (rc == UV_ENOENT) return Napi::Boolean::New(env, false);
  if (rc == UV_ENOBUFS) throw ErrnoError(env, ENAMETOOLONG, "sd_notify");
  if (rc < 0) throw ErrnoError(env, -rc, "sd_notify");
  if (targetLen == 0) return Napi::Boolean::New(env, false);

  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (target[0] != '/' && target[0] != '@') throw ErrnoError(env, EAFNOSUPPORT, "sd_notify", target);
  if (targetLen > sizeof addr.sun_path) throw ErrnoError(env, ENAMETOOLONG, "sd_notify", target);
  std::memcpy(addr.sun_path, target, targetLen);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addrLen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + targetLen);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket");
  ssize_t n;
  do {
    n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&addr),
               addrLen);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) throw ErrnoError(env, err, "sendto", target);
  return Napi::Boolean::New(env, true);
}

}  // namespace mk
