// mount/umount of the multikernel kernfs at its fixed mount point, and nothing else.
#include <sys/mount.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "uapi/multikernel.h"

namespace mk {

Napi::Value Addon::MountMultikernel(const Napi::CallbackInfo& info) {
  ArgCountAtMost(info, 0, "mountMultikernel");
  if (mount("none", uapi::MULTIKERNEL_MOUNT_POINT, uapi::MULTIKERNEL_FS_TYPE, 0, nullptr) < 0) {
    throw ErrnoError(info.Env(), errno, "mount", uapi::MULTIKERNEL_MOUNT_POINT);
  }
  return info.Env().Undefined();
}

Napi::Value Addon::UmountMultikernel(const Napi::CallbackInfo& info) {
  ArgCountAtMost(info, 0, "umountMultikernel");
  if (umount(uapi::MULTIKERNEL_MOUNT_POINT) < 0) {
    throw ErrnoError(info.Env(), errno, "umount", uapi::MULTIKERNEL_MOUNT_POINT);
  }
  return info.Env().Undefined();
}

}  // namespace mk
