// reboot(2) with the three multikernel commands only: no other command is reachable from JS.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
#include "blocking.h"
#include "errors.h"
#include "uapi/multikernel.h"

namespace mk {

namespace {

// Returns 0 or a positive errno.
int MultikernelReboot(unsigned cmd, int id) {
  uapi::multikernel_boot_args args{id};
  if (syscall(SYS_reboot, uapi::LINUX_REBOOT_MAGIC1, uapi::LINUX_REBOOT_MAGIC2, cmd, &args) < 0) return errno;
  return 0;
}

// A graceful halt waits up to 30 s in the kernel for the instance to acknowledge: on a thread of
// its own (blocking.h). It cannot be cancelled; a worker that ends meanwhile waits for it.
class HaltCall : public BlockingCall {
 public:
  explicit HaltCall(int id) : id_(id) {}

 protected:
  void Run() override { err_ = MultikernelReboot(uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT, id_); }
  Napi::Value Result(Napi::Env env) override {
    if (err_ != 0) throw ErrnoError(env, err_, "reboot");
    return env.Undefined();
  }

 private:
  int id_;
  int err_ = 0;
};

}  // namespace

Napi::Value Addon::RebootStart(const Napi::CallbackInfo& info) {
  int id = ArgMkId(info[0]);
  if (int err = MultikernelReboot(uapi::LINUX_REBOOT_CMD_MULTIKERNEL, id)) throw ErrnoError(info.Env(), err, "reboot");
  return info.Env().Undefined();
}

Napi::Value Addon::RebootHalt(const Napi::CallbackInfo& info) {
  int id;
  try {
    id = ArgMkId(info[0]);
  } catch (const Napi::Error& e) {
    return RejectedPromise(info.Env(), e);
  }
  return BlockingCall::Start(info.Env(), *this, new HaltCall(id), "multikernel:reboot");
}

Napi::Value Addon::RebootHaltForce(const Napi::CallbackInfo& info) {
  int id = ArgMkId(info[0]);
  if (int err = MultikernelReboot(uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, id)) {
    throw ErrnoError(info.Env(), err, "reboot");
  }
  return info.Env().Undefined();
}

}  // namespace mk
