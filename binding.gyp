{
  "targets": [
    {
      "target_name": "multikernel",
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "native/addon.cc",
            "native/args.cc",
            "native/errors.cc",
            "native/registry.cc",
            "native/blocking.cc",
            "native/kexec.cc",
            "native/reboot.cc",
            "native/mount.cc",
            "native/lock.cc",
            "native/vsock.cc",
            "native/fd_handle.cc",
            "native/notify.cc",
            "native/memfd.cc"
          ],
          "dependencies": [
            "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
          ],
          # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: an exception node-addon-api can no longer throw
          # into JavaScript (the worker is being terminated) is dropped; without it node-addon-api
          # throws again from its own catch block, and std::terminate aborts the whole process.
          "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
          "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fvisibility=hidden"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
