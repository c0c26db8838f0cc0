// Multikernel user-space ABI, defined here on purpose: distro <linux/kexec.h> has
// KEXEC_FILE_NO_CMA at 0x10 and no KEXEC_MULTIKERNEL, and the reboot commands, the vsock
// transport option and struct multikernel_boot_args exist only in the multikernel tree.
// Source: docs/kernel-interface.md sections 1, 2, 3.1 and 6.3. Mirrored by lib/uapi.ts
// (a native test checks that the two agree).
#pragma once

#include <cstdint>

namespace mk::uapi {

// kexec_file_load(2) flag word (low 16 bits)
constexpr unsigned long KEXEC_FILE_UNLOAD = 0x1;
constexpr unsigned long KEXEC_FILE_ON_CRASH = 0x2;
constexpr unsigned long KEXEC_FILE_NO_INITRAMFS = 0x4;
constexpr unsigned long KEXEC_FILE_DEBUG = 0x8;
constexpr unsigned long KEXEC_MULTIKERNEL = 0x10;
constexpr unsigned KEXEC_MK_ID_SHIFT = 5;
constexpr unsigned long KEXEC_MK_ID_MASK = 0xffe0;
constexpr int MK_ID_MIN = 1;
constexpr int MK_ID_MAX = 2047;

constexpr unsigned long KEXEC_MK_ID(unsigned long id) { return (id << KEXEC_MK_ID_SHIFT) & KEXEC_MK_ID_MASK; }
constexpr unsigned long KEXEC_GET_MK_ID(unsigned long flags) { return (flags & KEXEC_MK_ID_MASK) >> KEXEC_MK_ID_SHIFT; }

static_assert(KEXEC_MK_ID(1) == 0x20, "id 1 is bit 5");
static_assert(KEXEC_MK_ID(MK_ID_MAX) == KEXEC_MK_ID_MASK, "the id field is 11 bits wide");
static_assert(KEXEC_MK_ID(MK_ID_MAX + 1) == 0, "ids above 2047 do not fit");
static_assert(KEXEC_GET_MK_ID(KEXEC_MULTIKERNEL | KEXEC_MK_ID(1234)) == 1234, "round trip");
static_assert((KEXEC_MK_ID_MASK & (KEXEC_MULTIKERNEL | KEXEC_FILE_DEBUG | KEXEC_FILE_NO_INITRAMFS |
                                   KEXEC_FILE_ON_CRASH | KEXEC_FILE_UNLOAD)) == 0,
              "the id field does not overlap the flag bits");

// reboot(2)
constexpr unsigned LINUX_REBOOT_MAGIC1 = 0xfee1dead;
constexpr unsigned LINUX_REBOOT_MAGIC2 = 672274793;  // 0x28121969
constexpr unsigned LINUX_REBOOT_CMD_MULTIKERNEL = 0x4d4b4c49;             // "MKLI": start
constexpr unsigned LINUX_REBOOT_CMD_MULTIKERNEL_HALT = 0x4d4b4c48;        // graceful halt
constexpr unsigned LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE = 0x4d4b4c46;  // forced halt
static_assert(LINUX_REBOOT_MAGIC2 == 0x28121969, "reboot magic 2");

struct multikernel_boot_args {
  int mk_id;
};
static_assert(sizeof(multikernel_boot_args) == 4, "the kernel copies 4 bytes");

// The kernel's command line limit on x86_64 and arm64, including the terminating NUL.
constexpr unsigned COMMAND_LINE_SIZE = 2048;

// AF_VSOCK and the multikernel transport option (<sys/socket.h> defines AF_VSOCK as a macro)
constexpr int AF_VSOCK_ = 40;
constexpr int SO_VM_SOCKETS_TRANSPORT = 9;
constexpr int VSOCK_TRANSPORT_MULTIKERNEL = 1;
// <linux/vm_sockets.h> spells these as macros; ours carry a trailing underscore instead.
constexpr uint32_t VMADDR_CID_ANY_ = 0xffffffffu;
constexpr uint32_t VMADDR_CID_LOCAL_ = 1;

// struct sockaddr_vm, defined here so no distro vsock header is needed.
struct sockaddr_vm_ {
  uint16_t svm_family;
  uint16_t svm_reserved1;
  uint32_t svm_port;
  uint32_t svm_cid;
  uint8_t svm_flags;
  uint8_t svm_zero[3];
};
static_assert(sizeof(sockaddr_vm_) == 16, "struct sockaddr_vm is as large as struct sockaddr");

// kernfs
constexpr uint32_t MULTIKERNEL_FS_MAGIC = 0x6d6b6673;  // "mkfs"
constexpr const char* MULTIKERNEL_FS_TYPE = "multikernel";
constexpr const char* MULTIKERNEL_MOUNT_POINT = "/sys/fs/multikernel";

}  // namespace mk::uapi
