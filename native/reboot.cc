// reboot(2) with the three multikernel commands only: no other command is reachable from JS.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"
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

// A graceful halt waits up to 30 s in the kernel for the instance to acknowledge.
class HaltWorker : public Napi::AsyncWorker {
 public:
  HaltWorker(Napi::Env env, int id)
      : Napi::AsyncWorker(env, "multikernel:reboot"), deferred_(Napi::Promise::Deferred::New(env)), id_(id) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { err_ = MultikernelReboot(uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT, id_); }
  void OnOK() override {
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(Env(), err_, "reboot").Value());
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
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
  auto* worker = new HaltWorker(info.Env(), id);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Addon::RebootHaltForce(const Napi::CallbackInfo& info) {
  int id = ArgMkId(info[0]);
  if (int err = MultikernelReboot(uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE, id)) {
    throw ErrnoError(info.Env(), err, "reboot");
  }
  return info.Env().Undefined();
}

}  // namespace mk
