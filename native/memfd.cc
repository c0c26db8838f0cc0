// memfd_create(2), through syscall(2) so the addon does not need glibc 2.27's wrapper.
#include <linux/memfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

// The kernel limits names to 249 bytes (NAME_MAX minus the "memfd:" prefix).
constexpr size_t kMemfdNameMax = 249;

Napi::Value Addon::MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info[0], "name", kMemfdNameMax);
  long fd = syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "memfd_create");
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

}  // namespace mk
