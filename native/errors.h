// Node-fs-shaped system errors: message `CODE: description, syscall[ 'path']`, negative `errno`,
// `code`, `syscall`, `path`. The addon only knows the errno number; the name and the description
// come from lib/errors.ts (errnoError), which lib/binding.ts hands to the addon once per
// environment (setErrnoErrorFactory): one table names errnos for the addon and the simulator.
#pragma once

#include <napi.h>

namespace mk {

// `err` is a positive errno value.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// Promise-returning functions never throw: argument errors become a rejected promise.
Napi::Promise RejectedPromise(Napi::Env env, const Napi::Error& error);

}  // namespace mk
